"""`lapa laq train`: train the latent action quantizer on frame pairs (x_t, x_t+H) of action-free video.

    lapa laq train --data outputs/data/laq_pretrain --out outputs/laq_tiny --config tiny --max-minutes 15

The data is an episode dataset (a folder with meta/info.json) or a folder of videos. A run whose out dir already
holds a checkpoint resumes from it. Several GPUs work through `accelerate launch -m lapa_learning.cli laq train ...`.
This module is the verb (flags -> config -> trainer.train); the loop is trainer.py, the config configuration_laq.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lapa_learning import cli_args
from lapa_learning.errors import ConfigError
from lapa_learning.laq.configuration_laq import apply_overrides, load_train_config, parse_overrides
from lapa_learning.laq.trainer import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path,
                        help="episode dataset (has meta/info.json) or a folder of videos")
    parser.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, metrics, TensorBoard)")
    parser.add_argument("--extra-data", type=Path,
                        help="a second dataset (or video folder) whose frame pairs join the training pairs, e.g. the "
                             "small labelled robot set next to videos of another embodiment (held-out pairs: --data)")
    parser.add_argument("--extra-repeat", type=int, default=1,
                        help="each --extra-data pair is used this many times per epoch (default: 1)")
    parser.add_argument("--config", default="tiny", help="preset (tiny, base, paper) or a .yaml/.json file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set model.dim=96 --set lr=3e-4 (repeatable)")
    off = parser.add_mutually_exclusive_group()
    off.add_argument("--offset-frames", type=int, help="H in frames between x_t and x_t+H")
    off.add_argument("--offset-seconds", type=float, help="H in seconds (converted with the dataset's fps)")
    parser.add_argument("--video-fps", type=float,
                        help="frame rate of a video folder's videos, for --offset-seconds (default: 30)")
    parser.add_argument("--max-steps", type=int, help="total optimizer steps (overrides the config)")
    parser.add_argument("--batch-size", type=int, help="batch size (overrides the config)")
    parser.add_argument("--lr", type=float, help="learning rate (overrides the config)")
    parser.add_argument("--max-minutes", type=float, help="stop (and checkpoint) after this many minutes of this run")
    parser.add_argument("--resume", action="store_true",
                        help="require resuming from the checkpoint in --out (a run resumes automatically anyway)")
    parser.add_argument("--fresh", action="store_true", help="refuse to resume: fail if --out holds a checkpoint")
    cli_args.add_camera(parser, "--data and --extra-data")
    cli_args.add_device(parser, help="auto: CUDA when available (default)")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                        help="autocast on GPUs via accelerate (default: no)")
    cli_args.add_threads(parser, help="torch CPU threads (default: torch's choice)")
    cli_args.add_progress(parser, help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cli_args.set_threads(args.threads)
    overrides = parse_overrides(args.set)
    for flag, key in (("offset_frames", "offset_frames"), ("offset_seconds", "offset_seconds"),
                      ("max_steps", "max_steps"), ("batch_size", "batch_size"), ("lr", "lr")):
        if getattr(args, flag) is not None:
            overrides["train"][key] = getattr(args, flag)
    if args.extra_data is None and args.extra_repeat != 1:
        raise ConfigError("--extra-repeat: only with --extra-data")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ConfigError(f"--max-minutes must be positive, got {args.max_minutes}")
    cfg = apply_overrides(load_train_config(args.config), overrides)
    explicit = args.config != "tiny" or bool(args.set) or any(
        getattr(args, f) is not None for f in ("offset_frames", "offset_seconds", "batch_size", "lr"))
    summary = train(cfg, args.data, args.out, max_minutes=args.max_minutes, device=args.device,
                    mixed_precision=args.mixed_precision, progress=not args.no_progress,
                    resume="require" if args.resume else "never" if args.fresh else "auto",
                    config_given=explicit, video_fps=args.video_fps, extra_data=args.extra_data,
                    extra_repeat=args.extra_repeat, camera=args.camera)
    if summary.get("is_main", True):
        print(json.dumps({k: v for k, v in summary.items() if k not in ("is_main", "eval")}, indent=2))
        if summary.get("eval"):
            e = summary["eval"]
            print(f"held-out: psnr {e['psnr']:.2f} dB (copy x_t {e['psnr_copy_baseline']:.2f}), changed pixels "
                  f"{e['psnr_changed']:.2f} dB (copy {e['psnr_changed_copy_baseline']:.2f}), codes used "
                  f"{e['codes_used_fraction']:.2f}, perplexity/position "
                  f"{[round(p, 2) for p in e['perplexity_per_position']]}")
    return 0
