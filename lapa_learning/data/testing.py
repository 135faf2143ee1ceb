"""A LeRobotDataset v3.0 built by hand, for tests and for checking the documented commands (tests/): many episodes
per data and video file, files in two chunks, two video cameras and one image camera (PNG in the data files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lapa_learning.data.video import write_video

FPS, SIZE = 10, 32
KEYS = ("observation.images.top", "observation.images.wrist")
IMAGE_KEY = "observation.images.png"  # a third camera, stored as PNG bytes in the data files


def png_cells(frames: np.ndarray) -> list[dict]:
    """Frames as LeRobot (HF datasets) stores an image feature: {"bytes": PNG, "path": name}."""
    import cv2

    return [{"bytes": cv2.imencode(".png", f[..., ::-1])[1].tobytes(), "path": f"frame_{t:06d}.png"}
            for t, f in enumerate(frames)]


INSTRUCTIONS = ("push the block", "open the drawer")


def episode_frames(e: int, length: int, camera: int) -> np.ndarray:
    """A square that moves right one pixel per frame, its row and colour set by the episode and the camera."""
    frames = np.full((length, SIZE, SIZE, 3), 20, np.uint8)
    for t in range(length):
        y, x = 4 + 3 * e, min(2 + t, SIZE - 7)
        frames[t, y:y + 6, x:x + 6] = (200, 60 + 40 * (e % 5), 40 + 150 * camera)
    return frames


def write_lerobot_v3(root, lengths=(7, 9, 6, 8), per_file: int = 2) -> list[dict]:
    """Write the dataset at `root`: `per_file` episodes to a data file and to a video file (one file per chunk), two
    video cameras (`top`, `wrist`) and an image camera (`png`, the `top` frames inverted); returns the episodes'
    frames (per video camera), actions, states and instructions for comparison."""
    root = Path(root)
    rng = np.random.default_rng(0)
    episodes, rows, start = [], [], 0
    for e, n in enumerate(lengths):
        actions = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        episodes.append({"frames": [episode_frames(e, n, c) for c in range(2)], "actions": actions,
                         "states": np.cumsum(actions, 0)[:, :3].astype(np.float32),
                         "instruction": INSTRUCTIONS[e % 2]})
    for f in range(0, len(lengths), per_file):
        chunk, file = f // per_file, 0  # one file per chunk, to use chunk indices too
        group = range(f, min(f + per_file, len(lengths)))
        data = {"action": [], "observation.state": [], "timestamp": [], "frame_index": [], "episode_index": [],
                "index": [], "task_index": [], IMAGE_KEY: []}
        offset = 0.0
        for e in reversed(group):  # rows need not be in episode order within a file
            ep = episodes[e]
            n = len(ep["actions"])
            data["action"] += ep["actions"].tolist()
            data["observation.state"] += ep["states"].tolist()
            data["timestamp"] += (np.arange(n) / FPS).tolist()
            data["frame_index"] += list(range(n))
            data["episode_index"] += [e] * n
            data["index"] += list(range(start, start + n))
            data["task_index"] += [e % 2] * n
            data[IMAGE_KEY] += png_cells(255 - ep["frames"][0])
            start += n
        path = root / f"data/chunk-{chunk:03d}/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(data), path)
        for c, key in enumerate(KEYS):
            video = root / f"videos/{key}/chunk-{chunk:03d}/file-{file:03d}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            write_video(video, np.concatenate([episodes[e]["frames"][c] for e in group]), fps=FPS)
        for e in group:
            n = len(episodes[e]["actions"])
            row = {"episode_index": e, "tasks": [episodes[e]["instruction"]], "length": n,
                   "data/chunk_index": chunk, "data/file_index": file,
                   "dataset_from_index": 0, "dataset_to_index": n}
            for key in KEYS:
                row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                            f"videos/{key}/from_timestamp": offset, f"videos/{key}/to_timestamp": offset + n / FPS})
            offset += n / FPS
            rows.append(row)
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows[::-1]), path)
    pq.write_table(pa.table({"task_index": [0, 1], "__index_level_0__": list(INSTRUCTIONS)}),
                   root / "meta/tasks.parquet")
    video = {"dtype": "video", "shape": [3, SIZE, SIZE], "names": ["channels", "height", "width"]}
    info = {"codebase_version": "v3.0", "fps": FPS, "robot_type": "so100", "total_episodes": len(lengths),
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {KEYS[0]: video, KEYS[1]: dict(video),
                         IMAGE_KEY: {"dtype": "image", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channel"]},
                         "action": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
                         "observation.state": {"dtype": "float32", "shape": [3], "names": {"motors": ["a", "b", "c"]}},
                         "timestamp": {"dtype": "float32", "shape": [1], "names": None}}}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/stats.json").write_text('{"action": {"mean": [0, 0, 0, 0]}}')  # LeRobot's: must stay as it is
    return episodes
