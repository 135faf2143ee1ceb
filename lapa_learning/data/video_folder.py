"""VideoFolder: external action-free videos (a folder of .mp4 files or of frame folders) with instructions.

    videos/
      instructions.jsonl     {"video": "clip_001.mp4", "instruction": "open the drawer"}   (or instructions.csv
      clip_001.mp4                                                                            with the same columns)
      clip_002/000001.jpg ...  (a folder of frames, like Something-Something v2)

Unreadable or truncated videos are skipped with a warning and counted in `.skipped`; they never crash a run.
Indexing only probes each video (header + first frame); `frames(i)` decodes in full, and a video that turns out to
be truncated there raises DatasetError, which the pair sampler also turns into a counted skip.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np

from lapa_learning.data.reader import EpisodeDataset, EpisodeInfo, EpisodeSource
from lapa_learning.data.video import probe_video, read_frame_folder, read_video
from lapa_learning.errors import DatasetError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
INSTRUCTION_FILES = ("instructions.jsonl", "instructions.csv")


class VideoFolder(EpisodeSource):
    has_actions = False
    action_names: tuple = ()
    state_names: tuple = ()

    def __init__(self, root: str | os.PathLike, instructions: str | os.PathLike | None = None, fps: float = 30.0,
                 min_frames: int = 2):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"video folder {self.root} does not exist or is not a directory")
        self.fps = float(fps)
        labels = _read_instructions(self._instruction_file(instructions))
        self._paths: list[Path] = []
        self.episodes: list[EpisodeInfo] = []
        self.skipped: list[tuple[str, str]] = []
        sizes, other_rates = set(), []
        candidates = sorted(p for p in self.root.iterdir() if not p.name.startswith(".")  # e.g. lapa's partial
                            and ((p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or p.is_dir()))
        for path in candidates:
            try:
                length, height, width, rate = probe_video(path)
            except DatasetError as err:
                self._skip(path, str(err))
                continue
            if length < min_frames:
                self._skip(path, f"only {length} frame(s), need at least {min_frames}")
                continue
            if rate is not None and abs(rate - self.fps) > 0.01 * self.fps:
                other_rates.append((path.name, rate))
            index = len(self._paths)
            self._paths.append(path)
            sizes.add((height, width))
            self.episodes.append(EpisodeInfo(index=index, length=length, task=None, success=None,
                                             instruction=labels.get(path.name, labels.get(path.stem, ""))))
        if not self.episodes:
            raise DatasetError(f"video folder {self.root} has no readable video ({len(self.skipped)} skipped)")
        self.image_size = max(sizes)  # sources may differ; the pair sampler resizes every frame anyway
        self.other_rates = other_rates  # (name, frame rate) of the videos not at self.fps; see warn_other_rates

    def _instruction_file(self, instructions) -> Path | None:
        if instructions is not None:
            path = Path(instructions)
            if not path.is_file():
                raise DatasetError(f"instruction file {path} does not exist")
            return path
        for name in INSTRUCTION_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warnings.warn(f"skipping {path}: {reason}", stacklevel=3)

    def path(self, index: int) -> Path:
        return self._paths[index]

    def episode_keys(self) -> dict[int, str]:
        return {ep.index: f"{self._paths[ep.index].name}, {ep.length} frames" for ep in self.episodes}

    def frames(self, index: int) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB; DatasetError if the video turns out truncated or corrupt."""
        path = self._paths[index]
        if path.is_dir():
            return read_frame_folder(path)
        frames, listed = read_video(path), self.episodes[index].length
        # A header's frame count is an estimate in some containers (webm, variable rate): a few frames either way
        # are normal; far fewer means a file cut short (a faststart mp4 keeps listing its full length).
        if len(frames) < min(listed - 1, 0.9 * listed):
            raise DatasetError(f"video file {path} decodes to {len(frames)} frames, but its header lists {listed} "
                               f"(truncated or corrupt)")
        return frames

    def skip(self, index: int, reason: str) -> None:
        """Record that video `index` failed while decoding (called by readers that catch the error)."""
        self._skip(self._paths[index], reason)

    def __repr__(self) -> str:
        return (f"VideoFolder({self.root}: {self.num_episodes} videos, {self.num_frames} frames, "
                f"{len(self.skipped)} skipped)")


def _read_instructions(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        rows = _instruction_rows(path)
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    labels = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "video" not in row or "instruction" not in row:
            got = sorted(row) if isinstance(row, dict) else repr(row)[:80]
            raise DatasetError(f"{path} row {n} needs the keys 'video' and 'instruction', got {got}")
        if not isinstance(row["instruction"], str) or not row["instruction"].strip():
            raise DatasetError(f"{path} row {n} ({row['video']}): the instruction must be a non-empty string, got "
                               f"{row['instruction']!r}")
        labels[str(row["video"])] = row["instruction"]
    return labels


def _instruction_rows(path: Path) -> list:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            return [{str(k).strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    from lapa_learning.data.format import read_jsonl

    return read_jsonl(path)


def open_video_source(root: str | os.PathLike, camera: str | None = None, **kwargs):
    """An EpisodeDataset if `root` holds meta/info.json (reading `camera`, default its recorded one), else a
    VideoFolder (one camera: `camera` must be None)."""
    root = Path(root)
    if (root / "meta" / "info.json").is_file():
        return EpisodeDataset(root, video_key=camera)
    if not root.exists():
        raise DatasetError(f"{root} does not exist (expected an episode dataset or a folder of videos)")
    if camera is not None:
        raise DatasetError(f"--camera {camera}: {root} is a folder of videos, which has one camera; --camera "
                           f"chooses among the cameras of an episode dataset (meta/info.json)")
    return VideoFolder(root, **kwargs)


def warn_other_rates(source, what: str) -> None:
    """A frame offset given in seconds becomes frames at `source.fps` for every video of a folder; say so when
    some videos run at another rate (`what`: the offset, e.g. "--offset-seconds 0.25")."""
    others = getattr(source, "other_rates", None)
    if others:
        name, rate = others[0]
        warnings.warn(f"{source.root}: {len(others)} of {source.num_episodes} videos are not at {source.fps:g} fps "
                      f"(e.g. {name}: {rate:g} fps), the rate every video is read at (--video-fps), so {what} spans "
                      f"another time in them: pass their --video-fps, or convert them to one rate", stacklevel=3)
