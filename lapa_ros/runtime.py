"""The `main()` shared by every node: init, spin, clean shutdown, one-line errors at start-up."""

from __future__ import annotations

import os
import sys
import tempfile


def prepare_environment() -> None:
    """Defaults that must be set before rclpy starts (an explicit setting by the user wins)."""
    # Keep discovery on this machine unless told otherwise (set SUBNET to reach a camera on another host).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # rclpy's logging needs HOME or ROS_LOG_DIR.
    if not os.environ.get("HOME") and not os.environ.get("ROS_LOG_DIR"):
        os.environ["ROS_LOG_DIR"] = os.path.join(tempfile.gettempdir(), "lapa_ros_logs")


def run_node(name: str, factory, args=None) -> int:
    """Create the node with `factory()`, spin it until Ctrl-C or shutdown; returns the exit code.

    A LapaError raised while the node is built (missing checkpoint, bad parameter) is printed as one line and
    gives exit code 2. The node's `close()` (if any) runs before the node is destroyed.
    """
    prepare_environment()
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from lapa_learning.errors import LapaError

    rclpy.init(args=args)
    node = None
    try:
        try:
            node = factory()
        except LapaError as err:
            print(f"{name}: error: {err}", file=sys.stderr, flush=True)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        return 0
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
