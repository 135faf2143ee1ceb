"""Latent action labels, the contract between stage 1 and stage 2: one parquet file per dataset, written by
`lapa laq label` (lapa_learning/laq/label.py), read by the VLA trainer (lapa_learning/vla/data.py).

File: `<dataset_root>/latent_actions.parquet`, one row per labelled frame pair (x_t, x_t+H):

    episode_index  int64                 episode of the pair
    frame_index    int64                 t, the first frame of the pair (the second is t + offset)
    tokens         fixed_size_list<int16>[K]   the K latent action tokens, each in [0, codebook_size)

Rows are sorted by (episode_index, frame_index) and each pair appears once.  The schema metadata key
`lapa.latent_actions` holds a JSON object {"format_version": 1, "num_tokens": K, "codebook_size": C,
"offset": H (frames), "source": "<LAQ checkpoint that produced the labels>", "camera": "<video key of the frames
labelled>" (null for a video folder; absent in older files), "episodes": {"<index>": "<what identified the episode
when labelled>"} (EpisodeSource.episode_keys; absent in older files)}.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lapa_learning.errors import DatasetError, InputError
from lapa_learning.io import atomic_path

FILE_NAME = "latent_actions.parquet"
META_KEY = b"lapa.latent_actions"
FORMAT_VERSION = 1


def labels_path(dataset_root: str | os.PathLike) -> Path:
    """Where the latent labels of a dataset live (a path to the file itself is returned unchanged)."""
    root = Path(dataset_root)
    return root if root.suffix == ".parquet" else root / FILE_NAME


def _check_arrays(episode, t, tokens, codebook_size: int, offset: int):
    episode = np.asarray(episode)
    t = np.asarray(t)
    tokens = np.asarray(tokens)
    if episode.ndim != 1 or t.ndim != 1 or episode.shape != t.shape:
        raise InputError(f"latent labels: episode and t must be 1-D arrays of equal length, got shapes "
                         f"{episode.shape} and {t.shape}")
    if tokens.ndim != 2 or tokens.shape[0] != episode.shape[0] or tokens.shape[1] < 1:
        raise InputError(f"latent labels: tokens must have shape (N={episode.shape[0]}, K>=1), got {tokens.shape}")
    for name, arr in (("episode", episode), ("t", t), ("tokens", tokens)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"latent labels: {name} must be integers, got dtype {arr.dtype}")
    if not isinstance(codebook_size, (int, np.integer)) or not 1 <= codebook_size <= 32767:
        raise InputError(f"latent labels: codebook_size must be an int in [1, 32767], got {codebook_size!r}")
    if not isinstance(offset, (int, np.integer)) or offset < 1:
        raise InputError(f"latent labels: offset must be a positive int (frames), got {offset!r}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= codebook_size):
        raise InputError(f"latent labels: tokens must lie in [0, {codebook_size}), got range "
                         f"[{tokens.min()}, {tokens.max()}]")
    if episode.size and (episode.min() < 0 or t.min() < 0):
        raise InputError("latent labels: episode and t must be >= 0")
    return episode.astype(np.int64), t.astype(np.int64), tokens.astype(np.int16)


def save_latent_labels(dataset_root, episode, t, tokens, codebook_size: int, offset: int, source: str,
                       camera: str | None = None, episode_keys: dict[int, str] | None = None) -> Path:
    """Write the latent labels of a dataset atomically and return the file's path.

    episode: (N,) int, t: (N,) int (first frame of each pair), tokens: (N, K) int in [0, codebook_size),
    offset: H in frames, source: what produced the labels (e.g. the LAQ checkpoint directory), camera: the video
    key whose frames were labelled (None for a video folder), episode_keys: the labelled source's
    `episode_keys()`, so that a reader can tell when the videos changed since.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    episode, t, tokens = _check_arrays(episode, t, tokens, codebook_size, offset)
    order = np.lexsort((t, episode))
    episode, t, tokens = episode[order], t[order], tokens[order]
    if len(episode) > 1:
        dup = (np.diff(episode) == 0) & (np.diff(t) == 0)
        if dup.any():
            i = int(np.argmax(dup))
            raise InputError(f"latent labels: pair (episode {episode[i]}, t {t[i]}) appears more than once")
    n, k = tokens.shape
    meta = {"format_version": FORMAT_VERSION, "num_tokens": int(k), "codebook_size": int(codebook_size),
            "offset": int(offset), "source": str(source), "camera": camera}
    if episode_keys is not None:
        meta["episodes"] = {str(int(i)): str(k) for i, k in sorted(episode_keys.items())}
    token_col = pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1), type=pa.int16()), k)
    table = pa.table({"episode_index": pa.array(episode, type=pa.int64()),
                      "frame_index": pa.array(t, type=pa.int64()),
                      "tokens": token_col})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    path = labels_path(dataset_root)
    if not path.parent.is_dir():
        raise DatasetError(f"latent labels: dataset directory {path.parent} does not exist")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


