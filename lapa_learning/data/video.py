"""MP4 (H.264) encode with PyAV, decode with OpenCV (PyAV's rgb24 conversion is slow; DESIGN.md section 3)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lapa_learning.errors import DatasetError

CODEC = "libx264"
PIX_FMT = "yuv420p"
CRF = 18  # visually lossless for small renders; keeps 64 px objects crisp


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """Encode frames (T, H, W, 3) uint8 RGB to an H.264 mp4 at `path` (H and W must be even for yuv420p), frame t
    at t / fps: a fractional rate is kept as a fraction (7.5 -> 15/2, 29.97 -> 2997/100), not rounded."""
    from fractions import Fraction

    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 array, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError("cannot write a video with no frames")
    if h % 2 or w % 2:
        raise ValueError(f"H.264 with yuv420p needs even image sizes, got {w}x{h}")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(CODEC, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, PIX_FMT
        stream.options = {"crf": str(CRF), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: str | os.PathLike, expected_frames: int | None = None) -> np.ndarray:
    """Decode every frame of a video file to (T, H, W, 3) uint8 RGB; DatasetError if unreadable or short."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"video file {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DatasetError(f"video file {path} cannot be opened (not a video, or truncated/corrupt)")
        frames = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise DatasetError(f"video file {path} holds no decodable frame (truncated or corrupt)")
    if expected_frames is not None and len(frames) != expected_frames:
        raise DatasetError(f"video file {path} decodes to {len(frames)} frames, but the dataset says "
                           f"{expected_frames} (truncated or corrupt)")
    return np.stack(frames)


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder in frame order: by name, numbers compared as numbers (2.png before
    10.png), so unpadded and zero-padded numbering both work."""
    import re

    def key(p: Path):
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", p.name)]

    return sorted((p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp")),
                  key=key)


def read_frame_folder(path: str | os.PathLike) -> np.ndarray:
    """Read a folder of image files (in `frame_files` order, Something-Something style) to (T, H, W, 3) uint8 RGB."""
    import cv2

    path = Path(path)
    files = frame_files(path)
    if not files:
        raise DatasetError(f"frame folder {path} holds no image files (.jpg/.png)")
    frames = []
    for file in files:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"image {file} cannot be decoded")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DatasetError(f"frame folder {path} mixes image sizes {sorted(shapes)}")
    return np.stack(frames)


def probe_video(path: str | os.PathLike) -> tuple[int, int, int, float | None]:
    """(frame count, height, width, frame rate) of a video file or frame folder (rate None: a frame folder, or a
    container that does not say), cheaply; DatasetError if unreadable."""
    import cv2

    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise DatasetError(f"frame folder {path} holds no image files (.jpg/.png)")
        first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise DatasetError(f"image {files[0]} cannot be decoded")
        return len(files), first.shape[0], first.shape[1], None
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DatasetError(f"video file {path} cannot be opened (not a video, or truncated/corrupt)")
        ok, first = capture.read()
        if not ok:
            raise DatasetError(f"video file {path} holds no decodable frame (truncated or corrupt)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        return count, first.shape[0], first.shape[1], fps if 0 < fps < 1000 else None
    finally:
        capture.release()
