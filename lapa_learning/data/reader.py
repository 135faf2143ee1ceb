"""EpisodeDataset: read an episode dataset (frames, actions, states, instructions) for training."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lapa_learning.data import format as fmt
from lapa_learning.data import lerobot_v3 as v3
from lapa_learning.data.video import read_video
from lapa_learning.errors import DatasetError


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    length: int
    instruction: str
    task: str | None  # simulator task id (e.g. "push-v3") when known
    success: bool | None


class EpisodeSource:
    """What every video source shares: `episodes` (a list of EpisodeInfo) and the sizes derived from it, and the
    camera it reads (`video_key`, among `video_keys`; None and () for a folder of videos, which has one camera)."""

    episodes: list[EpisodeInfo]
    video_key: str | None = None
    video_keys: tuple[str, ...] = ()

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(ep.length for ep in self.episodes)

    def __len__(self) -> int:
        return self.num_episodes

    def episode_keys(self) -> dict[int, str]:
        """What identifies each episode to files computed from its frames (latent labels, pseudo-actions), so that
        such a file is never read against other episodes: the length here; a video folder adds the file name."""
        return {ep.index: f"{ep.length} frames" for ep in self.episodes}


def check_episode_keys(stored: dict[int, str] | None, source: EpisodeSource, path, relabel: str) -> list[int]:
    """Compare the episode keys a labels file recorded with `source`'s now. DatasetError when a labelled episode
    is another one now (videos renamed, added in between, removed, re-recorded); returns the indices of episodes
    the file does not know (added since), which have no labels. Files without keys (older ones) are not checked."""
    if stored is None:
        return []
    now = source.episode_keys()
    for index, key in sorted(stored.items()):
        if now.get(index) != key:
            then_now = f"was {key!r} when labelled, is {now[index]!r} now" if index in now else \
                f"({key!r}) is gone"
            raise DatasetError(f"{path}: episode {index} {then_now}: the dataset changed since it was labelled "
                               f"(videos added, removed or renamed); relabel it with `{relabel}`")
    return sorted(set(now) - set(stored))


def feature_names(info_path, features: dict, key: str) -> tuple[str, ...]:
    """One name per dimension of a vector feature. LeRobot datasets write `names` as a list, as a dict of lists
    (`{"motors": ["motor_0", "motor_1"]}`; several groups are joined in order) or as null (then key_0, key_1, ...)."""
    feature = features[key]
    shape = _shape(info_path, key, feature) or [0]
    names = feature.get("names")
    if names is None:
        names = [f"{key}_{i}" for i in range(int(shape[0]))]
    elif isinstance(names, dict):
        names = [n for group in names.values() for n in (group if isinstance(group, list) else [group])]
    names = tuple(str(n) for n in names)
    if len(names) != int(shape[0]) or len(shape) != 1:
        raise DatasetError(f"{info_path}: feature {key!r} has shape {list(shape)} but {len(names)} names "
                           f"{list(names)}; expected a vector with one name per dimension")
    return names


def video_size(info_path, key: str, feature: dict) -> tuple[int, int]:
    """(H, W) of a video feature: its info's video.height/width, else its shape read through its names
    (LeRobot writes [H, W, 3] or [3, H, W] with names such as ["channels", "height", "width"])."""
    extra = feature.get("info") or {}
    if "video.height" in extra and "video.width" in extra:
        size = extra["video.height"], extra["video.width"]
        if not all(_is_size(n) and n > 0 for n in size):
            raise DatasetError(f"{info_path}: video feature {key!r} has info video.height, video.width {list(size)}; "
                               f"expected positive integers")
        return size
    shape = _shape(info_path, key, feature)
    if len(shape) != 3:
        raise DatasetError(f"{info_path}: video feature {key!r} has shape {shape}; expected 3 dimensions")
    names = [str(n).lower()[:1] for n in feature.get("names") or []]  # "height" -> "h", "channels" -> "c"
    if sorted(names) == ["c", "h", "w"]:
        return shape[names.index("h")], shape[names.index("w")]
    return (shape[1], shape[2]) if shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4) else (shape[0], shape[1])


def decode_images(cells: list, root: Path, where: str) -> np.ndarray:
    """LeRobot "image" cells ({"bytes": PNG/JPEG, "path": ...}, as HF datasets stores images) -> (T, H, W, 3) RGB."""
    import cv2

    frames = []
    for t, cell in enumerate(cells):
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if data is None and isinstance(cell, dict) and cell.get("path"):
            path = Path(cell["path"])
            path = path if path.is_absolute() else root / path
            data = path.read_bytes() if path.is_file() else None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise DatasetError(f"{where}: frame {t} holds no decodable image (expected PNG/JPEG bytes or a path "
                               f"to one, got {str(cell)[:80]})")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def camera_key(info_path, videos: list[str], camera: str) -> str:
    """The video feature that `camera` names: a key of `videos` itself, or the last part of exactly one key
    ("wrist" for "observation.images.wrist")."""
    if camera in videos:
        return camera
    matches = [k for k in videos if k.rsplit(".", 1)[-1] == camera]
    if len(matches) == 1:
        return matches[0]
    raise DatasetError(f"--camera {camera!r}: {info_path} has "
                       f"{'several cameras named so' if matches else 'no such camera'}; its cameras (video "
                       f"features) are {', '.join(videos)} (give the full key or its last part)")


class EpisodeDataset(EpisodeSource):
    """Read-only view of a dataset written by EpisodeWriter, or of any LeRobotDataset v2.1 or v3.0 (one camera is
    read: `video_key`)."""

    def __init__(self, root: str | os.PathLike, video_key: str | None = None):
        """video_key: the camera to read, as its feature key ("observation.images.wrist") or its last part
        ("wrist"); default: the camera the dataset was recorded with (its lapa.video_key), else its first."""
        self.root = Path(root)
        info_path = self.root / fmt.INFO
        if not info_path.is_file():
            raise DatasetError(f"{self.root} is not an episode dataset: {fmt.INFO} is missing "
                               f"(create one with `lapa data generate` or the recorder node)")
        try:
            self.info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetError(f"{info_path} is not valid JSON ({err.msg})") from None
        except UnicodeDecodeError:
            raise DatasetError(f"{info_path} is not UTF-8 JSON text (damaged?)") from None
        if not isinstance(self.info, dict) or not isinstance(self.info.get("features", {}), dict):
            raise DatasetError(f"{info_path}: expected a JSON object with 'features', got {str(self.info)[:80]}")
        fps = self.info.get("fps")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
            raise DatasetError(f"{info_path}: 'fps' must be a positive finite number, got {fps!r}")
        if not isinstance(self.info.get("lapa", {}), dict):
            raise DatasetError(f"{info_path}: 'lapa' must be a JSON object (e.g. {{\"video_key\": ...}}), got "
                               f"{self.info['lapa']!r}")
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith(("v2", "v3")):
            raise DatasetError(f"{info_path}: codebase_version {self.info.get('codebase_version')!r} is not "
                               f"supported (expected LeRobotDataset v2.x or v3.0)")
        self.layout = "v3.0" if version.startswith("v3") else "v2.1"  # v3.0: read-only (lerobot_v3.py)
        features = self.info.get("features", {})
        bad = next((k for k, v in features.items() if not isinstance(v, dict)), None)
        if bad is not None:
            raise DatasetError(f"{info_path}: feature {bad!r} must be a JSON object (with dtype, shape, names), got "
                               f"{features[bad]!r}")
        # cameras: videos (mp4 files) or images (PNG/JPEG encoded in the data parquet, LeRobot's "image" dtype)
        videos = [k for k, v in features.items() if v.get("dtype") in ("video", "image")]
        if not videos:
            raise DatasetError(f"{info_path} declares no video or image feature (no camera)")
        self._image_keys = {k for k in videos if features[k]["dtype"] == "image"}
        if video_key is None:
            video_key = self.info.get("lapa", {}).get("video_key", videos[0])
            if video_key not in videos:
                raise DatasetError(f"{info_path}: its lapa.video_key {video_key!r} is not one of its video "
                                   f"features {videos}")
        else:
            video_key = camera_key(info_path, videos, video_key)
        self.video_key = video_key
        self.video_keys = tuple(videos)  # every camera of the dataset; only video_key is read
        self.fps = float(self.info["fps"])
        self.action_scales = _action_scales(info_path, self.info)
        self.image_size = video_size(info_path, video_key, features[video_key])
        self.has_actions = "action" in features
        self.action_names = feature_names(info_path, features, "action") if self.has_actions else ()
        self.state_names = (feature_names(info_path, features, "observation.state")
                            if "observation.state" in features else ())
        if self.layout == "v3.0":
            rows = v3.read_episode_rows(self.root)
            self.tasks = v3.read_tasks(self.root, rows)
            is_video = video_key not in self._image_keys
            self._files = {int(r["episode_index"]): v3.episode_files(self.root, self.info, r, video_key, is_video)
                           for r in rows}
            self._data_files = v3.DataFiles()
        else:
            episodes_path = self.root / fmt.EPISODES
            if not episodes_path.is_file():
                raise DatasetError(f"{self.root} is not an episode dataset: {fmt.EPISODES} is missing")
            rows = fmt.read_jsonl(episodes_path)
            tasks_by_index = {}
            if (self.root / fmt.TASKS).is_file():
                tasks_by_index = {r["task_index"]: r["task"]
                                  for r in fmt.read_jsonl(self.root / fmt.TASKS, {"task_index": int, "task": str})}
            self.tasks = [tasks_by_index[i] for i in sorted(tasks_by_index)]
        where = self.root / ("meta/episodes" if self.layout == "v3.0" else fmt.EPISODES)
        try:
            self.episodes = [
                EpisodeInfo(index=int(r["episode_index"]), length=int(r["length"]),
                            instruction=str((r.get("tasks") or [""])[0]), task=r.get("task_name"),
                            success=r.get("success"))
                for r in rows
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DatasetError(f"{where}: an episode row lacks or garbles 'episode_index' / 'length' "
                               f"({type(err).__name__}: {err})") from None
        self._by_index = {ep.index: ep for ep in self.episodes}
        if len(self._by_index) != len(self.episodes):
            dup = next(i for i, n in Counter(ep.index for ep in self.episodes).items() if n > 1)
            raise DatasetError(f"{where}: episode_index {dup} is in more than one row (expected one row per episode)")
        self._tables: dict[int, dict] = {}
        if self.layout != "v3.0" and tasks_by_index:
            self._instructions_from_task_index(tasks_by_index)
        self._stats: dict | None = None  # v3.0: computed once, never written into the dataset

    def __repr__(self) -> str:
        kind = f"actions {list(self.action_names)}" if self.has_actions else "action-free"
        h, w = self.image_size
        layout = ", LeRobot v3.0" if self.layout == "v3.0" else ""
        return (f"EpisodeDataset({self.root}: {self.num_episodes} episodes, {self.num_frames} frames, "
                f"{len(self.tasks)} instructions, {w}x{h} @ {self.fps:g} fps, {kind}{layout})")

    # ------------------------------------------------------------------ per-episode data
    def episode(self, index: int) -> EpisodeInfo:
        try:
            return self._by_index[index]
        except KeyError:
            raise DatasetError(f"{self.root} has no episode {index} ({self.num_episodes} episodes)") from None

    def frames(self, index: int) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB frames of episode `index`."""
        ep = self.episode(index)
        if self.video_key in self._image_keys:
            column = self._arrow_table(index, [self.video_key]).column(self.video_key).to_pylist()
            frames = decode_images(column, self.root, f"episode {index} {self.video_key}")
        elif self.layout == "v3.0":
            files = self._files[index]
            frames = v3.read_segment(files.video, files.start_s, ep.length, self.fps)
        else:
            frames = read_video(fmt.video_path(self.root, self.video_key, index), expected_frames=ep.length)
        if frames.shape[1:3] != self.image_size:
            raise DatasetError(f"episode {index} video is {frames.shape[2]}x{frames.shape[1]}, but {fmt.INFO} "
                               f"says {self.image_size[1]}x{self.image_size[0]}")
        return frames

    def actions(self, index: int) -> np.ndarray:
        """(T, A) float32; the action at frame t moves the robot from frame t to frame t+1."""
        if not self.has_actions:
            raise DatasetError(f"{self.root} is action-free: it has no actions")
        return self._column(index, "action")

    def states(self, index: int) -> np.ndarray:
        if not self.state_names:
            raise DatasetError(f"{self.root} has no observation.state")
        return self._column(index, "observation.state")

    def timestamps(self, index: int) -> np.ndarray:
        return self._column(index, "timestamp")

    def action_stats(self) -> dict:
        """Per-dimension action statistics, from meta/stats.json (computed and saved there if missing or lapa's own
        and stale; another tool's stats.json is never overwritten)."""
        from lapa_learning.data.stats import compute_dataset_stats, write_dataset_stats

        if not self.has_actions:
            raise DatasetError(f"{self.root} is action-free: no action statistics")
        path = self.root / fmt.STATS
        ours = not path.is_file()  # meta/stats.json is rewritten only when missing or written by lapa (total_frames)
        if path.is_file() and self.layout != "v3.0":
            try:
                stats = json.loads(path.read_text(encoding="utf-8"))
                ours = isinstance(stats, dict) and "total_frames" in stats
                if ours and stats.get("total_frames") == self.num_frames and _complete(stats.get("action"),
                                                                                       len(self.action_names)):
                    return stats["action"]
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass  # computed below, and the file left as it is
        if self.layout == "v3.0" or not ours:  # LeRobot's own stats (v3.0, v2.0): computed, never written there
            if self._stats is None:
                self._stats = compute_dataset_stats(self)
            return self._stats["action"]
        try:
            return write_dataset_stats(self)["action"]
        except OSError:  # read-only dataset: compute without saving
            return compute_dataset_stats(self)["action"]

    # ------------------------------------------------------------------ internals
    def _instructions_from_task_index(self, tasks_by_index: dict) -> None:
        """Episodes whose episodes.jsonl row has no `tasks` take the task of their first frame's task_index."""
        from dataclasses import replace

        for i, ep in enumerate(self.episodes):
            if ep.instruction or ep.length == 0:
                continue
            try:
                first = self._arrow_table(ep.index, ["task_index"]).column("task_index")[0].as_py()
            except DatasetError:
                continue  # no task_index column (or an unreadable file, reported when the episode is read)
            self.episodes[i] = self._by_index[ep.index] = replace(ep, instruction=str(tasks_by_index.get(first, "")))

    def _column(self, index: int, name: str) -> np.ndarray:
        table = self._tables.get(index)
        if table is None:
            table = self._tables[index] = self._read_table(index)
        if name not in table:
            raise DatasetError(f"episode {index}: data file {self._data_path(index)} has no {name!r} column "
                               f"(expected by {fmt.INFO})")
        return table[name]

    def _data_path(self, index: int) -> Path:
        return self._files[index].data if self.layout == "v3.0" else fmt.data_path(self.root, index)

    def _arrow_table(self, index: int, columns: list[str] | None = None):
        """The episode's rows as a pyarrow Table (only `columns`, if given)."""
        import pyarrow.parquet as pq

        ep = self.episode(index)
        path = self._data_path(index)
        if self.layout == "v3.0":
            table = self._data_files.episode_table(path, index, ep.length)
            table = table.select(columns) if columns else table
        else:
            try:
                table = pq.read_table(path, columns=columns)
            except FileNotFoundError:
                raise DatasetError(f"episode {index}: data file {path} is missing") from None
            except Exception as err:  # pyarrow raises several types for corrupt files (and for missing columns)
                raise DatasetError(f"episode {index}: data file {path} cannot be read ({err})") from None
        if table.num_rows != ep.length:
            raise DatasetError(f"episode {index}: {path} has {table.num_rows} rows, {fmt.EPISODES} says {ep.length}")
        return table

    def _read_table(self, index: int) -> dict:
        table = self._arrow_table(index)
        out = {}
        for name in table.column_names:
            if name in self._image_keys:  # encoded images: decoded by frames(), never kept
                continue
            column = table.column(name).combine_chunks()
            if hasattr(column, "flatten") and str(column.type).startswith(("fixed_size_list", "list")):
                out[name] = np.asarray(column.flatten(), dtype=np.float32).reshape(table.num_rows, -1)
            else:
                out[name] = column.to_numpy(zero_copy_only=False)
        for name, names in (("action", self.action_names), ("observation.state", self.state_names)):
            if names and name in out and out[name].shape != (table.num_rows, len(names)):
                raise DatasetError(f"episode {index}: data file {self._data_path(index)} column {name!r} has shape "
                                   f"{list(out[name].shape)}, expected [{table.num_rows}, {len(names)}] ({len(names)} "
                                   f"numbers per frame, as {fmt.INFO} says)")
        return out


