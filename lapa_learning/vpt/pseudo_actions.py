"""Pseudo-actions: one parquet file per dataset, written by `lapa vpt label`, read by `lapa vla pretrain
--targets pseudo-actions` in place of the `action` column that an action-free dataset lacks.

File: `<dataset_root>/pseudo_actions.parquet`, one row per frame of every labelled episode (frames 0 .. L-1):

    episode_index  int64
    frame_index    int64                       t
    action         fixed_size_list<float32>[A]  the IDM's a_t

Schema metadata `lapa.pseudo_actions`: {"format_version": 1, "action_names": [...], "offset": H, "source": "<IDM
checkpoint>", "camera": "<video key of the frames labelled>" (null for a video folder; absent in older files),
"episodes": {"<index>": "<what identified the episode when labelled>"} (absent in older files)}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lapa_learning.errors import DatasetError
from lapa_learning.io import atomic_path

FILE_NAME = "pseudo_actions.parquet"
META_KEY = b"lapa.pseudo_actions"
FORMAT_VERSION = 1


def save_pseudo_actions(root, actions: dict[int, np.ndarray], action_names, offset: int, source: str,
                        camera: str | None = None, episode_keys: dict[int, str] | None = None) -> Path:
    """actions: episode index -> (L, A) float32 (every frame of the episode). Written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(action_names)
    eps, ts, rows = [], [], []
    for ep in sorted(actions):
        a = np.asarray(actions[ep], dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != len(names):
            raise DatasetError(f"pseudo-actions of episode {ep}: shape {a.shape}, expected (L, {len(names)})")
        eps.append(np.full(len(a), ep, np.int64))
        ts.append(np.arange(len(a), dtype=np.int64))
        rows.append(a)
    flat = np.concatenate(rows) if rows else np.zeros((0, len(names)), np.float32)
    table = pa.table({"episode_index": np.concatenate(eps) if eps else np.zeros(0, np.int64),
                      "frame_index": np.concatenate(ts) if ts else np.zeros(0, np.int64),
                      "action": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), len(names))})
    meta = {"format_version": FORMAT_VERSION, "action_names": names, "offset": int(offset), "source": str(source),
            "camera": camera}
    if episode_keys is not None:  # the labelled source's episode_keys(): a reader can tell when the videos changed
        meta["episodes"] = {str(int(i)): str(k) for i, k in sorted(episode_keys.items())}
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    path = Path(root) / FILE_NAME
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


@dataclass
class PseudoActions:
    by_episode: dict[int, np.ndarray]  # episode -> (L, A) float32
    action_names: tuple[str, ...]
    offset: int
    source: str
    path: Path
    camera: str | None = None  # the video key whose frames were labelled (None: a video folder, or an older file)
    episode_keys: dict[int, str] | None = None  # what each episode was when labelled (None: an older file)

    @classmethod
    def load(cls, root) -> "PseudoActions":
        import pyarrow.parquet as pq

        path = Path(root) / FILE_NAME
        if not path.is_file():
            raise DatasetError(f"pseudo-actions file {path} not found (create it with `lapa vpt label`)")
        try:
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[META_KEY])
            names, offset, source = tuple(meta["action_names"]), int(meta["offset"]), str(meta.get("source", ""))
            camera = meta.get("camera")
            keys = None if meta.get("episodes") is None else {int(i): str(k) for i, k in meta["episodes"].items()}
            ep = table.column("episode_index").to_numpy()
            t = table.column("frame_index").to_numpy()
            a = np.asarray(table.column("action").combine_chunks().flatten(), np.float32).reshape(len(ep), -1)
        except Exception as err:  # pyarrow and json raise many kinds for a damaged file
            raise DatasetError(f"pseudo-actions file {path} is not readable ({type(err).__name__}: {err})") from None
        if a.shape[1] != len(names):
            raise DatasetError(f"pseudo-actions file {path}: {a.shape[1]} values per row for {len(names)} names")
        by_episode = {}
        for e in np.unique(ep):
            rows = np.flatnonzero(ep == e)
            rows = rows[np.argsort(t[rows])]
            if not np.array_equal(t[rows], np.arange(len(rows))):
                raise DatasetError(f"pseudo-actions file {path}: episode {e} does not cover frames 0..{len(rows) - 1}")
            by_episode[int(e)] = a[rows]
        return cls(by_episode, names, offset, source, path, None if camera is None else str(camera), keys)

    def actions(self, episode: int, length: int) -> np.ndarray:
        a = self.by_episode.get(int(episode))
        if a is None or len(a) != length:
            got = "none" if a is None else f"{len(a)} frames"
            raise DatasetError(f"{self.path}: episode {episode} has {length} frames but its pseudo-actions have "
                               f"{got}; relabel the dataset with `lapa vpt label`")
        return a
