"""lapa_ros.decoding: compressed images are decoded on their own thread, newest first (no ROS needed)."""

import threading

import numpy as np
import pytest

from lapa_learning.errors import InputError
from lapa_ros.decoding import NewestImageDecoder


class Recorder:
    def __init__(self):
        self.images, self.errors = [], []
        self.done = threading.Condition()

    def on_image(self, rgb, received):
        with self.done:
            self.images.append((int(rgb[0, 0, 0]), received))
            self.done.notify_all()

    def on_error(self, err, received):
        with self.done:
            self.errors.append((str(err), received))
            self.done.notify_all()

    def wait_for(self, n):
        with self.done:
            assert self.done.wait_for(lambda: len(self.images) + len(self.errors) >= n, timeout=10.0)


def test_submit_returns_while_a_slow_decode_runs_and_only_the_newest_waiting_image_is_decoded():
    started, release = threading.Event(), threading.Event()

    def decode(value):
        if value == 1:
            started.set()
            assert release.wait(10.0)
        return np.full((2, 2, 3), value, np.uint8)

    rec = Recorder()
    decoder = NewestImageDecoder(decode, rec.on_image, rec.on_error)
    try:
        assert decoder.submit(1, 10.0) is False
        assert started.wait(10.0)  # image 1 is being decoded, and takes as long as the test wants
        assert decoder.submit(2, 10.1) is False  # submit does not wait for the decode
        assert decoder.submit(3, 10.2) is True  # 2 was still waiting: replaced, never decoded
        assert decoder.superseded == 1 and rec.images == []
        release.set()
        rec.wait_for(2)
        assert rec.images == [(1, 10.0), (3, 10.2)]  # each with the time it was received
    finally:
        release.set()
        decoder.stop()


@pytest.mark.parametrize("error", [InputError("image could not be decoded: truncated"), ValueError("bug")])
def test_a_failed_decode_is_reported_and_the_next_image_still_decodes(error):
    def decode(value):
        if value == 0:
            raise error
        return np.full((2, 2, 3), value, np.uint8)

    rec = Recorder()
    decoder = NewestImageDecoder(decode, rec.on_image, rec.on_error)
    try:
        decoder.submit(0, 1.0)
        rec.wait_for(1)
        decoder.submit(7, 2.0)
        rec.wait_for(2)
    finally:
        decoder.stop()
    assert len(rec.errors) == 1 and rec.errors[0][1] == 1.0
    assert "could not be decoded" in rec.errors[0][0]
    assert rec.images == [(7, 2.0)]


def test_stop_ends_the_thread():
    decoder = NewestImageDecoder(lambda m: m, lambda *a: None, lambda *a: None)
    decoder.stop()
    assert not decoder._thread.is_alive()


def test_nothing_is_delivered_after_stop_and_a_failing_handler_does_not_end_the_thread(caplog):
    started, release = threading.Event(), threading.Event()

    def decode(value):
        if value == 1:
            started.set()
            release.wait(10.0)
        return np.full((2, 2, 3), value, np.uint8)

    rec = Recorder()
    decoder = NewestImageDecoder(decode, rec.on_image, rec.on_error)
    decoder.submit(1, 1.0)
    assert started.wait(10.0)
    decoder.stop(timeout=0.05)  # the decode outlives stop(): its result must not reach a closed node
    assert "a decode still runs" in caplog.text
    release.set()
    decoder._thread.join(10.0)
    assert rec.images == [] and not decoder._thread.is_alive()

    calls = []

    def failing(rgb, received):
        calls.append(received)
        if received == 1.0:
            raise RuntimeError("handler bug")

    decoder = NewestImageDecoder(lambda v: np.zeros((2, 2, 3), np.uint8), failing, rec.on_error)
    try:
        decoder.submit(0, 1.0)
        for _ in range(500):
            if calls:
                break
            threading.Event().wait(0.01)
        decoder.submit(0, 2.0)
        for _ in range(500):
            if len(calls) == 2:
                break
            threading.Event().wait(0.01)
    finally:
        decoder.stop()
    assert calls == [1.0, 2.0] and "handling a decoded image failed" in caplog.text
