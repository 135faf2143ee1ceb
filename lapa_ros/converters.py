"""ROS messages <-> numpy, with clear errors for what we cannot take.

Images: sensor_msgs/Image with 8-bit encodings rgb8, bgr8, mono8, rgba8, bgra8 (row padding via `step` is
handled). Anything else raises InputError naming the encoding and the accepted ones. This small converter replaces
cv_bridge, which is not installable with the PyPI ROS 2 wheels; it is as fast (numpy views, one copy).

The functions read message fields by attribute, so the pure ones work on any object with those fields.
"""

from __future__ import annotations

import numpy as np

from lapa_learning.errors import InputError

# encoding -> (channels, index of R, G, B in the pixel; None for mono)
ENCODINGS: dict[str, tuple[int, tuple[int, int, int] | None]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB array (a new contiguous array)."""
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise InputError(f"image encoding {msg.encoding!r} is not supported; expected one of {', '.join(ENCODINGS)}")
    channels, order = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InputError(f"image size {width}x{height} is empty; expected a positive width and height")
    if step < width * channels:
        raise InputError(f"image step {step} is shorter than width*channels = {width}*{channels} for {encoding}")
    data = msg.data
    buf = np.frombuffer(data if isinstance(data, (bytes, bytearray, memoryview)) else bytes(data), dtype=np.uint8)
    if buf.size != step * height:
        raise InputError(f"image data has {buf.size} bytes, expected step*height = {step}*{height} = "
                         f"{step * height} ({width}x{height} {encoding})")
    rows = buf.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if order is None:
        return np.repeat(rows, 3, axis=2)
    if order == (0, 1, 2) and channels == 3:
        return rows.copy()
    return np.ascontiguousarray(rows[:, :, list(order)])


def rgb_to_image(rgb: np.ndarray, stamp=None, frame_id: str = "", msg=None):
    """(H, W, 3) uint8 RGB array -> sensor_msgs/Image (rgb8). Pass `msg` to fill an existing message."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"image array must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if msg is None:
        from sensor_msgs.msg import Image

        msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1]) * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()  # bytes assignment: ~0.1 ms (a list would take ~50 ms)
    return msg


def stamp_to_seconds(stamp) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def twist_to_arrays(msg) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/TwistStamped (or Twist) -> (linear (3,), angular (3,)) float64."""
    twist = getattr(msg, "twist", msg)
    lin, ang = twist.linear, twist.angular
    return np.array([lin.x, lin.y, lin.z], dtype=np.float64), np.array([ang.x, ang.y, ang.z], dtype=np.float64)


def fill_twist(msg, linear, angular, stamp=None, frame_id: str | None = None):
    """Write linear/angular (3,) into a geometry_msgs/TwistStamped; returns msg."""
    if stamp is not None:
        msg.header.stamp = stamp
    if frame_id is not None:
        msg.header.frame_id = frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in angular)
    return msg
