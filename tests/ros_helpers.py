"""What the ROS tests share: spinning nodes on a background thread, and holding a compressed-image decode."""

import threading
from contextlib import contextmanager


@contextmanager
def spinning(*nodes, period: float = 0.05):
    """Spin `nodes` on one SingleThreadedExecutor in a daemon thread; stopped (joined) on exit, before the caller
    destroys the nodes. Yields the executor."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            executor.spin_once(timeout_sec=period)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield executor
    finally:
        stop.set()
        thread.join(timeout=5.0)


def hold_compressed_decoding(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make every JPEG/PNG decode (lapa_ros.converters.decode_compressed_image) wait until `release` is set;
    `started` is set when the first one begins. Returns (started, release)."""
    from lapa_ros import converters

    started, release = threading.Event(), threading.Event()
    decode = converters.decode_compressed_image

    def held(fmt, data):
        started.set()
        assert release.wait(20.0)
        return decode(fmt, data)

    monkeypatch.setattr(converters, "decode_compressed_image", held)
    return started, release
