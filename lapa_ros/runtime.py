"""The `main()` shared by every node: init, spin, clean shutdown, one-line errors at start-up.

Executor: every node takes the parameter `executor` ("events", the default, or "single").
"events" is rclpy's C++ EventsExecutor (rclpy.experimental), which cuts the per-message overhead of the
Python SingleThreadedExecutor (about 0.5-1 ms per image -> twist loop here, see results/ros_loop.json). It is
driven with `spin_once(timeout)` in a loop, never with `spin()`: in the rclpy of ROS 2 Kilted (9.1.2 wheels)
`EventsExecutor.spin()` busy-loops (about 65% of a core while idle) and never answers service requests, which
is what made sim_node's ~/reset go silent; `spin_once(timeout)` answers services in ~1 ms, runs timers (steady
and ROS time) and sleeps while idle. Where the EventsExecutor is missing (older rclpy) or `executor:=single`
is given, the SingleThreadedExecutor is used. The nodes use one callback group and do their heavy work in
their own threads, so the EventsExecutor ignoring callback groups changes nothing for them.

Shutdown: SIGINT (Ctrl-C) and SIGTERM only set a flag; the spin loop sees it within SPIN_PERIOD, and then the
node's close() runs, the node is destroyed and the context shut down (which closes rclpy's log file), in that
order. The process then flushes its output streams and ends with os._exit: the interpreter's own teardown of
torch, transformers and MuJoCo took ~0.9 s of a ~1 s SIGTERM stop on an idle machine and longer on a busy one,
and there is nothing left for it to do (bench/node_shutdown.py, results/node_shutdown.json).
rclpy's own signal handler is not installed: it shuts the context down from another thread while a callback may
be running (a publish then raises "context is invalid") and raises KeyboardInterrupt wherever the main thread
happens to be, close() included. A recorder that got SIGINT once exited with code 1 in CI that way (the log was
not kept; these are the two ways it could). Under `ros2 launch`, Ctrl-C reaches a node twice (from the terminal
and from launch), so only a third signal falls back to the default action and ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading


def prepare_environment() -> None:
    """Defaults that must be set before rclpy starts (an explicit setting by the user wins)."""
    import faulthandler

    # A crash in C code (rclpy, DDS, MuJoCo, torch) prints every thread's Python stack instead of a bare exit -11.
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable()
        except (AttributeError, RuntimeError, ValueError, OSError):  # no usable stderr (closed, None): no stacks
            pass
    # Keep discovery on this machine unless told otherwise (set SUBNET to reach a camera on another host).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # rclpy's logging needs HOME or ROS_LOG_DIR.
    if not os.environ.get("HOME") and not os.environ.get("ROS_LOG_DIR"):
        os.environ["ROS_LOG_DIR"] = os.path.join(tempfile.gettempdir(), "lapa_ros_logs")


EXECUTORS = ("events", "single")
SPIN_PERIOD = 0.1  # s: spin_once timeout, so also the longest wait before a stop signal is seen


def make_executor(kind: str = "events", context=None):
    """(executor, the kind actually used). "events" falls back to "single" when rclpy has no EventsExecutor."""
    from lapa_learning.errors import ConfigError

    if kind not in EXECUTORS:
        raise ConfigError(f"parameter executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            kind = "single"
        else:
            return EventsExecutor(context=context), "events"
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor(context=context), "single"


def spin(executor, context=None, stop=None) -> None:
    """Spin until the context shuts down (Ctrl-C, SIGTERM) or `stop()` is true: spin_once in a loop (see above)."""
    import rclpy

    while rclpy.ok(context=context) and not (stop is not None and stop()):
        executor.spin_once(timeout_sec=SPIN_PERIOD)


def executor_kind(node, default: str = "events") -> str:
    """The node's `executor` parameter (declared here when the node did not declare it)."""
    from rcl_interfaces.msg import ParameterDescriptor

    from lapa_learning.errors import ConfigError

    if not node.has_parameter("executor"):  # dynamic typing: `-p executor:=5` is our one-line error, not rclpy's
        node.declare_parameter("executor", default, ParameterDescriptor(dynamic_typing=True))
    value = node.get_parameter("executor").value
    if value not in EXECUTORS:
        raise ConfigError(f"parameter executor must be one of {', '.join(EXECUTORS)}, got {value!r}")
    return value


def install_stop_handlers(patience: int = 2) -> threading.Event:
    """SIGINT and SIGTERM set the returned event; the signal after `patience` of them acts as the default."""
    stop = threading.Event()
    received = []

    def request_stop(signum, _frame):
        stop.set()
        received.append(signum)
        if len(received) >= patience:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    return stop


def exit_now(code: int):
    """End the process at once with `code`, skipping the interpreter's teardown (see Shutdown above)."""
    import ctypes
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    ctypes.CDLL(None).fflush(None)  # C stdio buffers too (rcutils writes its console log with them)
    os._exit(code)


def run_node(name: str, factory, args=None, exit_process: bool = True) -> int:
    """Create the node with `factory()`, spin it until Ctrl-C, SIGTERM or shutdown; then exit with its code.

    A LapaError raised while the node is built (missing checkpoint, bad parameter) is printed as one line and
    gives exit code 2. The node's `close()` (if any) runs before the node is destroyed. With
    `exit_process=False` the exit code is returned instead of ending the process.
    """
    code = _run(name, factory, args)
    if exit_process:
        exit_now(code)
    return code


def _run(name: str, factory, args) -> int:
    prepare_environment()
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from lapa_learning.errors import LapaError

    stop = install_stop_handlers()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        try:
            node = factory()
            executor, kind = make_executor(executor_kind(node))
        except LapaError as err:
            print(f"{name}: error: {err}", file=sys.stderr, flush=True)
            return 2
        node.get_logger().info(f"executor: {kind}")
        executor.add_node(node)
        try:
            spin(executor, stop=stop.is_set)
        except ExternalShutdownException:
            pass
        return 0
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            if executor is not None:
                executor.remove_node(node)
                executor.shutdown()
            node.destroy_node()
        else:  # construction failed: free the half-built node (callbacks bound to it make cycles) before shutdown
            import gc

            gc.collect()
        rclpy.try_shutdown()
