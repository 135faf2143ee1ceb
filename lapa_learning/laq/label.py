"""`lapa laq label`: give every (x_t, x_t+H) pair of a dataset its latent action tokens.

    lapa laq label --checkpoint outputs/laq_tiny --data outputs/data/laq_pretrain

writes `<data>/latent_actions.parquet` (format: lapa_learning/data/latent_labels.py). Work is resumable: each finished
episode is saved to `<data>/.latent_actions.partial/episode_XXXXXX.npz` (atomically), a rerun with the same
checkpoint and offset skips those, and the final file is written atomically before the partial folder is removed.
Uses CUDA when available.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from lapa_learning import cli_args
from lapa_learning.data.latent_labels import save_latent_labels
from lapa_learning.errors import ConfigError, DatasetError
from lapa_learning.io import atomic_path, atomic_write_json
from lapa_learning.laq import checkpoint as ckpt

PARTIAL_DIR = ".latent_actions.partial"
LOCK_FILE = ".latent_actions.lock"  # held while a labelling runs (flock; the file itself may stay)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="LAQ run directory or step_* directory")
    parser.add_argument("--data", required=True, type=Path, help="episode dataset or folder of videos to label")
    parser.add_argument("--offset-frames", type=int,
                        help="H in frames (default: the checkpoint's H, converted with this dataset's fps when the "
                             "checkpoint was trained with an offset in seconds)")
    parser.add_argument("--video-fps", type=float, help="frame rate of a video folder (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per forward pass (default: 256)")
    cli_args.add_camera(parser)
    cli_args.add_device(parser)
    cli_args.add_threads(parser)
    cli_args.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    cli_args.set_threads(args.threads)
    result = label_dataset(args.checkpoint, args.data, offset=args.offset_frames, batch_size=args.batch_size,
                           device=args.device, progress=not args.no_progress, video_fps=args.video_fps,
                           camera=args.camera)
    print(f"wrote {result['path']}: {result['pairs']} pairs from {result['episodes']} episodes, "
          f"H={result['offset']} frames ({result['encoded']} episodes encoded, {result['reused']} reused from an "
          f"interrupted run)")
    return 0


def checkpoint_offset(config: dict, fps: float, override: int | None = None) -> int:
    """H in frames for a dataset at `fps`: the override, else the checkpoint's (seconds are converted)."""
    if override is not None:
        if override < 1:
            raise ConfigError(f"--offset-frames must be >= 1, got {override}")
        return int(override)
    train = config.get("train", {})
    if train.get("offset_seconds") is not None:
        return max(1, int(round(float(train["offset_seconds"]) * fps)))
    return int(config.get("offset") or train.get("offset_frames"))


@torch.no_grad()
def encode_episode(model, frames: np.ndarray, offset: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """frames (T, S, S, 3) uint8 at the model's size -> (t (N,), tokens (N, K)) for t = 0 .. T-1-H."""
    n = len(frames) - offset
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros((0, model.cfg.num_tokens), np.int64)
    video = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, S, S)
    tokens = []
    for start in range(0, n, batch_size):
        t = torch.arange(start, min(n, start + batch_size), device=device)
        pairs = torch.stack([video[t], video[t + offset]], dim=1)  # (b, 2, 3, S, S)
        tokens.append(model.encode_indices(pairs).cpu())
    return np.arange(n, dtype=np.int64), torch.cat(tokens).numpy().astype(np.int64)


def _fingerprint(step_dir: Path, offset: int, camera: str | None, episode_keys: dict[int, str]) -> str:
    """Identifies the checkpoint weights, offset, camera and the episodes (videos) labelled, so partial results of
    another model, camera or set of videos are never mixed in."""
    weights = step_dir / ckpt.WEIGHTS
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    videos = hashlib.sha256(json.dumps(sorted(episode_keys.items())).encode()).hexdigest()[:8]
    return f"{h.hexdigest()[:16]}-H{offset}-E{videos}" + (f"-{camera}" if camera else "")


def label_dataset(checkpoint, data, offset: int | None = None, batch_size: int = 256, device: str = "auto",
                  progress: bool = True, video_fps: float | None = None, camera: str | None = None,
                  _stop_after: int | None = None) -> dict:
    """Label every episode of `data` (see the module docstring). One labelling per dataset at a time: a second
    process would reuse the first one's partial results as its own (they share LOCK_FILE's folder)."""
    fd = _lock(Path(data)) if Path(data).is_dir() else None
    try:
        return _label(checkpoint, data, offset, batch_size, device, progress, video_fps, camera, _stop_after)
    finally:
        if fd is not None:
            os.close(fd)


