"""Per-dimension statistics of actions and states, computed once per dataset and saved in meta/stats.json."""

from __future__ import annotations

import numpy as np

from lapa_learning.data import format as fmt
from lapa_learning.io import atomic_write_json


def feature_stats(values: np.ndarray, quantiles: tuple[float, ...] = ()) -> dict:
    """min/max/mean/std/count (and optional quantiles) per dimension of a (N, D) array, as JSON-ready lists."""
    values = np.asarray(values, dtype=np.float64)
    stats = {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": int(len(values)),
    }
    if quantiles:
        stats["quantiles"] = {str(q): np.quantile(values, q, axis=0).tolist() for q in quantiles}
    return stats


def compute_dataset_stats(dataset) -> dict:
    """Statistics of `action` and `observation.state` over every frame of an EpisodeDataset."""
    stats = {"total_frames": dataset.num_frames, "total_episodes": dataset.num_episodes}
    if dataset.has_actions and dataset.num_episodes:
        actions = np.concatenate([dataset.actions(ep.index) for ep in dataset.episodes])
        stats["action"] = feature_stats(actions, fmt.QUANTILES)
        if dataset.state_names:
            states = np.concatenate([dataset.states(ep.index) for ep in dataset.episodes])
            stats["observation.state"] = feature_stats(states, fmt.QUANTILES)
    return stats


def write_dataset_stats(dataset) -> dict:
    stats = compute_dataset_stats(dataset)
    atomic_write_json(dataset.root / fmt.STATS, stats)
    return stats
