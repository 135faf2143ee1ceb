"""`lapa vpt train`: train the inverse-dynamics model on a labelled episode dataset.

    lapa vpt train --data outputs/data/robot --out outputs/vpt/idm
    lapa vpt train --data robot --val-data robot_val --out RUN     # train on every episode of robot

Samples are every frame t of every episode: input (x_t, x_min(t+H, L-1)), target a_t (L1 on actions normalised
with the training set's mean and std). Reports the held-out L1 error per dimension next to always predicting
the training mean, and the correlation of predicted and true actions.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from lapa_learning.errors import ConfigError, DatasetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.cli_args import add_camera, add_threads

    parser.add_argument("--data", action="append", required=True, type=Path,
                        help="labelled episode dataset (repeat to mix several with the same action names)")
    parser.add_argument("--out", required=True, type=Path, help="run directory (checkpoint/)")
    parser.add_argument("--val-data", action="append", type=Path,
                        help="held-out episodes from separate datasets; --data is then trained on whole "
                             "(--val-fraction is ignored)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fraction of --data episodes held out")
    parser.add_argument("--offset", type=int, default=4, help="H: the model sees x_t and x_t+H (default: 4)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--no-augment", action="store_true", help="no random crop / brightness jitter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_threads(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--no-progress", action="store_true")
    add_camera(parser, "every --data (and --val-data)")


class PairSet:
    """Every frame t of the given episodes: frames kept as uint8, pairs (t, min(t+H, L-1)), targets a_t."""

    def __init__(self, sources, image_size: int, offset: int, with_actions: bool = True, progress: bool = False):
        from tqdm import tqdm

        from lapa_learning.data.pairs import resize_square

        self.frames, self.episodes, self.slot, self.t, self.t2, actions = [], [], [], [], [], []
        jobs = [(root, source, ep) for root, source, eps in sources for ep in eps]
        for root, source, ep in tqdm(jobs, desc="loading", unit="episode", disable=not progress, leave=False):
            try:
                frames = resize_square(source.frames(ep), image_size)
            except DatasetError as err:
                raise DatasetError(f"{root}: episode {ep}: {err}") from None
            L = len(frames)
            self.slot += [len(self.frames)] * L
            self.t += list(range(L))
            self.t2 += [min(t + offset, L - 1) for t in range(L)]
            self.frames.append(frames)
            self.episodes.append((root, ep))
            if with_actions:
                actions.append(source.actions(ep)[:L])
        self.slot, self.t, self.t2 = (np.asarray(x, np.int64) for x in (self.slot, self.t, self.t2))
        self.actions = np.concatenate(actions).astype(np.float32) if actions else None  # (N, A)

    def __len__(self) -> int:
        return len(self.t)

    def pairs(self, idx: np.ndarray) -> torch.Tensor:
        """-> (B, 2, 3, S, S) float in [0, 1]."""
        x = np.stack([np.stack([self.frames[s][a], self.frames[s][b]])
                      for s, a, b in zip(self.slot[idx], self.t[idx], self.t2[idx])])  # (B, 2, S, S, 3)
        return torch.from_numpy(x).permute(0, 1, 4, 2, 3).float().div_(255.0)


def _sources(roots, val_fraction: float, seed: int, camera: str | None = None):
    """-> (train [(root, source, episodes)], val [...], action names)."""
    from lapa_learning.data.pairs import split_episodes
    from lapa_learning.data.video_folder import open_video_source

    train, val, names = [], [], None
    for root in roots:
        source = open_video_source(root, camera=camera)
        if not source.has_actions:
            raise DatasetError(f"{root}: action-free dataset; the inverse-dynamics model trains on recorded "
                               f"actions (pass the small labelled set as --data, and label videos with "
                               f"`lapa vpt label`)")
        if names is None:
            names = tuple(source.action_names)
        elif tuple(source.action_names) != names:
            raise DatasetError(f"{root}: actions {list(source.action_names)} differ from the first dataset's "
                               f"{list(names)}")
        tr, va = split_episodes([ep.index for ep in source.episodes], val_fraction, seed)
        if not tr:
            raise DatasetError(f"{root}: no episodes")
        train.append((root, source, tr))
        if va:
            val.append((root, source, va))
    return train, val, names


def _one_frame_rate(data_src, val_data_src) -> float:
    """The frame rate every labelled set shares: the IDM's offset H is in frames, so a set at another rate would
    pair other time steps. DatasetError naming the first set that differs (checked before any frame is loaded)."""
    ref_root, ref, _ = data_src[0]
    fps = float(ref.fps)
    for flag, (root, source, _) in [*(("--data", s) for s in data_src), *(("--val-data", s) for s in val_data_src)]:
        if abs(float(source.fps) - fps) > 0.01 * fps:
            raise DatasetError(f"{flag} {root}: {source.fps:g} fps, but --data {ref_root} is at {fps:g} fps; the "
                               f"IDM's offset H is in frames, so every labelled set (--data, --val-data) must be at "
                               f"one frame rate")
    return fps


def evaluate(model, data: PairSet, device, batch_size: int = 256) -> dict:
    """Held-out L1 per dimension (dataset units), the mean-action baseline's, and per-dim Pearson r."""
    preds = []
    for i in range(0, len(data), batch_size):
        idx = np.arange(i, min(len(data), i + batch_size))
        preds.append(model.predict(data.pairs(idx).to(device)).cpu().numpy())
    pred, true = np.concatenate(preds), data.actions
    mean = model.mean.cpu().numpy()
    corr = [float(np.corrcoef(pred[:, d], true[:, d])[0, 1]) if min(true[:, d].std(), pred[:, d].std()) > 1e-6
            else float("nan") for d in range(true.shape[1])]  # (float32 rounding leaves a constant dim ~1e-8 of std)
    l1 = np.abs(pred - true).mean(0)
    base = np.abs(mean[None] - true).mean(0)
    return {"l1": float(l1.mean()), "l1_per_dim": [round(float(x), 4) for x in l1],
            "mean_baseline_l1": float(base.mean()), "mean_baseline_l1_per_dim": [round(float(x), 4) for x in base],
            "pearson_per_dim": [round(x, 4) for x in corr], "samples": len(data)}


