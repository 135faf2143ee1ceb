"""recorder_node in-process on real rclpy: instructions from publishers of either durability, and its guards."""

import time
from contextlib import contextmanager

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (install the `ros` extra)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from lapa_ros import qos  # noqa: E402
from lapa_ros.converters import rgb_to_image  # noqa: E402
from lapa_ros.recorder_node import RecorderNode  # noqa: E402
from ros_helpers import hold_compressed_decoding, spinning  # noqa: E402

pytestmark = pytest.mark.ros


def wait(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.02)
    return predicate()


@contextmanager
def running(root, **params):
    """A latched instruction published before the recorder exists, then the recorder (dataset_root = root, and
    `params`) and a probe, spinning."""
    rclpy.init()
    probe = rclpy.create_node("recorder_probe")
    latched = probe.create_publisher(String, "instruction", qos.instruction())
    latched.publish(String(data="pick up the cube"))
    recorder = RecorderNode(parameter_overrides=[Parameter("dataset_root", value=str(root)),
                                                 *(Parameter(k, value=v) for k, v in params.items())])
    status = {}
    probe.create_subscription(DiagnosticArray, "recorder_node/status",
                              lambda m: status.update({kv.key: kv.value for kv in m.status[0].values},
                                                      message=m.status[0].message), qos.status())
    try:
        with spinning(recorder, probe):
            yield recorder, probe, latched, status
    finally:
        recorder.close()
        recorder.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture
def graph(tmp_path):
    with running(tmp_path / "ds", max_instruction_chars=30) as g:
        yield g


def call(probe, name):
    client = probe.create_client(Trigger, name)
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    assert wait(future.done)
    return future.result()


def test_recorder_hears_both_durabilities_and_refuses_a_too_long_instruction(graph):
    recorder, probe, latched, status = graph
    assert wait(lambda: recorder.instruction == "pick up the cube"), recorder.instruction  # latched, late joiner
    plain = probe.create_publisher(String, "instruction", 10)  # default QoS: reliable, volatile
    assert wait(lambda: plain.get_subscription_count() >= 1)
    plain.publish(String(data="x" * 31))
    assert wait(lambda: recorder.instruction == "x" * 31), recorder.instruction
    reply = call(probe, "recorder_node/start")
    assert not reply.success
    assert reply.message == "not starting: instruction too long (31 chars, max_instruction_chars 30)"
    assert not recorder.recorder.recording
    assert wait(lambda: status.get("last_problem", "").startswith("not starting: instruction too long"))
    assert float(status["last_problem_age_s"]) >= 0 and status["instruction_chars"] == "31"
    plain.publish(String(data="open the drawer"))
    assert wait(lambda: recorder.instruction == "open the drawer")
    assert call(probe, "recorder_node/start").success


def test_recorder_status_names_a_rejected_image(graph):
    recorder, probe, _latched, status = graph
    camera = probe.create_publisher(Image, "camera/image_raw", qos.camera_publisher())
    bad = rgb_to_image(np.zeros((8, 8, 3), np.uint8))
    bad.encoding = "yuv422"
    end = time.monotonic() + 10.0
    while time.monotonic() < end and "yuv422" not in status.get("last_problem", ""):
        camera.publish(bad)
        time.sleep(0.1)
    assert "rejected image" in status["last_problem"] and "yuv422" in status["last_problem"], status
    assert status["rejected_images"] != "0" and status["last_problem_age_s"] != ""


def test_recorder_records_an_episode_from_a_compressed_camera(tmp_path):
    """image_transport: compressed: PNG frames on <camera>/compressed become the episode's video."""
    import cv2
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import CompressedImage
    from std_srvs.srv import SetBool

    from lapa_learning.data import EpisodeDataset

    root = tmp_path / "ds"
    with running(root, image_transport="compressed", image_topic="camera/image_raw/compressed") as graph:
        recorder, probe, latched, _status = graph
        latched.publish(String(data="open the drawer"))
        camera = probe.create_publisher(CompressedImage, "camera/image_raw/compressed", qos.camera_publisher())
        teleop = probe.create_publisher(TwistStamped, "servo_node/delta_twist_cmds", qos.command())
        frame = np.zeros((32, 48, 3), np.uint8)
        frame[:, :24] = (200, 40, 10)  # red left half, blue right half: survives video encoding
        frame[:, 24:] = (10, 40, 200)
        png = CompressedImage(format="rgb8; png compressed bgr8",
                              data=cv2.imencode(".png", frame[:, :, ::-1])[1].tobytes())
        assert wait(lambda: recorder.instruction == "open the drawer")
        assert call(probe, "recorder_node/start").success
        end = time.monotonic() + 20.0
        while time.monotonic() < end and recorder.recorder.num_frames < 15:
            camera.publish(png)
            twist = TwistStamped()
            twist.twist.linear.x = 0.4
            teleop.publish(twist)
            time.sleep(0.03)
        assert recorder.recorder.num_frames >= 15 and recorder.rejected_images == 0
        client = probe.create_client(SetBool, "recorder_node/stop")
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(SetBool.Request(data=True))
        assert wait(future.done) and future.result().success, future.result()
    ds = EpisodeDataset(root)
    frames = ds.frames(0)
    assert ds.num_episodes == 1 and frames.shape[1:] == (32, 48, 3) and len(frames) >= 15
    assert frames[:, :, :20, 0].mean() > 150 and frames[:, :, 28:, 2].mean() > 150  # the camera's picture


