"""`lapa vpt label`: pseudo-label every frame of an action-free dataset with the inverse-dynamics model.

    lapa vpt label --checkpoint outputs/vpt/idm --data outputs/data/videos   # -> videos/pseudo_actions.parquet

Frame t gets a_t predicted from (x_t, x_min(t+H, L-1)), H being the IDM's offset (format: pseudo_actions.py).
Videos at another frame rate than the IDM's training data get the H that spans the same time (an IDM trained at
10 fps with H=4 sees x_t and x_t+12 in 30 fps videos); `--offset` sets it by hand. An episode dataset says its
frame rate; a folder of videos is taken to be at the IDM's rate unless `--video-fps` says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lapa_learning import cli_args
from lapa_learning.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.cli_args import add_camera

    parser.add_argument("--checkpoint", required=True, type=Path, help="IDM run directory (from `lapa vpt train`)")
    parser.add_argument("--data", required=True, type=Path, help="episode dataset or folder of videos to label")
    parser.add_argument("--offset", type=int, default=None,
                        help="H in frames of these videos (default: the IDM's H, scaled by the videos' frame rate "
                             "over the IDM's training data's)")
    parser.add_argument("--video-fps", type=float, default=None,
                        help="frame rate of a folder of videos (default: the IDM's training data's)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per forward pass (default: 256)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    cli_args.add_threads(parser)
    parser.add_argument("--no-progress", action="store_true")
    add_camera(parser)


def label_dataset(checkpoint, data, batch_size: int = 256, device: str = "auto", progress: bool = True,
                  camera: str | None = None, offset: int | None = None, video_fps: float | None = None) -> dict:
    from tqdm import tqdm

    from lapa_learning.cli_args import pick_device
    from lapa_learning.data.video_folder import warn_other_rates
    from lapa_learning.laq.trainer import open_source
    from lapa_learning.vpt.checkpoint import load_idm
    from lapa_learning.vpt.pseudo_actions import save_pseudo_actions
    from lapa_learning.vpt.train import PairSet

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if offset is not None and offset < 1:
        raise ConfigError(f"--offset {offset}: expected >= 1 frame")
    dev = pick_device(device)
    model, ckpt = load_idm(checkpoint, device=dev)
    source = open_source(data, video_fps if video_fps is not None else model.cfg.fps, camera)
    root = Path(getattr(source, "root", data))
    H = offset if offset is not None else model.cfg.offset_at(float(source.fps))
    if offset is None and model.cfg.fps is not None:
        span, trained = H / float(source.fps), model.cfg.offset / model.cfg.fps  # seconds between x_t and x_t+H
        if H != model.cfg.offset or abs(span / trained - 1) > 0.25:
            print(f"{data}: {source.fps:g} fps, the IDM's training data {model.cfg.fps:g} fps: pairs (x_t, x_t+{H}) "
                  f"span {span:.3g} s, its (x_t, x_t+{model.cfg.offset}) {trained:.3g} s"
                  + ("" if abs(span / trained - 1) <= 0.25 else
                     " (no whole number of frames spans the same time: pass --offset, or use videos at a higher "
                     "frame rate)"))
        warn_other_rates(source, f"the IDM's offset (H={H} frames at {source.fps:g} fps)")
    actions = {}
    for ep in tqdm(source.episodes, desc="pseudo-labelling", unit="episode", disable=not progress):
        pairs = PairSet([(root, source, [ep.index])], model.cfg.image_size, H, with_actions=False)
        out = [model.predict(pairs.pairs(np.arange(i, min(len(pairs), i + batch_size))).to(dev)).cpu().numpy()
               for i in range(0, len(pairs), batch_size)]
        actions[ep.index] = np.concatenate(out)  # (L, A)
    path = save_pseudo_actions(root, actions, model.cfg.action_names, H, str(Path(ckpt).resolve()),
                               camera=source.video_key, episode_keys=source.episode_keys())
    return {"path": path, "episodes": len(actions), "frames": int(sum(len(a) for a in actions.values())), "offset": H}


def run(args: argparse.Namespace) -> int:
    cli_args.set_threads(args.threads)
    r = label_dataset(args.checkpoint, args.data, args.batch_size, args.device, not args.no_progress, args.camera,
                      args.offset, args.video_fps)
    print(f"wrote {r['path']}: pseudo-actions for {r['frames']} frames of {r['episodes']} episodes")
    return 0