def _lock(root: Path) -> int | None:
    from lapa_learning.io import lock_or_warn

    try:
        return lock_or_warn(root / LOCK_FILE,
                            ConfigError(f"--data {root}: another `lapa laq label` is labelling it now; wait for it to "
                                        f"finish (two at once would mix their partial results)"),
                            f"labelling without the lock, so do not label {root} from two processes at once")
    except OSError as err:  # the lock file cannot be created (not LockUnsupported: lock_or_warn handles that)
        raise DatasetError(f"--data {root}: cannot create {LOCK_FILE} there ({err.strerror or err}); latent labels "
                           f"are written beside the dataset, so it must be writable") from None


def _label(checkpoint, data, offset, batch_size, device, progress, video_fps, camera, _stop_after) -> dict:
    from tqdm import tqdm

    from lapa_learning.data.pairs import resize_square
    from lapa_learning.laq.trainer import open_source

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    dev = cli_args.pick_device(device)
    step_dir = ckpt.resolve_checkpoint(checkpoint)
    model, config = ckpt.load_laq(step_dir, device=dev)
    source = open_source(data, video_fps if video_fps is not None else config.get("fps"), camera)
    camera = source.video_key  # the key itself (None: a video folder)
    root = Path(getattr(source, "root", data))
    H = checkpoint_offset(config, source.fps, offset)
    if offset is None and config.get("train", {}).get("offset_seconds") is not None:
        from lapa_learning.data.video_folder import warn_other_rates

        warn_other_rates(source, f"the checkpoint's offset of {config['train']['offset_seconds']:g} s (H={H} frames)")
    S = model.cfg.image_size

    partial = root / PARTIAL_DIR
    fingerprint = _fingerprint(step_dir, H, camera, source.episode_keys())
    meta_path = partial / "meta.json"
    if partial.exists():
        try:
            same = json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:  # left over from another checkpoint, offset or camera
            shutil.rmtree(partial)
    partial.mkdir(exist_ok=True)
    atomic_write_json(meta_path, {"fingerprint": fingerprint, "checkpoint": str(step_dir), "offset": H})

    encoded = reused = 0
    bar = tqdm(source.episodes, desc="labelling", unit="episode", disable=not progress)
    for ep in bar:
        path = partial / f"episode_{ep.index:06d}.npz"
        if path.is_file():
            reused += 1
            continue
        if _stop_after is not None and encoded >= _stop_after:  # tests: an interruption
            raise KeyboardInterrupt
        try:
            frames = resize_square(source.frames(ep.index), S)
        except DatasetError as err:  # a broken video: skip it (no labels for it), as training does
            if hasattr(source, "skip"):
                source.skip(ep.index, str(err))
            else:
                warnings.warn(f"skipping episode {ep.index}: {err}", stacklevel=2)
            continue
        t, tokens = encode_episode(model, frames, H, batch_size, dev)
        with atomic_path(path) as tmp:
            np.savez(tmp, t=t, tokens=tokens)
        encoded += 1
    bar.close()

    episodes, ts, toks = [], [], []
    for ep in source.episodes:
        path = partial / f"episode_{ep.index:06d}.npz"
        if not path.is_file():
            continue  # skipped (unreadable) episode
        with np.load(path) as z:
            episodes.append(np.full(len(z["t"]), ep.index, dtype=np.int64))
            ts.append(z["t"])
            toks.append(z["tokens"])
    K = model.cfg.num_tokens
    episode = np.concatenate(episodes) if episodes else np.zeros(0, np.int64)
    t = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    tokens = np.concatenate(toks) if toks else np.zeros((0, K), np.int64)
    if len(t) == 0:
        raise DatasetError(f"{root}: no episode is longer than H={H} frames, so there is nothing to label")
    out = save_latent_labels(root, episode, t, tokens, codebook_size=model.cfg.codebook_size, offset=H,
                             source=str(step_dir.resolve()), camera=camera, episode_keys=source.episode_keys())
    shutil.rmtree(partial, ignore_errors=True)
    return {"path": out, "pairs": int(len(t)), "episodes": len(episodes), "offset": H, "encoded": encoded,
            "reused": reused, "camera": camera}