@dataclass
class LatentLabels:
    """Latent action labels of one dataset (see the module docstring for the file format)."""

    episode: np.ndarray  # (N,) int64
    t: np.ndarray  # (N,) int64, first frame of each pair
    tokens: np.ndarray  # (N, K) int64, each in [0, codebook_size)
    codebook_size: int
    offset: int  # H in frames
    source: str
    path: Path | None = None
    camera: str | None = None  # the video key whose frames were labelled (None: a video folder, or an older file)
    episode_keys: dict[int, str] | None = None  # what each episode was when labelled (None: an older file)
    _index: dict | None = field(default=None, repr=False)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[1])

    def __len__(self) -> int:
        return int(self.episode.shape[0])

    @classmethod
    def load(cls, dataset_root) -> "LatentLabels":
        """Read `<dataset_root>/latent_actions.parquet` (or the parquet path given). DatasetError if missing/bad."""
        import pyarrow.parquet as pq

        path = labels_path(dataset_root)
        if not path.is_file():
            raise DatasetError(f"latent labels file {path} not found (create it with `lapa laq label`)")
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for truncated/garbage files
            raise DatasetError(f"latent labels file {path} is not a readable parquet file: {err}") from err
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise DatasetError(f"latent labels file {path} has no '{META_KEY.decode()}' schema metadata")
        try:
            meta = json.loads(raw)
            k, codebook_size, offset = int(meta["num_tokens"]), int(meta["codebook_size"]), int(meta["offset"])
            source = str(meta.get("source", ""))
            camera = None if meta.get("camera") is None else str(meta["camera"])
            keys = meta.get("episodes")
            keys = None if keys is None else {int(i): str(k) for i, k in keys.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DatasetError(f"latent labels file {path}: bad metadata {raw[:200]!r}: {err}") from err
        missing = {"episode_index", "frame_index", "tokens"} - set(table.column_names)
        if missing:
            raise DatasetError(f"latent labels file {path} lacks columns {sorted(missing)}")
        episode = table.column("episode_index").to_numpy().astype(np.int64)
        t = table.column("frame_index").to_numpy().astype(np.int64)
        col = table.column("tokens").combine_chunks()
        flat = col.flatten().to_numpy(zero_copy_only=False) if len(col) else np.zeros(0, np.int64)
        if flat.size != len(episode) * k:
            raise DatasetError(f"latent labels file {path}: tokens column does not hold {k} tokens per row")
        tokens = flat.reshape(len(episode), k).astype(np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= codebook_size):
            raise DatasetError(f"latent labels file {path}: tokens outside [0, {codebook_size})")
        return cls(episode=episode, t=t, tokens=tokens, codebook_size=codebook_size, offset=offset,
                   source=source, path=path, camera=camera, episode_keys=keys)

    def lookup(self, episode: int, t: int) -> np.ndarray:
        """The (K,) tokens of pair (episode, t); KeyError if that pair was not labelled."""
        if self._index is None:
            self._index = {(int(e), int(s)): i for i, (e, s) in enumerate(zip(self.episode, self.t))}
        try:
            return self.tokens[self._index[(int(episode), int(t))]]
        except KeyError:
            raise KeyError(f"no latent label for episode {episode}, t {t} in {self.path or 'latent labels'}") from None

    def episode_rows(self, episode: int) -> np.ndarray:
        """Row indices of one episode's pairs, in frame order."""
        return np.flatnonzero(self.episode == int(episode))
