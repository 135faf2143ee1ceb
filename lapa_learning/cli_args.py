"""Argument helpers shared by the `lapa` verbs (each verb module keeps only its own flags and `run`).

    cli_args.add_device(parser)      --device auto|cpu|cuda      -> cli_args.pick_device(args.device)
    cli_args.add_threads(parser)     --threads N                 -> cli_args.set_threads(args.threads)
    cli_args.add_progress(parser)    --no-progress
"""

from __future__ import annotations

import argparse

from lapa_learning.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def add_device(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--device", default="auto", choices=list(DEVICES), help=help)


def add_threads(parser: argparse.ArgumentParser, help: str = "torch CPU threads") -> None:
    parser.add_argument("--threads", type=int, help=help)


def add_progress(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--no-progress", action="store_true", help=help)


def set_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads) when given (None or 0: torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def pick_device(device: str):
    """'auto' | 'cpu' | 'cuda' -> torch.device ('auto': CUDA when available). ConfigError for cuda without one."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: expected one of {list(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)
