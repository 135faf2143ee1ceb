"""Spin rclpy nodes on a background thread for the ROS tests (the one copy the test files share)."""

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
