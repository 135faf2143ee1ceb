"""Success-rate statistics."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved at 0% and 100%, unlike the normal one)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean of a few independent values (e.g. one paired difference per training seed);
    None for fewer than two values. With three seeds it is wide (t = 4.30): seed-to-seed spread, not episodes."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    if sem == 0.0:  # every seed gave the same value
        return (mean, mean)
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return (float(lo), float(hi))


def paired_differences(a: dict[str, float], b: dict[str, float]) -> dict:
    """a minus b seed by seed (seed -> rate, both measured on the same layouts within a seed): the seeds both have,
    the differences, how many seeds have a ahead, their mean and its 95% Student-t interval over seeds (None below
    two seeds). Unlike a pooled Wilson interval, which counts episodes, this one counts training seeds."""
    seeds = sorted(set(a) & set(b), key=int)
    diffs = [a[s] - b[s] for s in seeds]
    interval = mean_interval(diffs)
    return {"seeds": [int(s) for s in seeds], "per_seed": dict(zip(seeds, diffs)),
            "ahead_in_seeds": sum(d > 0 for d in diffs), "mean": sum(diffs) / len(diffs) if diffs else None,
            "t95": None if interval is None else list(interval)}