def test_a_slow_compressed_image_decode_does_not_hold_the_recorder(tmp_path, monkeypatch):
    """The twist and gripper callbacks, the sample timer and the services must not wait for a JPEG/PNG decode."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    started, release = hold_compressed_decoding(monkeypatch)
    with running(tmp_path / "ds", image_transport="compressed", image_topic="camera/image_raw/compressed") as graph:
        recorder, probe, _latched, _status = graph
        try:
            camera = probe.create_publisher(CompressedImage, "camera/image_raw/compressed", qos.camera_publisher())
            png = CompressedImage(format="png", data=cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
            assert wait(lambda: (camera.publish(png), started.is_set())[1])
            assert wait(lambda: recorder.instruction == "pick up the cube")
            assert call(probe, "recorder_node/start").success  # answered while the decode is still blocked
            assert recorder.images_received == 0
            # images that come while one decodes: the newest waits, the ones it replaces are counted
            assert wait(lambda: (camera.publish(png), time.sleep(0.05), recorder.images_replaced >= 1)[2])
            release.set()
            # the first, the newest, and the replaced ones
            assert wait(lambda: recorder.images_received == 2 + recorder.images_replaced)
        finally:
            release.set()


def _stop(probe, success=True):
    from std_srvs.srv import SetBool

    client = probe.create_client(SetBool, "recorder_node/stop")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(SetBool.Request(data=success))
    assert wait(future.done)
    return future.result()


def _record_frames(recorder, probe, n=5):
    from geometry_msgs.msg import TwistStamped

    camera = probe.create_publisher(Image, "camera/image_raw", qos.camera_publisher())
    teleop = probe.create_publisher(TwistStamped, "servo_node/delta_twist_cmds", qos.command())
    end = time.monotonic() + 20.0
    while time.monotonic() < end and recorder.recorder.num_frames < n:
        camera.publish(rgb_to_image(np.zeros((16, 16, 3), np.uint8)))
        teleop.publish(TwistStamped())
        time.sleep(0.03)
    assert recorder.recorder.num_frames >= n


def test_recorder_keeps_the_episode_when_the_write_fails_and_a_later_stop_saves_it(tmp_path):
    """The dataset folder is replaced by a file during the episode: ~/stop fails with the reason (no crash), the
    frames are kept, and once the folder is back a second ~/stop writes the episode."""
    from lapa_learning.data import EpisodeDataset

    root = tmp_path / "ds"
    with running(root) as (recorder, probe, _latched, status):
        assert wait(lambda: recorder.instruction == "pick up the cube")
        assert call(probe, "recorder_node/start").success
        _record_frames(recorder, probe)
        root.rmdir()
        root.write_text("not a folder")
        reply = _stop(probe)
        assert not reply.success and "frames are kept: stop again to retry" in reply.message, reply.message
        assert not recorder.recorder.recording and recorder.recorder.num_frames >= 5
        assert wait(lambda: status.get("unsaved_episode") == "True"), status
        assert not call(probe, "recorder_node/start").success  # the kept episode first
        root.unlink()
        reply = _stop(probe, success=True)
        assert reply.success and "saved episode 0" in reply.message, reply.message
    assert EpisodeDataset(root).num_episodes == 1


@pytest.mark.parametrize("case", ["file", "uncreatable", "other fps"])
def test_recorder_refuses_a_bad_dataset_root_at_start_up(tmp_path, case):
    from lapa_learning.errors import ConfigError
    from lapa_learning.data import EpisodeWriter

    root = tmp_path / "ds"
    params = []
    if case == "file":
        root.write_text("x")
        match = "is a file, not a folder"
    elif case == "uncreatable":
        root = "/proc/lapa_recorder_test"
        match = "cannot be created"
    else:
        writer = EpisodeWriter(root, fps=10, image_size=(16, 16), action_names=("dx", "dy", "dz", "gripper"))
        writer.add_episode(np.zeros((3, 16, 16, 3), np.uint8), "push", actions=np.zeros((3, 4), np.float32))
        writer.close()
        params = [Parameter("fps", value=20.0)]
        match = "fps is 10.0 in the dataset but 20.0 here"
    rclpy.init()
    try:
        with pytest.raises(ConfigError, match=f"parameter dataset_root: .*{match}"):
            RecorderNode(parameter_overrides=[Parameter("dataset_root", value=str(root)), *params])
    finally:
        rclpy.try_shutdown()
