"""Turning timestamped robot streams into dataset frames: as-of sampling and the twist <-> action mapping.

Shared by the ROS recorder node (live) and `lapa data import-bag` (offline), so that a set recorded live and a set
imported from a bag of the same session follow the same rules. No ROS import here.

As-of sampling at a fixed rate: a frame at time t takes, from every stream, the newest message stamped at or
before t. A message stamped after t is never used for t (an action is never paired with an image it caused), and
a stream whose newest message is older than `max_age` seconds makes the frame stale: the frame is dropped and
counted against that stream.

    sampler = AsOfSampler(["image", "twist", "gripper"], max_age={"image": 0.1, "twist": 0.2, "gripper": 1.0})
    sampler.add("image", t_img, rgb)            # in any order within `horizon` seconds
    frame = sampler.sample(t)                    # {"image": ..., "twist": ..., "gripper": ...} or None
    sampler.dropped                              # {"image": 0, "twist": 3, "gripper": 0}

Action mapping: a policy predicts actions in dataset units (Meta-World: -1..1 per axis); a robot takes
velocities. `TwistActionMap` converts one into the other with scalar scales, so a recorded set trains a policy
whose outputs the policy node scales back into the same velocities.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lapa_learning.errors import ConfigError, InputError

# sensor_msgs/Image encoding -> (channels, index of R, G, B in a pixel; None for mono)
IMAGE_ENCODINGS: dict[str, tuple[int, tuple[int, int, int] | None]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}

LINEAR_NAMES = ("dx", "dy", "dz")
ANGULAR_NAMES = ("droll", "dpitch", "dyaw")
GRIPPER_NAME = "gripper"


class _Stream:
    """Time-sorted (stamp, value) pairs of one stream, pruned to a horizon behind the newest stamp."""

    def __init__(self, horizon: float):
        self.horizon = horizon
        self.stamps: list[float] = []
        self.values: list[object] = []

    def add(self, stamp: float, value: object) -> None:
        i = bisect.bisect_right(self.stamps, stamp)
        self.stamps.insert(i, stamp)
        self.values.insert(i, value)
        # Keep at least one message older than (newest - horizon): it can still be the as-of match.
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - self.horizon) - 1
        if cut > 0:
            del self.stamps[:cut], self.values[:cut]

    def as_of(self, t: float) -> tuple[float, object] | None:
        i = bisect.bisect_right(self.stamps, t) - 1
        return None if i < 0 else (self.stamps[i], self.values[i])


@dataclass
class AsOfSampler:
    """As-of join of several streams at sample times; see the module docstring."""

    streams: Sequence[str]
    max_age: Mapping[str, float] | float = 0.2  # seconds; per stream or one for all; inf = hold the last forever
    horizon: float = 5.0  # seconds of history kept per stream (must exceed every finite max_age)
    defaults: Mapping[str, object] = field(default_factory=dict)  # value of a stream with nothing at or before t
    dropped: dict[str, int] = field(default_factory=dict)  # frames dropped because this stream was missing/stale
    sampled: int = 0  # frames returned
    # add/sample/clear may come from different threads (the recorder decodes camera images on their own thread)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.streams:
            raise ConfigError("AsOfSampler needs at least one stream name")
        ages = self.max_age if isinstance(self.max_age, Mapping) else {s: self.max_age for s in self.streams}
        missing = [s for s in self.streams if s not in ages]
        if missing:
            raise ConfigError(f"max_age has no entry for stream(s) {missing}; expected one per stream")
        for name, age in ages.items():
            if not (isinstance(age, (int, float)) and not math.isnan(age) and age > 0):
                raise ConfigError(f"max_age[{name!r}] must be a positive number of seconds, got {age!r}")
            if math.isfinite(age) and age >= self.horizon:
                raise ConfigError(f"max_age[{name!r}]={age} s must be shorter than the horizon {self.horizon} s")
        self._ages = {s: float(ages[s]) for s in self.streams}
        self._streams = {s: _Stream(self.horizon) for s in self.streams}
        self.dropped = {s: 0 for s in self.streams}

    def add(self, stream: str, stamp: float, value: object) -> None:
        if stream not in self._streams:
            raise KeyError(f"unknown stream {stream!r}; this sampler has {list(self.streams)}")
        with self._lock:
            self._streams[stream].add(float(stamp), value)

    def sample(self, t: float) -> dict[str, object] | None:
        """Values as of time t, or None when a stream has nothing at or before t within its max_age."""
        with self._lock:
            return self._sample(t)

    def _sample(self, t: float) -> dict[str, object] | None:
        out: dict[str, object] = {}
        stale = []
        for name, stream in self._streams.items():
            hit = stream.as_of(t)
            if hit is None and name in self.defaults:
                out[name] = self.defaults[name]
            elif hit is None or t - hit[0] > self._ages[name]:
                stale.append(name)
            else:
                out[name] = hit[1]
        if stale:
            for name in stale:
                self.dropped[name] += 1
            return None
        self.sampled += 1
        return out

    def last(self, stream: str) -> tuple[float, object] | None:
        """Newest (stamp, value) of a stream, or None."""
        with self._lock:
            s = self._streams[stream]
            return (s.stamps[-1], s.values[-1]) if s.stamps else None

    def clear(self) -> None:
        with self._lock:
            for name in self.streams:
                self._streams[name] = _Stream(self.horizon)
            self.dropped = {s: 0 for s in self.streams}
            self.sampled = 0


def sample_times(start: float, end: float, rate: float) -> np.ndarray:
    """Sample times start, start + 1/rate, ... up to and including end."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ConfigError(f"sampling rate must be a positive number of Hz, got {rate!r}")
    if end < start:
        return np.zeros(0, dtype=np.float64)
    n = int(math.floor((end - start) * rate + 1e-9)) + 1
    return start + np.arange(n, dtype=np.float64) / rate