def run(args: argparse.Namespace) -> int:
    import random

    from tqdm import tqdm

    from lapa_learning.data.pairs import augment_clip
    from lapa_learning.cli_args import (command_line, lock_run_dir, pick_device, refuse_val_data_in_data,
                                        require_at_least_one, set_threads)
    from lapa_learning.vpt.checkpoint import save_idm
    from lapa_learning.vpt.model import IDMConfig, InverseDynamicsModel

    require_at_least_one(args, "max_steps", "batch_size", "eval_every")
    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {args.val_fraction}: expected in [0, 1)")
    if not 16 <= args.image_size <= 1024:
        raise ConfigError(f"--image-size {args.image_size}: expected a square size in [16, 1024] pixels")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ConfigError(f"--lr {args.lr}: expected a learning rate > 0")
    if args.offset < 1:
        raise ConfigError(f"--offset {args.offset}: expected >= 1 frame")
    if not 0 <= args.seed < 2 ** 31:
        raise ConfigError(f"--seed {args.seed}: expected an integer in [0, 2^31)")
    refuse_val_data_in_data(args.data, args.val_data)
    if (Path(args.out) / "checkpoint").exists() and not args.overwrite:
        raise ConfigError(f"--out {args.out} already holds an IDM; pass --overwrite to replace it")
    lock_run_dir(args.out)  # one training process per run directory
    set_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    progress = not args.no_progress

    if args.val_data:
        args.val_fraction = 0.0  # the labelled set is trained on whole; validation comes from --val-data
    train_src, val_src, names = _sources(args.data, args.val_fraction, args.seed, args.camera)
    extra = []
    if args.val_data:
        extra, _, extra_names = _sources(args.val_data, 0.0, args.seed, args.camera)
        if extra_names != names:
            raise DatasetError(f"--val-data actions {list(extra_names)} differ from --data's {list(names)}")
        val_src += extra
    fps = _one_frame_rate(train_src, extra)
    train = PairSet(train_src, args.image_size, args.offset, progress=progress)
    val = PairSet(val_src, args.image_size, args.offset, progress=progress) if val_src else None
    cfg = IDMConfig(image_size=args.image_size, offset=args.offset, fps=fps, action_names=names,
                    action_mean=train.actions.mean(0), action_std=np.maximum(train.actions.std(0), 1e-3))
    model = InverseDynamicsModel(cfg).to(device)
    print(f"IDM: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; {len(train)} training / "
          f"{len(val) if val else 0} held-out frames from {len(train.episodes)} / "
          f"{len(val.episodes) if val else 0} episodes; pairs (x_t, x_t+{args.offset})")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = min(100, args.max_steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / args.max_steps)))))
    targets = model.normalize(torch.from_numpy(train.actions).to(device))  # (N, A)
    rng = np.random.default_rng(args.seed)
    history, started = [], time.time()
    bar = tqdm(range(1, args.max_steps + 1), desc="vpt idm", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        model.train()
        idx = rng.integers(0, len(train), args.batch_size)
        x = train.pairs(idx)
        if not args.no_augment:
            x = torch.stack([augment_clip(clip) for clip in x])
        loss = torch.nn.functional.l1_loss(model(x.to(device)), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if val is not None and (step % args.eval_every == 0 or step == args.max_steps):
            model.eval()
            history.append({"step": step, "train_loss": float(loss.item()), **evaluate(model, val, device)})
            bar.set_postfix(loss=f"{loss.item():.3f}", val_l1=f"{history[-1]['l1']:.3f}")
    bar.close()
    model.eval()
    final = history[-1] if history else {"step": args.max_steps, "train_loss": float(loss.item())}
    record = {"command": command_line(), "stage": "vpt-idm", "datasets": [str(d) for d in args.data],
              "cameras": [s.video_key for _, s, _ in train_src],
              "val_datasets": [str(d) for d in args.val_data or []], "val_fraction": args.val_fraction,
              "seed": args.seed, "steps": args.max_steps, "machine": _machine(),
              "batch_size": args.batch_size, "lr": args.lr,
              "augment": not args.no_augment, "train_frames": len(train), "val_frames": len(val) if val else 0,
              "train_episodes": [f"{r}:{e}" for r, e in train.episodes],
              "metrics": final, "history": history, "time_s": round(time.time() - started, 1),
              "train_error": evaluate(model, train, device)}
    ckpt = save_idm(args.out, model.cpu(), record)
    (Path(args.out) / "train_record.json").write_text(json.dumps(record, indent=2, default=str))
    if val is not None:
        print(f"held-out L1 {final['l1']:.4f} (per dim {final['l1_per_dim']}) vs predicting the mean "
              f"{final['mean_baseline_l1']:.4f}; Pearson r per dim {final['pearson_per_dim']}")
    else:
        print(f"no held-out episodes; training-set L1 {record['train_error']['l1']:.4f} vs predicting the mean "
              f"{record['train_error']['mean_baseline_l1']:.4f}")
    print(f"checkpoint: {ckpt}")
    return 0


def _machine() -> str:
    import os
    import platform

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()}-core CPU, {gpu}, torch threads {torch.get_num_threads()}"
