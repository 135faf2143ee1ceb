"""The episode dataset layout: LeRobotDataset v2.1 (see docs/datasets.md for the differences).

    root/
      meta/info.json               dataset-wide facts: fps, features, counts, path templates
      meta/episodes.jsonl          one line per episode: index, tasks (instructions), length (+ task, success)
      meta/tasks.jsonl             one line per distinct instruction: task_index, task
      meta/episodes_stats.jsonl    per-episode min/max/mean/std/count of every feature, in LeRobot's shapes
      meta/stats.json              dataset-wide per-dimension statistics and quantiles (written on close)
      data/chunk-000/episode_000000.parquet         per-frame rows
      videos/chunk-000/<video_key>/episode_000000.mp4

meta/episodes.jsonl is the commit record: an episode exists when its line is there, and its files were renamed into
place before that line was written. Files of episodes that are not listed are leftovers of a crash.
"""

from __future__ import annotations

import json
from pathlib import Path

from lapa_learning.io import atomic_write_text

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
INFO = "meta/info.json"
EPISODES = "meta/episodes.jsonl"
TASKS = "meta/tasks.jsonl"
EPISODES_STATS = "meta/episodes_stats.jsonl"
STATS = "meta/stats.json"

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def data_path(root: Path, episode_index: int) -> Path:
    return root / DATA_PATH.format(episode_chunk=episode_index // CHUNKS_SIZE, episode_index=episode_index)


def video_path(root: Path, video_key: str, episode_index: int) -> Path:
    return root / VIDEO_PATH.format(episode_chunk=episode_index // CHUNKS_SIZE, video_key=video_key,
                                    episode_index=episode_index)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path, fields: dict[str, type] | None = None) -> list[dict]:
    """The rows of a JSON-lines file; DatasetError naming the line if one is not JSON, or (given `fields`) not an
    object with those keys of those types."""
    from lapa_learning.errors import DatasetError

    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark from an editor is not JSON
            lines = f.readlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text (damaged, or saved in another encoding)") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path} line {n} is not valid JSON ({err.msg})") from None
            if fields and not (isinstance(row, dict) and all(isinstance(row.get(k), t) for k, t in fields.items())):
                expected = ", ".join(f"{k!r} ({t.__name__})" for k, t in fields.items())
                raise DatasetError(f"{path} line {n}: expected a JSON object with {expected}, got {line.strip()[:80]}")
            rows.append(row)
    return rows