def _is_size(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _shape(info_path, key: str, feature: dict) -> list[int]:
    """A feature's shape: a list of sizes ([] if not given); DatasetError naming it if it is anything else."""
    shape = feature.get("shape") or []
    if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
        raise DatasetError(f"{info_path}: feature {key!r} has shape {shape!r}; expected a list of sizes such as [2]")
    return shape


def _complete(stats, dims: int) -> bool:
    """Action statistics with min, max, mean and std of `dims` numbers each (else they are recomputed)."""
    return isinstance(stats, dict) and all(isinstance(stats.get(k), list) and len(stats[k]) == dims
                                           for k in ("min", "max", "mean", "std"))


def _action_scales(info_path: Path, info: dict) -> dict[str, float] | None:
    """info.json "lapa" -> "action_scales": the velocity per action unit of a recorded or imported set (None: not
    recorded, e.g. simulated data or another tool's dataset)."""
    lapa = info.get("lapa")
    scales = lapa.get("action_scales") if isinstance(lapa, dict) else None
    if scales is None:
        return None
    if not (isinstance(scales, dict) and scales
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scales.values())):
        raise DatasetError(f"{info_path}: 'lapa' -> 'action_scales' must map names to numbers (e.g. "
                           f'{{"linear_scale": 0.1, "angular_scale": 0.5, "action_limit": 1.0}}), got {scales!r}')
    return {str(k): float(v) for k, v in scales.items()}
