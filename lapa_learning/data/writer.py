"""EpisodeWriter: append episodes to an episode dataset, each one atomically.

    with EpisodeWriter("outputs/data/push", fps=80, image_size=(64, 64)) as writer:
        writer.add_episode(frames, "push the puck to the goal", actions=actions, states=states, success=True)

Used by `lapa data generate`, the ROS recorder node and `lapa data import-bag`.
An episode becomes visible only when its line lands in meta/episodes.jsonl, after its video and parquet files
were renamed into place, so a crash (SIGKILL, power loss, full disk) never leaves a half episode visible.
mode="overwrite" replaces the dataset only at close(): after an error or a kill before it, the old one comes back.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lapa_learning.data import format as fmt
from lapa_learning.data.stats import write_dataset_stats
from lapa_learning.data.video import CODEC, PIX_FMT, write_video
from lapa_learning.errors import DatasetError
from lapa_learning.io import (atomic_path, atomic_write_json, discard_set_aside, lock_or_warn, put_back,
                              set_aside)

MODES = ("create", "append", "overwrite")
# What --overwrite removes from a dataset directory: the dataset and what lapa computed from it (latent labels,
# pseudo-actions, an interrupted labelling's partial results); anything else in the folder is the user's.
DATASET_ENTRIES = ("data", "videos", "images", "latent_actions.parquet", "pseudo_actions.parquet",
                   ".latent_actions.partial", ".latent_actions.lock")  # and everything in meta/ but the writers' lock
# The per-frame columns every episode has besides its camera, actions and states
BOOKKEEPING = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
               "task_index": "int64", "next.done": "bool"}
LOCK_FILE = ".writer.lock"  # meta/.writer.lock: held (flock) by the one writer of the dataset
# mode="overwrite" sets the old dataset aside in <root>/.replaced (moved there through .replaced.partial) and deletes
# it at close() (through .replaced.discard); release() after an error, or the next writer after a kill, puts it back.
REPLACED = ".replaced"


class EpisodeWriter:
    def __init__(self, root: str | os.PathLike, fps: float, image_size: tuple[int, int],
                 video_key: str = "observation.images.front", action_names: Sequence[str] | None = None,
                 state_names: Sequence[str] | None = None, with_actions: bool = True,
                 robot_type: str = "unknown", mode: str = "create",
                 action_scales: Mapping[str, float] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.root = Path(root)
        self.fps = float(fps)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        h, w = self.image_size
        if h < 2 or w < 2 or h % 2 or w % 2:  # checked before anything is written
            raise DatasetError(f"image size {h}x{w} (HxW): the videos are H.264 (yuv420p), which needs even sizes "
                               f">= 2; store resized frames (e.g. `lapa data import-bag --image-size {max(2, h - h % 2)},"
                               f"{max(2, w - w % 2)}`, recorder_node's image_size)")
        self.video_key = video_key
        self.with_actions = bool(with_actions)
        self.action_names = tuple(action_names or ()) if with_actions else ()
        self.state_names = tuple(state_names or ()) if with_actions else ()
        if self.with_actions and not self.action_names:
            raise ValueError("action_names are required for a dataset with actions")
        self.robot_type = robot_type
        # The velocity per action unit that made the actions (TwistActionMap.scales(), for teleop and bags): appending
        # with other scales would mix two meanings of one action; a policy node must command with the same scales.
        self.action_scales = dict(action_scales) if action_scales is not None else None
        self._episodes: list[dict] = []
        self._next_index = 0  # after the highest listed episode: a set with a gap (an episode taken out) keeps it
        self._episode_stats: list[dict] = []
        self._tasks: dict[str, int] = {}
        self._num_frames = 0
        self._next_frame = 0  # the "index" column's next value (> _num_frames after a gap)

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if _has_content(self.root) and not _is_dataset(self.root):  # someone else's folder
                raise DatasetError(
                    f"{self.root} already exists and is not empty; refusing to overwrite it (choose another --out)"
                    if mode == "create" else
                    f"{self.root} is not an episode dataset (no {fmt.INFO}); refusing to delete it"
                    if mode == "overwrite" else
                    f"cannot append to {self.root}: no {fmt.INFO} (not an episode dataset)")
            (self.root / "meta").mkdir(exist_ok=True)
        except OSError as err:
            raise DatasetError(f"{self.root}: cannot be a dataset directory ({err.strerror or err}); expected a "
                               f"writable directory path") from None
        self._lock_fd = None
        self._replacing = False
        self._lock()  # one writer per dataset at a time: two would number their episodes alike
        try:  # decided under the lock: another writer may have finished just now
            _undo_unfinished_overwrite(self.root)
            exists = _has_content(self.root)
            is_dataset = (self.root / fmt.INFO).is_file()
            if exists and mode == "create" and is_dataset and _holds_nothing(self.root):
                mode = "overwrite"  # an empty dataset that a failed run left behind holds nothing to lose
            if exists and mode == "create":
                raise DatasetError(f"{self.root} already exists and is not empty; refusing to overwrite it "
                                   f"(choose another --out, or pass --overwrite to replace it or --append to add to "
                                   f"it)")
            if exists and mode == "overwrite":
                set_aside(self.root, _dataset_entries(self.root), REPLACED)  # deleted at close(), back after an error
                self._replacing = True
            if exists and mode == "append":
                self._load_existing()
            if not self._episodes:
                self._commit()  # an empty but valid dataset from the start
        except BaseException:
            self.release()
            raise

    # ------------------------------------------------------------------ public API
    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def add_episode(self, frames: np.ndarray, instruction: str, actions: np.ndarray | None = None,
                    states: np.ndarray | None = None, success: bool | None = None, task: str | None = None,
                    timestamps: np.ndarray | None = None) -> int:
        """Write one episode; returns its index. Nothing of it is visible until it is complete.

        `timestamps` (the measured sample times, optional) are only checked: frame t is stored at t / fps, the
        time of its image in the constant-rate video, as LeRobot v2.1 requires (its loader refuses other times).
        """
        frames, actions, states = self._check_episode(frames, instruction, actions, states, timestamps)
        index = self._next_index
        length = len(frames)
        task_index = self._tasks.setdefault(instruction, len(self._tasks))
        video = fmt.video_path(self.root, self.video_key, index)
        data = fmt.data_path(self.root, index)
        try:
            rows = self._rows(index, task_index, actions, states, length)
            with atomic_path(video) as tmp_video, atomic_path(data) as tmp_data:  # both in place, or neither tmp
                write_video(tmp_video, frames, fps=self.fps)
                _write_parquet(tmp_data, rows)
            self._episodes.append({"episode_index": index, "tasks": [instruction], "length": length,
                                   "task_name": task, "success": None if success is None else bool(success)})
            self._episode_stats.append({"episode_index": index, "stats": episode_stats(rows, frames, self.video_key)})
            self._num_frames += length
            self._next_index += 1
            self._next_frame += length
            self._commit()
        except OSError as err:
            # Roll back this episode only; every earlier one is already committed and untouched.
            if self._episodes and self._episodes[-1]["episode_index"] == index:
                self._episodes.pop()
                self._episode_stats.pop()
                self._num_frames -= length
                self._next_index = index
                self._next_frame -= length
            for path in (video, data):  # the temporaries are already gone
                path.unlink(missing_ok=True)
            reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            raise DatasetError(f"could not write episode {index} to {self.root}: {reason}. The "
                               f"{len(self._episodes)} earlier episode(s) are intact; free space (or fix the error) "
                               f"and record again") from err
        return index

    def close(self) -> None:
        """Write dataset-wide statistics (meta/stats.json), make an overwrite final (delete the old dataset) and
        let other writers in. Episodes are already safe without this (a killed writer's lock goes with its
        process), except after mode="overwrite": until close() the old dataset comes back on any failure."""
        try:
            if self._replacing:
                discard_set_aside(self.root, REPLACED)
                self._replacing = False
            if self.with_actions and self._episodes:
                from lapa_learning.data.reader import EpisodeDataset

                write_dataset_stats(EpisodeDataset(self.root))
        finally:
            self._unlock()

    def release(self) -> None:
        """After an error: let other writers in at once, without writing statistics (the episodes written so far
        are safe; the next writer or reader computes the statistics). After mode="overwrite" the old dataset is
        put back instead: a failed replacement replaces nothing."""
        try:
            if self._replacing:
                self._replacing = False
                _undo_unfinished_overwrite(self.root)
        finally:
            self._unlock()

    def __del__(self):
        self._unlock()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.release()

    # ------------------------------------------------------------------ internals
    def _lock(self) -> None:
        self._lock_fd = lock_or_warn(
            self.root / "meta" / LOCK_FILE,
            DatasetError(f"{self.root} is being written by another writer (a `lapa data generate`, `import-bag` or "
                         f"recorder_node); wait for it to finish, or write to another directory"),
            f"writing without the lock, so do not write to {self.root} from two processes at once")

    def _unlock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)  # releases the flock

    def _check_episode(self, frames, instruction, actions, states, timestamps):
        frames = np.asarray(frames)
        h, w = self.image_size
        if frames.ndim != 4 or frames.shape[1:] != (h, w, 3) or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, {h}, {w}, 3) uint8, got {frames.shape} {frames.dtype}")
        if len(frames) < 2:
            raise ValueError(f"an episode needs at least 2 frames, got {len(frames)}")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        t = len(frames)
        if self.with_actions:
            if actions is None:
                raise ValueError("this dataset has actions: pass actions=(T, A) for the episode")
            actions = np.asarray(actions, dtype=np.float32)
            if actions.shape != (t, len(self.action_names)):
                raise ValueError(f"actions must be ({t}, {len(self.action_names)}), got {actions.shape}")
            if not np.all(np.isfinite(actions)):
                raise ValueError("actions contain NaN or infinity")
            if self.state_names:
                if states is None:
                    raise ValueError("this dataset has states: pass states=(T, S) for the episode")
                states = np.asarray(states, dtype=np.float32)
                if states.shape != (t, len(self.state_names)):
                    raise ValueError(f"states must be ({t}, {len(self.state_names)}), got {states.shape}")
        elif actions is not None or states is not None:
            raise ValueError("this dataset is action-free (with_actions=False): do not pass actions or states")
        if timestamps is not None:
            timestamps = np.asarray(timestamps, dtype=np.float64)
            if timestamps.shape != (t,) or np.any(np.diff(timestamps) <= 0):
                raise ValueError(f"timestamps must be {t} strictly increasing values")
        return frames, actions, states

    def _rows(self, index, task_index, actions, states, t) -> dict:
        columns = {}
        if self.with_actions:
            columns["action"] = actions
            if self.state_names:
                columns["observation.state"] = states
        done = np.zeros(t, dtype=bool)
        done[-1] = True
        columns.update({
            "timestamp": (np.arange(t) / self.fps).astype(np.float32),  # the video frame's time
            "frame_index": np.arange(t, dtype=np.int64),
            "episode_index": np.full(t, index, dtype=np.int64),
            "index": np.arange(self._next_frame, self._next_frame + t, dtype=np.int64),
            "task_index": np.full(t, task_index, dtype=np.int64),
            "next.done": done,
        })
        return columns

    def _features(self) -> dict:
        h, w = self.image_size
        features = {}
        if self.with_actions:
            features["action"] = {"dtype": "float32", "shape": [len(self.action_names)],
                                  "names": list(self.action_names)}
            if self.state_names:
                features["observation.state"] = {"dtype": "float32", "shape": [len(self.state_names)],
                                                 "names": list(self.state_names)}
        features[self.video_key] = {
            "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
            "info": {"video.fps": _number(self.fps), "video.height": h, "video.width": w, "video.channels": 3,
                     "video.codec": CODEC.replace("lib", "").replace("x264", "h264"), "video.pix_fmt": PIX_FMT,
                     "video.is_depth_map": False, "has_audio": False},
        }
        for name, dtype in BOOKKEEPING.items():
            features[name] = {"dtype": dtype, "shape": [1], "names": None}
        return features

    def _commit(self) -> None:
        """Write the metadata; meta/episodes.jsonl last, because its content defines which episodes exist."""
        n, end = len(self._episodes), self._next_index  # end > n when episodes were taken out of the index
        info = {
            "codebase_version": fmt.CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": n,
            "total_frames": self._num_frames,
            "total_tasks": len(self._tasks),
            "total_videos": n,
            "total_chunks": (end - 1) // fmt.CHUNKS_SIZE + 1 if end else 0,
            "chunks_size": fmt.CHUNKS_SIZE,
            "fps": _number(self.fps),
            "splits": {"train": f"0:{end}"},
            "data_path": fmt.DATA_PATH,
            "video_path": fmt.VIDEO_PATH,
            "features": self._features(),
            "lapa": {"with_actions": self.with_actions, "video_key": self.video_key,
                     **({"action_scales": self.action_scales} if self.action_scales is not None else {})},
        }
        fmt.write_jsonl(self.root / fmt.TASKS, [{"task_index": i, "task": t} for t, i in self._tasks.items()])
        fmt.write_jsonl(self.root / fmt.EPISODES_STATS, self._episode_stats)
        atomic_write_json(self.root / fmt.INFO, info)
        fmt.write_jsonl(self.root / fmt.EPISODES, self._episodes)

    def _load_existing(self) -> None:
        from lapa_learning.data.reader import EpisodeDataset

        ds = EpisodeDataset(self.root)
        if ds.layout != fmt.CODEBASE_VERSION:
            raise DatasetError(f"cannot append to {self.root}: it is a LeRobot {ds.layout} dataset, which lapa reads "
                               f"but does not write (it writes {fmt.CODEBASE_VERSION}); write to another directory")
        mismatches = [f"{name}: dataset has {have!r}, writer asked for {want!r}" for name, have, want in
                      append_mismatches(ds, fps=self.fps, image_size=self.image_size, video_key=self.video_key,
                                        with_actions=self.with_actions, action_names=self.action_names,
                                        state_names=self.state_names, action_scales=self.action_scales)]
        if mismatches:
            raise DatasetError(f"cannot append to {self.root}: " + "; ".join(mismatches))
        self.robot_type = ds.info.get("robot_type", self.robot_type)
        if ds.num_episodes:  # a set whose episodes did not record them: unknown, and stays so
            self.action_scales = ds.action_scales
        self._episodes = fmt.read_jsonl(self.root / fmt.EPISODES)
        listed = {ep["episode_index"] for ep in self._episodes}
        self._next_index = max(listed, default=-1) + 1
        stats_path = self.root / fmt.EPISODES_STATS
        old_stats = fmt.read_jsonl(stats_path) if stats_path.exists() else []
        self._episode_stats = [{**row, "stats": _as_arrays(row["stats"])} for row in old_stats
                               if row.get("episode_index") in listed]  # not those of uncommitted episodes
        self._tasks = {row["task"]: row["task_index"] for row in fmt.read_jsonl(self.root / fmt.TASKS)}
        for ep in self._episodes:  # a crash between tasks.jsonl and episodes.jsonl cannot lose a task
            for task in ep.get("tasks", ()):  # rows may leave their tasks to the parquet files' task_index
                self._tasks.setdefault(task, len(self._tasks))
        self._num_frames = sum(ep["length"] for ep in self._episodes)
        self._next_frame = _frame_index_after(self.root, self._next_index - 1, self._num_frames)
        _remove_orphans(self.root, self.video_key, self._next_index)


def append_mismatches(ds, fps: float, image_size: tuple[int, int] | None, video_key: str, with_actions: bool,
                      action_names: Sequence[str], state_names: Sequence[str],
                      action_scales: Mapping[str, float] | None) -> list[tuple[str, object, object]]:
    """(name, the dataset's value, the wanted value) of every property that episodes appended to the episode
    dataset `ds` would not share with those in it. image_size None: any (frames are stored at the dataset's size);
    action_scales are compared when both sides recorded them and the dataset holds episodes. The one check behind
    EpisodeWriter's append and recorder_node's start-up check."""
    checks = [("fps", ds.fps, float(fps)), ("video_key", ds.video_key, video_key),
              ("with_actions", ds.has_actions, bool(with_actions)),
              ("action_names", tuple(ds.action_names), tuple(action_names)),
              ("state_names", tuple(ds.state_names), tuple(state_names))]
    if image_size is not None:
        checks.insert(1, ("image_size", tuple(ds.image_size), tuple(image_size)))
    if ds.action_scales is not None and action_scales is not None and ds.num_episodes:
        checks.append(("action_scales", ds.action_scales, dict(action_scales)))
    # The writer writes its own features only: another camera or column of a LeRobot set would lose its entry
    written = {video_key, *BOOKKEEPING, *(("action",) if with_actions else ()), *(("observation.state",) if
                                                                                   state_names else ())}
    others = tuple(sorted(set(ds.info.get("features") or ()) - written))
    checks.append(("features that lapa does not write", others, ()))
    return [(name, have, want) for name, have, want in checks if have != want]


def episode_stats(columns: dict, frames: np.ndarray, video_key: str) -> dict:
    """Per-episode statistics as LeRobot v2.1 keeps them in meta/episodes_stats.jsonl: every per-frame feature,
    each statistic a list of at least one dimension (a scalar feature's are [x], count is [T]), and the video's
    per-channel statistics of pixel values in [0, 1] shaped (3, 1, 1)."""
    stats = {}
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)  # (T, D)
        stats[name] = {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
                       "std": v.std(0).tolist(), "count": [len(v)]}
    total, squares = np.zeros(3), np.zeros(3)
    for frame in frames:  # one frame at a time: a long 640x480 episode must not become one float64 array
        pixels = frame.reshape(-1, 3).astype(np.float64) / 255.0  # (H*W, 3)
        total += pixels.sum(0)
        squares += (pixels ** 2).sum(0)
    n = frames.shape[0] * frames.shape[1] * frames.shape[2]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    lowest, highest = frames.min(axis=(0, 1, 2)) / 255.0, frames.max(axis=(0, 1, 2)) / 255.0
    stats[video_key] = {k: np.asarray(v).reshape(3, 1, 1).tolist()
                        for k, v in (("min", lowest), ("max", highest), ("mean", mean), ("std", std))}
    stats[video_key]["count"] = [len(frames)]
    return stats


def _as_arrays(stats: dict) -> dict:
    """Episode statistics written before LeRobot's shapes were followed (scalar count): lists of >= 1 dimension."""
    return {feature: {k: v if isinstance(v, list) else [v] for k, v in values.items()}
            for feature, values in stats.items()}


def _number(fps: float) -> int | float:
    """fps as LeRobot writes it: an integer when it is one (80, not 80.0)."""
    return int(fps) if float(fps).is_integer() else float(fps)


def _remove_orphans(root: Path, video_key: str, next_index: int) -> None:
    """Delete files that a crash left behind: temp files, and episodes that were never committed (numbered from
    `next_index` on; files of an episode taken out of the index below it are the user's, and stay)."""
    for pattern in ("data/*/.*.tmp*", f"videos/*/{video_key}/.*.tmp*", "meta/.*.tmp*"):  # io.atomic_path names
        for path in root.glob(pattern):
            path.unlink(missing_ok=True)
    for path in list(root.glob("data/*/episode_*.parquet")) + list(root.glob(f"videos/*/{video_key}/episode_*.mp4")):
        if int(path.stem.split("_")[1]) >= next_index:
            path.unlink(missing_ok=True)


def _frame_index_after(root: Path, last_episode: int, num_frames: int) -> int:
    """The "index" column's value after the highest listed episode's last frame (its parquet file's), so that an
    episode appended to a set with a gap does not reuse indices; `num_frames` when there is none or it is unread."""
    import pyarrow.parquet as pq

    if last_episode < 0:
        return 0
    try:
        index = pq.read_table(fmt.data_path(root, last_episode), columns=["index"]).column("index").to_pylist()
        return max(num_frames, int(max(index)) + 1)
    except (OSError, ValueError, KeyError, TypeError):  # the reader already reports unreadable episodes
        return num_frames


def _write_parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays, names = [], []
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim == 2:
            flat = pa.array(values.reshape(-1), type=pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path)


def _dataset_entries(root: Path) -> list[Path]:
    """What lapa and LeRobot write in a dataset directory (a user's own files are not among them), but the lock."""
    meta = root / "meta"
    return [child for child in [*root.iterdir(), *(meta.iterdir() if meta.is_dir() else ())]
            if child.name in DATASET_ENTRIES or (child.parent == meta and child.name != LOCK_FILE)]


def _undo_unfinished_overwrite(root: Path) -> None:
    """Put back a dataset that an overwrite set aside and did not finish (release() after an error, or the next
    writer after a kill): the new episodes go, the old ones come back."""
    if put_back(root, REPLACED, _dataset_entries):
        warnings.warn(f"{root}: an --overwrite did not finish; the dataset it was replacing is back", stacklevel=3)


def _is_dataset(root: Path) -> bool:
    return (root / fmt.INFO).is_file() or any((root / f"{REPLACED}{suffix}" / fmt.INFO).is_file()
                                              for suffix in ("", ".partial"))


def _has_content(root: Path) -> bool:
    """Anything in the directory but a meta/ holding only the writers' lock (left by a writer that failed early)."""
    meta = root / "meta"
    return any(p.name != "meta" or not p.is_dir() for p in root.iterdir()) or \
        (meta.is_dir() and any(p.name != LOCK_FILE for p in meta.iterdir()))


def _holds_nothing(root: Path) -> bool:
    """True for a dataset with no episode and no file outside meta/ (what a writer that failed first leaves)."""
    try:
        if int(json.loads((root / fmt.INFO).read_text())["total_episodes"]) != 0:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(p.is_dir() or p.relative_to(root).parts[0] == "meta" for p in root.rglob("*"))
