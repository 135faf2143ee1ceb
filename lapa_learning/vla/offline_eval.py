"""Open-loop error of a policy on the held-out episodes of a dataset (no simulator needed).

    python -m lapa_learning.vla.offline_eval --checkpoint outputs/vla/lapa --data outputs/data/robot \
        [--val-fraction 0.2] [--seed 0] [--max-frames 2000] [--camera wrist]
    python -m lapa_learning.vla.offline_eval --checkpoint outputs/vla/lapa --data outputs/data/heldout --split all

Uses the same episode split as `lapa vla finetune` (same --val-fraction/--seed; `--split all`: every episode, for a
dataset of separate held-out episodes, e.g. finetuning's --val-data), runs `Policy.act_batch`
(greedy decoding, exactly what the robot would get) on every held-out frame and compares with the recorded
action: mean absolute error per dim in dataset units, and gripper sign agreement. The camera read is --camera, else
the one the policy was finetuned on when the dataset has it, else the dataset's recorded one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def heldout_action_error(checkpoint, data, val_fraction: float = 0.1, seed: int = 0, max_frames: int = 2000,
                         batch_size: int = 64, device: str = "cpu", split: str = "val",
                         camera: str | None = None) -> dict:
    """split="val": the held-out episodes (default); "train": the training episodes (to see over-fitting); "all":
    every episode (a dataset the policy never trained on)."""
    from lapa_learning.errors import ConfigError

    if split not in ("val", "train", "all"):
        raise ConfigError(f"--split {split!r}: expected val, train or all")
    if split != "all" and not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction}: expected in (0, 1) (or --split all for every episode)")
    if max_frames < 1:
        raise ConfigError(f"--max-frames {max_frames}: expected >= 1")
    from lapa_learning.data.pairs import split_episodes
    from lapa_learning.errors import DatasetError
    from lapa_learning.vla.checkpoint import training_cameras
    from lapa_learning.vla.data import open_source
    from lapa_learning.vla.policy import Policy

    policy = Policy.load(checkpoint, device=device)
    policy.report_latents = False
    source = open_source(data, camera)
    trained = training_cameras(policy.record)
    if camera is None and len(trained) == 1:
        (key,) = trained  # the camera the policy learnt from
        if key in source.video_keys and key != source.video_key:
            source = open_source(data, key)
    if not source.has_actions:
        raise DatasetError(f"{data}: action-free; offline evaluation needs recorded actions")
    ids = [ep.index for ep in source.episodes]
    train_ids, val_ids = split_episodes(ids, val_fraction, seed) if split != "all" else (ids, ids)
    if split != "val":
        val_ids = train_ids
    if not val_ids:
        raise DatasetError(f"{data}: no held-out episodes with val_fraction {val_fraction}")
    images, instr, truth = [], [], []
    for ep in val_ids:
        frames, acts = source.frames(ep), source.actions(ep)
        info = source.episodes[ids.index(ep)]
        images.append(frames)
        instr += [info.instruction] * len(frames)
        truth.append(acts)
    images, truth = np.concatenate(images), np.concatenate(truth)
    if len(images) > max_frames:
        keep = np.linspace(0, len(images) - 1, max_frames).round().astype(int)
        images, truth, instr = images[keep], truth[keep], [instr[i] for i in keep]
    pred = []
    for i in range(0, len(images), batch_size):
        pred += [a.values for a in policy.act_batch(images[i:i + batch_size], instr[i:i + batch_size])]
    pred = np.stack(pred)
    err = np.abs(pred - truth).mean(0)
    return {"checkpoint": str(policy.checkpoint_dir), "data": str(data),
            "camera": source.video_key, "split": split, "episodes": len(val_ids),
            "frames": int(len(images)), "action_l1": float(err.mean()),
            "action_l1_per_dim": {n: round(float(e), 4) for n, e in zip(policy.action_names, err)},
            "gripper_sign_agreement": float((np.sign(pred[:, -1]) == np.sign(truth[:, -1])).mean()),
            "zero_action_l1": float(np.abs(truth).mean()),
            "mean_action_l1": float(np.abs(truth - truth.mean(0)).mean())}


def main(argv=None) -> int:
    import torch

    from lapa_learning.cli_args import add_camera, thread_count
    from lapa_learning.errors import LapaError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-frames", type=int, default=2000)
    ap.add_argument("--split", choices=["val", "train", "all"], default="val",
                    help="val: the held-out episodes of finetuning's split (default); train: the others; all: every "
                         "episode (a separate held-out dataset)")
    ap.add_argument("--threads", type=thread_count, default=1)
    add_camera(ap)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        out = heldout_action_error(args.checkpoint, args.data, args.val_fraction, args.seed, args.max_frames,
                                   split=args.split, camera=args.camera)
    except LapaError as err:
        print(f"offline_eval: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
