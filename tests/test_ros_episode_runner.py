"""episode_runner in-process on real rclpy: under a namespace it calls the namespaced simulator's services."""

import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (install the `ros` extra)")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from lapa_ros import qos  # noqa: E402
from lapa_ros.episode_runner import EpisodeRunner  # noqa: E402
from ros_helpers import spinning  # noqa: E402

pytestmark = pytest.mark.ros


def test_runner_under_a_namespace_calls_the_namespaced_sim_node():
    """`-r __ns:=/arm1`: the runner resets /arm1/sim_node (a stand-in with the real service and status topic) and
    reads /arm1/sim/status; nothing answers at /sim_node/reset."""
    rclpy.init(args=["--ros-args", "-r", "__ns:=/arm1"])
    sim = rclpy.create_node("sim_node")  # the stand-in simulator: one episode that is done at once
    status_pub = sim.create_publisher(DiagnosticArray, "sim/status", qos.status())
    resets = []

    def reset(request, response):
        resets.append(sim.get_fully_qualified_name())
        response.success, response.message = True, "episode 0: push-v3 seed 0: push the puck to the goal"
        return response

    def publish_status():
        if resets:
            status = DiagnosticStatus(name="lapa_sim", message="success", values=[
                KeyValue(key=k, value=v) for k, v in (("episode", "0"), ("task", "push-v3"), ("step", "7"),
                                                      ("success", "True"), ("done", "True"))])
            status_pub.publish(DiagnosticArray(status=[status]))

    sim.create_service(Trigger, "~/reset", reset)
    sim.create_timer(0.05, publish_status)
    runner = EpisodeRunner()
    try:
        with spinning(sim, period=0.02):
            t0 = time.monotonic()
            result = runner.run_episode()
            assert resets == ["/arm1/sim_node"] and result.success and result.steps == 7, result
            assert time.monotonic() - t0 < 30
    finally:
        runner.destroy_node()
        sim.destroy_node()
        rclpy.try_shutdown()