@dataclass(frozen=True)
class TwistActionMap:
    """Dataset action (ordered as `action_names`) <-> (linear m/s (3,), angular rad/s (3,), gripper).

    linear = action[dx, dy, dz] * linear_scale; angular = action[droll, dpitch, dyaw] * angular_scale;
    the gripper passes through in dataset units (Meta-World: -1 open .. +1 close). Names the dataset does not
    have map to zero. `to_action` clips to `action_limit` (the dataset's range, 1.0 for Meta-World).
    """

    action_names: tuple[str, ...] = ("dx", "dy", "dz", "gripper")
    linear_scale: float = 0.8  # m/s per dataset unit (Meta-World: 1 unit = 1 cm per 1/80 s step)
    angular_scale: float = 1.0  # rad/s per dataset unit
    action_limit: float = 1.0  # |action| bound in dataset units (0 = no clipping)

    def __post_init__(self):
        names = tuple(self.action_names)
        object.__setattr__(self, "action_names", names)
        known = set(LINEAR_NAMES) | set(ANGULAR_NAMES) | {GRIPPER_NAME}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"action_names has unknown entries {unknown}; expected names from {sorted(known)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"action_names has duplicates: {list(names)}")
        for key in ("linear_scale", "angular_scale"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} must be a positive number, got {value!r}")
        if not (math.isfinite(self.action_limit) and self.action_limit >= 0):
            raise ConfigError(f"action_limit must be >= 0 (0 = no clipping), got {self.action_limit!r}")

    @property
    def dim(self) -> int:
        return len(self.action_names)

    def scales(self) -> dict[str, float]:
        """What turned velocities into these actions, as a dataset records it (meta/info.json "lapa")."""
        return {"linear_scale": float(self.linear_scale), "angular_scale": float(self.angular_scale),
                "action_limit": float(self.action_limit)}

    def to_twist(self, values: Iterable[float]) -> tuple[np.ndarray, np.ndarray, float | None]:
        """(linear (3,), angular (3,), gripper or None when the dataset has no gripper) from an action."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"action has {v.shape[0]} values, expected {self.dim} ({', '.join(self.action_names)})")
        index = {n: i for i, n in enumerate(self.action_names)}
        linear = np.array([v[index[n]] if n in index else 0.0 for n in LINEAR_NAMES]) * self.linear_scale
        angular = np.array([v[index[n]] if n in index else 0.0 for n in ANGULAR_NAMES]) * self.angular_scale
        gripper = float(v[index[GRIPPER_NAME]]) if GRIPPER_NAME in index else None
        return linear, angular, gripper

    def to_action(self, linear: Iterable[float], angular: Iterable[float], gripper: float | None) -> np.ndarray:
        """Dataset action (float32, ordered as action_names) from velocities and a gripper command."""
        lin = np.asarray(linear, dtype=np.float64).reshape(3) / self.linear_scale
        ang = np.asarray(angular, dtype=np.float64).reshape(3) / self.angular_scale
        parts = dict(zip(LINEAR_NAMES, lin)) | dict(zip(ANGULAR_NAMES, ang))
        parts[GRIPPER_NAME] = 0.0 if gripper is None else float(gripper)
        out = np.array([parts[n] for n in self.action_names], dtype=np.float32)
        if self.action_limit > 0:
            np.clip(out, -self.action_limit, self.action_limit, out=out)
        return out


def decode_image(height: int, width: int, encoding: str, step: int, data) -> np.ndarray:
    """The fields of a sensor_msgs/Image -> (H, W, 3) uint8 RGB (a new array). InputError on anything else.

    8-bit encodings rgb8, bgr8, rgba8, bgra8 and mono8; row padding (step > width * channels) is handled.
    """
    enc = str(encoding).lower()
    if enc not in IMAGE_ENCODINGS:
        raise InputError(f"image encoding {encoding!r} is not supported; expected one of {', '.join(IMAGE_ENCODINGS)}")
    channels, order = IMAGE_ENCODINGS[enc]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise InputError(f"image size {width}x{height} is empty; expected a positive width and height")
    if step < width * channels:
        raise InputError(f"image step {step} is shorter than width*channels = {width}*{channels} for {enc}")
    buf = np.frombuffer(data if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8),
                        dtype=np.uint8)
    if buf.size != step * height:
        raise InputError(f"image data has {buf.size} bytes, expected step*height = {step}*{height} = "
                         f"{step * height} ({width}x{height} {enc})")
    rows = buf.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if order is None:
        return np.repeat(rows, 3, axis=2)
    if order == (0, 1, 2) and channels == 3:
        return rows.copy()
    return np.ascontiguousarray(rows[:, :, list(order)])


def decode_compressed_image(format: str, data) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    import cv2

    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data, np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise InputError(f"compressed image ({format!r}, {buf.size} bytes) could not be decoded; expected jpeg or png")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
