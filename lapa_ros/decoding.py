"""Decode compressed camera images off the executor thread, newest first.

A subscription callback that decodes a JPEG/PNG itself holds the node's (single-threaded) executor for as long
as the decode takes: a large PNG held it ~0.5 s, and the control and status timers and the services waited. The
callback only hands the message to `NewestImageDecoder.submit`; one thread decodes it. When images come faster
than they decode, only the newest waiting one is decoded (the others are counted as superseded: nobody would
use them), so decoding never falls behind the camera. Results keep the time the message was received.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

from lapa_learning.errors import InputError

_log = logging.getLogger(__name__)


class NewestImageDecoder:
    """decode(msg) -> RGB array runs on this object's thread; then on_image(rgb, received) or, when decode
    raised InputError, on_error(err, received). Other exceptions are passed to on_error as InputError too, and
    an exception in on_image/on_error is logged: neither may end the thread and silently stop every later image.
    Nothing is delivered after stop()."""

    def __init__(self, decode: Callable[[Any], np.ndarray], on_image: Callable[[np.ndarray, float], None],
                 on_error: Callable[[InputError, float], None], name: str = "image_decoder"):
        self.decode, self.on_image, self.on_error = decode, on_image, on_error
        self.superseded = 0  # messages replaced by a newer one before they were decoded
        self._cond = threading.Condition()
        self._pending: tuple[Any, float] | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, msg, received: float) -> bool:
        """Queue `msg` (received at `received`, node clock s) for decoding; returns at once. True when it
        replaced a message that was still waiting."""
        with self._cond:
            replaced = self._pending is not None
            if replaced:
                self.superseded += 1
            self._pending = (msg, received)
            self._cond.notify()
        return replaced

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread; a decode still in progress delivers nothing (the node is closing)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning("%s: a decode still runs after %.1f s; its result will be dropped", self._thread.name,
                         timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                msg, received = self._pending
                self._pending = None
            try:
                rgb, error = self.decode(msg), None
            except InputError as err:
                rgb, error = None, err
            except Exception as err:  # noqa: BLE001 - see the class docstring
                rgb, error = None, InputError(f"image could not be decoded: {type(err).__name__}: {err}")
            with self._cond:
                if self._stopping:  # closed while decoding: the node may be gone
                    return
            try:
                self.on_image(rgb, received) if error is None else self.on_error(error, received)
            except Exception:  # noqa: BLE001 - a failing handler must not stop every later image
                _log.exception("%s: handling a decoded image failed", self._thread.name)
