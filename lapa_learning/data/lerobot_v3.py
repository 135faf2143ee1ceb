"""Reading LeRobotDataset v3.0 (LeRobot >= 0.4), where files hold many episodes (read-only; we write v2.1).

    root/
      meta/info.json                                     fps, features, data_path / video_path templates
      meta/episodes/chunk-000/file-000.parquet           one row per episode (there may be several files):
          episode_index, tasks (list of instructions), length,
          data/chunk_index, data/file_index              which data file holds its rows
          videos/<key>/chunk_index, videos/<key>/file_index, videos/<key>/from_timestamp, videos/<key>/to_timestamp
                                                         which video file holds its frames, and where
      meta/tasks.parquet                                 the distinct instructions
      data/chunk-000/file-000.parquet                    per-frame rows of many episodes (episode_index column)
      videos/<key>/chunk-000/file-000.mp4                many episodes' frames one after the other (often AV1)

An episode's frames are the `length` frames of its video file from `from_timestamp` on; its rows are those of its
data file with its episode_index, in frame order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lapa_learning.errors import DatasetError

EPISODES_DIR = "meta/episodes"
TASKS = "meta/tasks.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


@dataclass(frozen=True)
class EpisodeFiles:
    """Where one episode lives in a v3.0 dataset."""

    data: Path  # the parquet file holding its rows
    video: Path | None  # the mp4 holding its frames (of the camera read); None for an image camera (in `data`)
    start_s: float  # its first frame's time in that video


def read_episode_rows(root: Path) -> list[dict]:
    """Every row of meta/episodes/**/*.parquet, ordered by episode_index."""
    import pyarrow.parquet as pq

    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{root} is a LeRobot v3.0 dataset without episodes: no "
                           f"{EPISODES_DIR}/chunk-*/file-*.parquet")
    rows = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for damaged files
            raise DatasetError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
        if "episode_index" not in table.column_names:
            raise DatasetError(f"{path} has no episode_index column (not a LeRobot v3.0 episodes file)")
        rows += table.to_pylist()
    return sorted(rows, key=lambda r: int(r["episode_index"]))


def episode_files(root: Path, info: dict, row: dict, video_key: str, is_video: bool = True) -> EpisodeFiles:
    """The data file, video file and start time of the episode described by `row` (DatasetError if incomplete);
    is_video=False: the camera's images are in the data file."""
    try:
        data = info.get("data_path", DATA_PATH).format(chunk_index=int(row["data/chunk_index"]),
                                                       file_index=int(row["data/file_index"]))
        if not is_video:
            return EpisodeFiles(data=root / data, video=None, start_s=0.0)
        video = info.get("video_path", VIDEO_PATH).format(video_key=video_key,
                                                         chunk_index=int(row[f"videos/{video_key}/chunk_index"]),
                                                         file_index=int(row[f"videos/{video_key}/file_index"]))
        start = float(row[f"videos/{video_key}/from_timestamp"])
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{root}/{EPISODES_DIR}: episode {row.get('episode_index')} lacks {err} (expected "
                           f"LeRobot v3.0's data/chunk_index, data/file_index and videos/{video_key}/chunk_index, "
                           f"file_index, from_timestamp)") from None
    return EpisodeFiles(data=root / data, video=root / video, start_s=start)


def read_tasks(root: Path, rows: list[dict]) -> list[str]:
    """The distinct instructions: meta/tasks.parquet in task_index order, else those of the episodes."""
    import pyarrow.parquet as pq

    path = root / TASKS
    if path.is_file():
        try:
            table = pq.read_table(path).to_pylist()
        except Exception as err:
            raise DatasetError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
        # LeRobot saves a pandas frame indexed by the task string: the index is stored as a column
        text_key = next((k for k in ("task", "__index_level_0__") if table and k in table[0]), None)
        if text_key is not None and table and "task_index" in table[0]:
            return [str(r[text_key]) for r in sorted(table, key=lambda r: int(r["task_index"]))]
    seen: dict[str, None] = {}
    for r in rows:
        for t in r.get("tasks") or []:
            seen.setdefault(str(t), None)
    return list(seen)


def read_segment(path: Path, start_s: float, num_frames: int, fps: float) -> np.ndarray:
    """The `num_frames` frames of a video file from time `start_s` on, (T, H, W, 3) uint8 RGB.

    Seeks to the keyframe before `start_s` and decodes forward; a frame belongs to the segment when its time is
    within half a frame of start_s + k / fps."""
    import av

    if not path.is_file():
        raise DatasetError(f"video file {path} does not exist")
    half = 0.5 / fps
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            base = stream.time_base
            if start_s > half:
                container.seek(max(0, int((start_s - half) / base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * base) if frame.pts is not None else None
                if t is None or t < start_s - half:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == num_frames:
                    break
    except av.error.FFmpegError as err:
        raise DatasetError(f"video file {path} cannot be decoded ({err})") from None
    if len(frames) != num_frames:
        raise DatasetError(f"video file {path} holds {len(frames)} frames from {start_s:.3f} s on, but the episode "
                           f"has {num_frames} (truncated or corrupt)")
    return np.stack(frames)


class DataFiles:
    """The per-frame rows of a v3.0 dataset, one data file in memory at a time (episodes are read in order)."""

    def __init__(self):
        self._path: Path | None = None
        self._table = None

    def episode_table(self, path: Path, index: int, length: int):
        """The rows of episode `index` in `path`, in frame order (a pyarrow Table); DatasetError if not `length`."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if path != self._path:
            try:
                self._table = pq.read_table(path)
            except FileNotFoundError:
                raise DatasetError(f"episode {index}: data file {path} is missing") from None
            except Exception as err:
                raise DatasetError(f"episode {index}: data file {path} cannot be read ({err})") from None
            if "episode_index" not in self._table.column_names:
                raise DatasetError(f"{path} has no episode_index column (not a LeRobot v3.0 data file)")
            self._path = path
        rows = self._table.filter(pc.equal(self._table.column("episode_index"), index))
        if "frame_index" in rows.column_names:
            rows = rows.sort_by("frame_index")
        if rows.num_rows != length:
            raise DatasetError(f"episode {index}: {path} has {rows.num_rows} rows for it, meta/episodes says {length}")
        return rows


def is_v3(info: dict) -> bool:
    return str(info.get("codebase_version", "")).startswith("v3")
