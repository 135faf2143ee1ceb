"""ROS messages <-> numpy, with clear errors for what we cannot take.

Images: sensor_msgs/Image with 8-bit encodings rgb8, bgr8, mono8, rgba8, bgra8 (row padding via `step` is
handled). Anything else raises InputError naming the encoding and the accepted ones. With the nodes'
`image_transport: compressed`: sensor_msgs/CompressedImage, JPEG or PNG (what image_transport's `compressed`
plugin publishes on `<camera topic>/compressed`), decoded with OpenCV.

The conversion prefers the distribution's cv_bridge (ROS 2's `from cv_bridge import CvBridge`, installed with
`apt install ros-<distro>-cv-bridge`) when it imports *and* passes a self-check (round trips of small images in
every accepted encoding, with row padding, compared with the hand-written decoder). Otherwise it uses the small
converter in lapa_learning.data.sync.decode_image (numpy views, one copy; shared with `lapa data import-bag`).
The PyPI package `cv-bridge` is ROS 1's: on numpy 2 it fails the self-check (`tostring`, ignored `step`) and is
never used. `LAPA_ROS_CV_BRIDGE=0` forces the hand-written converter. Either way the errors for bad encodings
and sizes are the same (checked here before any conversion) and the result is a new (H, W, 3) uint8 RGB array.

The functions read message fields by attribute, so the pure ones work on any object with those fields.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import numpy as np

from lapa_learning.data.sync import IMAGE_ENCODINGS, decode_compressed_image, decode_image
from lapa_learning.errors import InputError

ENCODINGS = IMAGE_ENCODINGS

_bridge_lock = threading.Lock()
_bridge_choice: tuple[object | None, str] | None = None  # (CvBridge or None, why) once chosen


def _image_msg(height: int, width: int, encoding: str, step: int, data: bytes):
    """A sensor_msgs/Image when the message package is there (what cv_bridge expects), else a plain object."""
    try:
        from sensor_msgs.msg import Image
    except ImportError:
        return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0, step=step, data=data)
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = height, width, encoding, 0, step
    msg.data = data
    return msg


def _self_check_messages():
    """(message, expected RGB) pairs: every accepted encoding, odd sizes, padded rows."""
    h, w = 3, 5
    rgb = (np.arange(h * w * 3, dtype=np.uint16).reshape(h, w, 3) * 37 % 251).astype(np.uint8)
    gray = rgb[:, :, 1:2]
    alpha = np.full((h, w, 1), 200, np.uint8)
    pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
              "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], 2), "mono8": gray}
    out = []
    for encoding, px in pixels.items():
        for pad in (0, 3):
            c = px.shape[2]
            rows = np.zeros((h, w * c + pad), np.uint8)
            rows[:, : w * c] = px.reshape(h, w * c)
            expected = np.repeat(gray, 3, axis=2) if encoding == "mono8" else rgb
            out.append((_image_msg(h, w, encoding, w * c + pad, rows.tobytes()), expected))
    return rgb, out


def _bridge_problem(bridge) -> str:
    """'' when `bridge` converts every accepted encoding exactly like decode_image, else what went wrong."""
    rgb, cases = _self_check_messages()
    try:
        for msg, expected in cases:
            got = np.asarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
            if got.dtype != np.uint8 or got.shape != expected.shape or not np.array_equal(got, expected):
                return (f"imgmsg_to_cv2({msg.encoding}, step {msg.step} -> rgb8) gave {got.dtype} {got.shape} "
                        "different from the expected pixels")
        back = bridge.cv2_to_imgmsg(rgb, encoding="rgb8")
        got = decode_image(back.height, back.width, back.encoding, back.step, back.data)
        if not np.array_equal(got, rgb):
            return "cv2_to_imgmsg(rgb8) did not round-trip"
    except Exception as err:  # ROS 1's cv_bridge on numpy 2: AttributeError (tostring), buffer errors, ...
        return f"{type(err).__name__}: {err}"
    return ""


def select_bridge(refresh: bool = False) -> tuple[object | None, str]:
    """(a working cv_bridge.CvBridge or None, a one-line reason). Chosen once per process (refresh: again)."""
    global _bridge_choice
    with _bridge_lock:
        if _bridge_choice is not None and not refresh:
            return _bridge_choice
        if os.environ.get("LAPA_ROS_CV_BRIDGE", "").strip().lower() in ("0", "false", "no", "off"):
            choice = (None, "hand-written converter (LAPA_ROS_CV_BRIDGE=0)")
        else:
            try:
                from cv_bridge import CvBridge

                bridge = CvBridge()
            except Exception as err:  # not installed, or broken on import
                choice = (None, f"hand-written converter (cv_bridge not importable: {type(err).__name__}: {err})")
            else:
                problem = _bridge_problem(bridge)
                choice = ((None, f"hand-written converter (cv_bridge failed its self-check: {problem})")
                          if problem else (bridge, "cv_bridge"))
        _bridge_choice = choice
        return choice


def converter_name() -> str:
    """Which image converter this process uses, and why (for logs and status)."""
    return select_bridge()[1]


def _check_image_fields(msg) -> str:
    """The same checks (and messages) as decode_image, before handing the message to cv_bridge; the encoding."""
    enc = str(msg.encoding).lower()
    if enc not in IMAGE_ENCODINGS:
        raise InputError(f"image encoding {msg.encoding!r} is not supported; expected one of "
                         f"{', '.join(IMAGE_ENCODINGS)}")
    channels = IMAGE_ENCODINGS[enc][0]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InputError(f"image size {width}x{height} is empty; expected a positive width and height")
    if step < width * channels:
        raise InputError(f"image step {step} is shorter than width*channels = {width}*{channels} for {enc}")
    size = len(msg.data)
    if size != step * height:
        raise InputError(f"image data has {size} bytes, expected step*height = {step}*{height} = "
                         f"{step * height} ({width}x{height} {enc})")
    return enc


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB array (a new contiguous array)."""
    bridge = select_bridge()[0]
    if bridge is None or getattr(msg, "is_bigendian", 0):
        return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data)
    enc = _check_image_fields(msg)
    if enc != msg.encoding:  # e.g. "RGB8": cv_bridge is case-sensitive, the hand-written decoder is not
        return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data)
    rgb = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    if not (rgb.flags.c_contiguous and rgb.flags.owndata and rgb.flags.writeable):
        rgb = np.array(rgb)  # rgb8 -> rgb8 may be a view of the message's buffer
    return rgb


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG; `format` e.g. "rgb8; jpeg compressed bgr8") -> (H, W, 3) uint8 RGB."""
    return decode_compressed_image(msg.format, msg.data)


def image_input(transport: str):
    """(message type, function msg -> RGB array) of a camera subscription: image_transport 'raw' or 'compressed'."""
    if transport == "compressed":
        from sensor_msgs.msg import CompressedImage

        return CompressedImage, compressed_to_rgb
    if transport == "raw":
        from sensor_msgs.msg import Image

        return Image, image_to_rgb
    raise InputError(f"image transport {transport!r} is not supported; expected 'raw' or 'compressed'")


def rgb_to_image(rgb: np.ndarray, stamp=None, frame_id: str = "", msg=None):
    """(H, W, 3) uint8 RGB array -> sensor_msgs/Image (rgb8). Pass `msg` to fill an existing message."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"image array must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    bridge = select_bridge()[0]
    if msg is None and bridge is not None:
        msg = bridge.cv2_to_imgmsg(np.ascontiguousarray(rgb), encoding="rgb8")
    else:
        if msg is None:
            from sensor_msgs.msg import Image

            msg = Image()
        msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
        msg.encoding = "rgb8"
        msg.is_bigendian = 0
        msg.step = int(rgb.shape[1]) * 3
        msg.data = np.ascontiguousarray(rgb).tobytes()  # bytes assignment: ~0.1 ms (a list would take ~50 ms)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
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
