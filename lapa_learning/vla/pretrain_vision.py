"""`lapa vla pretrain-vision`: the vision-pretrained control. The VLA's vision tower learns, on the same
action-free videos as LAPA, to predict the future frame x_t+H from x_t (no actions, no latent actions); the
projector and LM stay freshly initialised, as in Scratch. Finetuning from this checkpoint tells whether LAPA's gain
comes from latent *actions* or merely from a vision tower that has seen the videos.

    lapa vla pretrain-vision --data outputs/data/videos --config tiny-resnet --out RUN
    lapa vla finetune --data robot --init RUN --out FT

    x_t (B, 3, S, S) -> tower (B, N, Dv) -> grid (B, Dv, g, g) -> [upsample x2, conv 3x3, GELU] * log2(R/g)
    -> conv 1x1 -> sigmoid -> x̂_t+H at R = 16 px (B, 3, R, R); loss: MSE against x_t+H average-pooled to R px
    (full-size decoding was 3 s a step on one CPU thread). Held out: MSE against copying x_t (also at R px).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lapa_learning.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.cli_args import add_camera, add_threads

    parser.add_argument("--data", action="append", required=True, type=Path,
                        help="episode dataset or video folder (actions, if any, are not read)")
    parser.add_argument("--out", required=True, type=Path, help="run directory (checkpoint/)")
    parser.add_argument("--config", default="tiny-resnet", help="VLA model config (default: %(default)s)")
    parser.add_argument("--offset-frames", type=int, default=12, help="H: predict x_t+H from x_t (default: 12, LAQ's)")
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fraction of episodes held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_threads(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--no-progress", action="store_true")
    add_camera(parser, "every --data")


TARGET_SIZE = 16  # R: the predicted frame's size in pixels


class FrameDecoder(nn.Module):
    """(B, N, Dv) tower features on a g x g grid -> (B, 3, R, R) in [0, 1]."""

    def __init__(self, dim: int, grid: int, image_size: int = TARGET_SIZE, width: int = 64):
        super().__init__()
        ups = math.log2(image_size / grid)
        if ups != int(ups) or ups < 0:
            raise ConfigError(f"pretrain-vision: the {image_size} px target is not a power-of-two multiple of the "
                              f"tower's {grid}x{grid} feature grid")
        layers, c = [nn.Conv2d(dim, width, 1)], width
        for _ in range(int(ups)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), nn.GELU()]
        layers += [nn.Conv2d(c, 3, 1), nn.Sigmoid()]
        self.grid, self.net = grid, nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        B, N, Dv = feats.shape
        return self.net(feats.transpose(1, 2).reshape(B, Dv, self.grid, self.grid))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lapa_learning.data.pairs import FramePairDataset, split_episodes
    from lapa_learning.data.video_folder import open_video_source
    from lapa_learning.cli_args import command_line, pick_device, prepare_run_dir, require_at_least_one, set_threads
    from lapa_learning.vla import trainer as T
    from lapa_learning.vla.checkpoint import save_checkpoint
    from lapa_learning.vla.configuration_vla import load_config_arg
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.processor_vla import build_tokenizer

    require_at_least_one(args, "max_steps", "batch_size", "offset_frames")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ConfigError(f"--lr {args.lr}: expected a learning rate > 0")
    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {args.val_fraction}: expected in [0, 1)")
    if not 0 <= args.seed < 2 ** 31:
        raise ConfigError(f"--seed {args.seed}: expected an integer in [0, 2^31)")
    prepare_run_dir(args)  # refuses a run or a checkpoint in --out, then locks it (an empty one is removed again)
    set_threads(args.threads)
    T.seed_everything(args.seed)
    device = pick_device(args.device)
    cfg = load_config_arg(args.config)
    S = cfg.image_size

    train_sets, val_sets, instructions, cameras = [], [], [], []
    for root in args.data:
        source = open_video_source(root, camera=args.camera)
        cameras.append(source.video_key)  # None: a video folder
        tr, va = split_episodes([e.index for e in source.episodes], args.val_fraction, args.seed)
        instructions += [e.instruction for e in source.episodes if e.instruction]
        train_sets.append(FramePairDataset(source, offset_frames=args.offset_frames, image_size=S, augment=True,
                                           episodes=tr, progress=not args.no_progress))
        if va:
            val_sets.append(FramePairDataset(source, offset_frames=args.offset_frames, image_size=S, episodes=va))
    train = torch.utils.data.ConcatDataset(train_sets)
    val = torch.utils.data.ConcatDataset(val_sets) if val_sets else None

    tokenizer = build_tokenizer(cfg.language, T.corpus_for_tokenizer(cfg.prompt_template, instructions))
    model = VLAModel(cfg, vocab_size=len(tokenizer))
    model.config.vision.frozen = False  # trained here; finetuning trains it too, as for every demo method
    tower = model.vision.to(device).train()
    mean, std = model.pixel_mean.to(device), model.pixel_std.to(device)
    with torch.no_grad():
        N = tower(torch.zeros(1, 3, S, S, device=device)).shape[1]
    decoder = FrameDecoder(tower.hidden_size, math.isqrt(N)).to(device)
    if S % TARGET_SIZE:
        raise ConfigError(f"pretrain-vision: image size {S} is not a multiple of {TARGET_SIZE}")
    small = nn.AvgPool2d(S // TARGET_SIZE)  # (B, 3, S, S) -> (B, 3, R, R)
    params = [*tower.parameters(), *decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / args.max_steps)))
    rng = np.random.default_rng(args.seed)

    def batch(ds, idx):
        x = torch.stack([ds[int(i)]["frames"] for i in idx]).to(device)  # (B, 2, 3, S, S)
        return x[:, 0], small(x[:, 1])

    def evaluate() -> dict:
        tower.eval()
        idx = np.linspace(0, len(val) - 1, min(len(val), 512)).round().astype(int)
        mse = copy = 0.0
        with torch.no_grad():
            for i in range(0, len(idx), 128):
                x0, x1 = batch(val, idx[i:i + 128])
                mse += float(((decoder(tower((x0 - mean) / std)) - x1) ** 2).mean((1, 2, 3)).sum())
                copy += float(((small(x0) - x1) ** 2).mean((1, 2, 3)).sum())
        tower.train()
        return {"val_mse": mse / len(idx), "copy_x_t_mse": copy / len(idx), "val_pairs": len(idx)}

    started, history = time.time(), []
    bar = tqdm(range(1, args.max_steps + 1), desc="vision pretraining", unit="step", disable=args.no_progress)
    for step in bar:
        x0, x1 = batch(train, rng.integers(0, len(train), args.batch_size))
        loss = ((decoder(tower((x0 - mean) / std)) - x1) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0:
            bar.set_postfix(mse=f"{loss.item():.4f}")
    bar.close()
    history.append({"step": args.max_steps, "train_mse": float(loss.item()), **(evaluate() if val else {})})
    model.cpu()
    record = {"command": command_line(), "stage": "pretrain-vision",
              "targets": f"future frame x_t+H at {TARGET_SIZE} px",
              "offset_frames": args.offset_frames, "datasets": [str(d) for d in args.data],
              "cameras": cameras,
              "model": model.config.name, "steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
              "seed": args.seed, "train_pairs": len(train), "machine": _machine(),
              "metrics": history[-1], "history": history,
              "time_s": round(time.time() - started, 1),
              "note": "only the vision tower is pretrained; projector and LM are freshly initialised"}
    save_checkpoint(Path(args.out) / "checkpoint", model, tokenizer, None, record)
    (Path(args.out) / "train_record.json").write_text(json.dumps(record, indent=2, default=str))
    m = history[-1]
    if "val_mse" in m:
        print(f"held-out future-frame MSE {m['val_mse']:.5f} vs copying x_t {m['copy_x_t_mse']:.5f}")
    print(f"checkpoint: {Path(args.out) / 'checkpoint'}")
    return 0


def _machine() -> str:
    import os
    import platform

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()}-core CPU, {gpu}, torch threads {torch.get_num_threads()}"
