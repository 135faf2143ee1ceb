"""`lapa data info`: print what an episode dataset (or a video folder) holds."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.cli_args import add_camera

    parser.add_argument("path", type=Path, help="episode dataset or folder of videos")
    add_camera(parser, "the dataset")


def run(args: argparse.Namespace) -> int:
    from lapa_learning.data.video_folder import open_video_source

    source = open_video_source(args.path, camera=args.camera)
    print(source)
    cameras = source.video_keys
    if len(cameras) > 1:
        others = [k for k in cameras if k != source.video_key]
        print(f"  camera read: {source.video_key} (not read: {', '.join(others)})")
    per_task = Counter(ep.task or ep.instruction for ep in source.episodes)
    wins = Counter(ep.task or ep.instruction for ep in source.episodes if ep.success)
    for name, count in sorted(per_task.items()):
        print(f"  {name}: {count} episodes" + (f", {wins[name]} successful" if wins else ""))
    if source.has_actions and source.num_episodes:
        stats = source.action_stats()
        for i, name in enumerate(source.action_names):
            print(f"  action {name:>8}: min {stats['min'][i]:+.3f}  max {stats['max'][i]:+.3f}  "
                  f"mean {stats['mean'][i]:+.3f}  std {stats['std'][i]:.3f}")
    scales = getattr(source, "action_scales", None)
    if scales:  # recorded or imported from a robot: the velocities one action unit stands for
        print("  action scales: " + ", ".join(f"{k} {v:g}" for k, v in scales.items())
              + " (velocity per action unit: set policy_node's linear_scale/angular_scale to the same)")
    for path, reason in getattr(source, "skipped", []):
        print(f"  skipped {path}: {reason}")
    return 0
