"""Frame pairs (x_t, x_t+H) for stage 1 (latent action quantization), from any video source.

A source is an EpisodeDataset or a VideoFolder: anything with `.episodes`, `.fps` and `.frames(index)`.
Frames are decoded once, resized (shorter side to `image_size`, then centre crop) and kept as uint8.
"""

from __future__ import annotations

import random
import warnings
from typing import Sequence

import numpy as np
import torch

from lapa_learning.errors import DatasetError


def resize_square(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8: shorter side to `size`, centre crop."""
    import cv2

    t, h, w, _ = frames.shape
    if (h, w) == (size, size):
        return frames
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((t, size, size, 3), dtype=np.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (nw, nh), interpolation=interp)[top:top + size, left:left + size]
    return out


def frame_offset(fps: float, offset_frames: int | None, offset_seconds: float | None) -> int:
    """H in frames from exactly one of `offset_frames` or `offset_seconds`."""
    if (offset_frames is None) == (offset_seconds is None):
        raise ValueError("give exactly one of offset_frames or offset_seconds")
    offset = int(offset_frames) if offset_frames is not None else int(round(offset_seconds * fps))
    if offset < 1:
        raise ValueError(f"the frame offset must be at least 1 frame, got {offset} "
                         f"(offset_frames={offset_frames}, offset_seconds={offset_seconds}, fps={fps})")
    return offset


def split_episodes(episodes: int | Sequence[int], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic episode-level split: no pair of a held-out episode is ever trained on."""
    ids = list(range(episodes)) if isinstance(episodes, int) else list(episodes)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


class FramePairDataset(torch.utils.data.Dataset):
    """Every (episode, t) with t + H inside the episode; item["frames"] is (2, 3, S, S) float32 in [0, 1]."""

    def __init__(self, source, offset_frames: int | None = None, offset_seconds: float | None = None,
                 image_size: int = 64, augment: bool = False, episodes: Sequence[int] | None = None,
                 progress: bool = False):
        self.source = source
        self.offset = frame_offset(source.fps, offset_frames, offset_seconds)
        self.image_size = int(image_size)
        self.augment = augment
        wanted = [ep.index for ep in source.episodes] if episodes is None else list(episodes)
        self.frames: dict[int, np.ndarray] = {}
        self.skipped: list[tuple[int, str]] = []
        iterator = wanted
        if progress:
            from tqdm import tqdm

            iterator = tqdm(wanted, desc="decoding videos", unit="video")
        for index in iterator:
            try:
                self.frames[index] = resize_square(source.frames(index), self.image_size)
            except DatasetError as err:
                self.skipped.append((index, str(err)))
                if hasattr(source, "skip"):
                    source.skip(index, str(err))
                else:
                    warnings.warn(f"skipping episode {index}: {err}", stacklevel=2)
        self.pairs = [(index, t) for index, frames in self.frames.items()
                      for t in range(len(frames) - self.offset)]
        if not self.pairs:
            raise DatasetError(f"no frame pairs with offset H={self.offset} frames in {getattr(source, 'root', source)}"
                               f" ({len(self.frames)} usable episodes; are they shorter than H?)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        index, t = self.pairs[i]
        clip = self.frames[index][[t, t + self.offset]]  # (2, S, S, 3) uint8
        x = torch.from_numpy(clip).permute(0, 3, 1, 2).float().div_(255.0)  # (2, 3, S, S)
        if self.augment:
            x = augment_clip(x)
        return {"frames": x, "episode": index, "t": t}


def augment_clip(x: torch.Tensor, min_scale: float = 0.85, jitter: float = 0.1) -> torch.Tensor:
    """The same random crop-and-resize and colour jitter for every frame of a clip x (T, 3, S, S) in [0, 1]."""
    _, _, s, _ = x.shape
    crop = max(2, int(round(s * random.uniform(min_scale, 1.0))))
    top, left = random.randint(0, s - crop), random.randint(0, s - crop)
    x = x[:, :, top:top + crop, left:left + crop]
    x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    brightness = 1.0 + random.uniform(-jitter, jitter)
    contrast = 1.0 + random.uniform(-jitter, jitter)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean * brightness
    return x.clamp_(0.0, 1.0)
