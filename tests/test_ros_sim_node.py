"""sim_node in-process: commands move the arm, stale commands stop it, reset publishes the next instruction."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (install the `ros` extra)")
pytest.importorskip("metaworld", reason="sim_node needs Meta-World (install the `sim` extra)")

from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from lapa_ros import qos  # noqa: E402
from lapa_ros.converters import fill_twist  # noqa: E402
from lapa_ros.sim_node import SimNode  # noqa: E402
from ros_helpers import spinning  # noqa: E402

pytestmark = pytest.mark.ros


def test_sim_moves_on_fresh_commands_and_stops_on_stale_ones():
    rclpy.init()
    params = dict(tasks=["push-v3", "drawer-close-v3"], max_steps=400, step_rate=80.0, command_timeout=0.1,
                  publish_clock=False)
    node = SimNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    probe = rclpy.create_node("sim_probe")
    instructions = []
    probe.create_subscription(String, "instruction", lambda m: instructions.append(m.data), qos.instruction())
    twist_pub = probe.create_publisher(TwistStamped, "servo_node/delta_twist_cmds", qos.command())
    try:
        with spinning(node, probe, period=0.02):
            end = time.monotonic() + 5
            while not instructions and time.monotonic() < end:
                time.sleep(0.02)
            assert instructions == ["push the puck to the goal"]
            start = node.env.ee_position.copy()
            for _ in range(10):  # 0.25 s of +z commands at 0.4 m/s
                twist_pub.publish(fill_twist(TwistStamped(), [0.0, 0.0, 0.4], [0, 0, 0]))
                time.sleep(0.025)
            moved = node.env.ee_position.copy()
            assert moved[2] - start[2] > 0.01, (start, moved)
            time.sleep(0.6)  # the last command is now stale (> 0.1 s of sim time)
            held = node.env.ee_position.copy()
            time.sleep(0.4)
            assert np.abs(node.env.ee_position - held).max() < 0.002  # no motion on stale commands
            assert node.env.steps > 40 and node.active
            # Reset goes to the next task and publishes its instruction.
            client = probe.create_client(Trigger, "sim_node/reset")
            assert client.wait_for_service(timeout_sec=5)
            future = client.call_async(Trigger.Request())
            end = time.monotonic() + 30
            while not future.done() and time.monotonic() < end:
                time.sleep(0.02)
            assert future.result().success and "drawer-close-v3" in future.result().message
            end = time.monotonic() + 5
            while "close the drawer" not in instructions and time.monotonic() < end:
                time.sleep(0.02)
            assert instructions[-1] == "close the drawer"
    finally:
        node.close()
        node.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown()
