"""The ROS nodes' pure logic, tested without a running ROS graph: converters, safety gate, params, recording."""

import errno
import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from lapa_learning.data.sync import TwistActionMap
from lapa_learning.errors import ConfigError, InputError

pytest.importorskip("rclpy", reason="lapa_ros imports rclpy (install the `ros` extra)")

from lapa_ros import converters  # noqa: E402
from lapa_ros.converters import image_to_rgb, rgb_to_image, stamp_to_seconds  # noqa: E402
from lapa_ros.params import (  # noqa: E402
    PolicyParams, RecorderParams, SimParams, _convert, defaults, unknown_parameters)
from lapa_ros.recording import EpisodeRecorder, RecordingError  # noqa: E402
from lapa_ros.safety import CommandGate, Limits, action_to_command, clamp_norm, shorten  # noqa: E402


# ------------------------------------------------------------------------------------------------ converters
def _msg(rgb, encoding, pad=0):
    h, w, _ = rgb.shape
    if encoding in ("rgb8", "bgr8"):
        px = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    elif encoding in ("rgba8", "bgra8"):
        base = rgb if encoding == "rgba8" else rgb[:, :, ::-1]
        px = np.concatenate([base, np.full((h, w, 1), 255, np.uint8)], axis=2)
    else:
        px = rgb[:, :, :1]
    c = px.shape[2]
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = px.reshape(h, w * c)
    return SimpleNamespace(height=h, width=w, encoding=encoding, step=w * c + pad, data=rows.tobytes())


class _NumpyBridge:
    """A stand-in for ROS 2's cv_bridge.CvBridge that converts correctly (numpy only) and counts its calls."""

    calls = 0

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        assert desired_encoding == "rgb8"
        type(self).calls += 1
        return converters.decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data)

    def cv2_to_imgmsg(self, cvim, encoding="passthrough"):
        type(self).calls += 1
        return converters._image_msg(cvim.shape[0], cvim.shape[1], encoding, cvim.shape[1] * 3, cvim.tobytes())


class _SwapsChannels(_NumpyBridge):
    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        return super().imgmsg_to_cv2(msg, desired_encoding)[:, :, ::-1]  # wrong data, no error


class _IgnoresStep(_NumpyBridge):
    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):  # like ROS 1's: rows padding not handled
        c = converters.ENCODINGS[msg.encoding][0]
        rows = np.frombuffer(bytes(msg.data), np.uint8)[: msg.height * msg.width * c]
        fixed = SimpleNamespace(height=msg.height, width=msg.width, encoding=msg.encoding, step=msg.width * c,
                                data=rows.tobytes())
        return super().imgmsg_to_cv2(fixed, desired_encoding)


class _Ros1OnNumpy2(_NumpyBridge):
    def cv2_to_imgmsg(self, cvim, encoding="passthrough"):
        return cvim.tostring()  # AttributeError on numpy 2, as the PyPI cv-bridge (ROS 1) does


def _install_fake_bridge(monkeypatch, bridge_class):
    module = types.ModuleType("cv_bridge")
    if bridge_class is not None:
        module.CvBridge = bridge_class
    monkeypatch.setitem(sys.modules, "cv_bridge", module)
    monkeypatch.delenv("LAPA_ROS_CV_BRIDGE", raising=False)
    return converters.select_bridge(refresh=True)


@pytest.fixture(params=["hand-written", "cv_bridge"])
def converter(request, monkeypatch):
    """Run a converter test with the hand-written converter and with a (fake) working cv_bridge."""
    if request.param == "cv_bridge":
        _NumpyBridge.calls = 0
        bridge, why = _install_fake_bridge(monkeypatch, _NumpyBridge)
        assert isinstance(bridge, _NumpyBridge) and why == "cv_bridge"
    else:
        monkeypatch.setenv("LAPA_ROS_CV_BRIDGE", "0")
        assert converters.select_bridge(refresh=True)[0] is None
    yield request.param
    monkeypatch.undo()
    converters.select_bridge(refresh=True)


@pytest.mark.parametrize("bridge_class, why", [
    (None, "cv_bridge not importable: ImportError"),
    (_SwapsChannels, "failed its self-check: imgmsg_to_cv2(rgb8, step 15 -> rgb8)"),
    (_IgnoresStep, "failed its self-check: imgmsg_to_cv2(rgb8, step 18"),
    (_Ros1OnNumpy2, "failed its self-check: AttributeError"),
])
def test_broken_cv_bridge_falls_back_to_the_hand_written_converter(monkeypatch, rng, bridge_class, why):
    try:
        bridge, reason = _install_fake_bridge(monkeypatch, bridge_class)
        assert bridge is None and reason.startswith("hand-written converter") and why in reason
        assert converters.converter_name() == reason  # chosen once, then cached
        rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        np.testing.assert_array_equal(image_to_rgb(_msg(rgb[:, :, ::-1], "rgb8", pad=2)), rgb[:, :, ::-1])
    finally:
        monkeypatch.undo()
        converters.select_bridge(refresh=True)


def test_working_cv_bridge_is_used_and_can_be_disabled(monkeypatch, rng):
    try:
        bridge, _ = _install_fake_bridge(monkeypatch, _NumpyBridge)
        assert bridge is not None
        _NumpyBridge.calls = 0
        rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        out = image_to_rgb(_msg(rgb, "bgr8", pad=1))
        np.testing.assert_array_equal(out, rgb)
        assert _NumpyBridge.calls == 1 and out.flags.owndata and out.flags.writeable
        rgb_to_image(rgb)
        assert _NumpyBridge.calls == 2
        monkeypatch.setenv("LAPA_ROS_CV_BRIDGE", "0")
        assert converters.select_bridge(refresh=True) == (None, "hand-written converter (LAPA_ROS_CV_BRIDGE=0)")
        image_to_rgb(_msg(rgb, "rgb8"))
        assert _NumpyBridge.calls == 2
    finally:
        monkeypatch.undo()
        converters.select_bridge(refresh=True)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_image_to_rgb_color_encodings(rng, encoding, pad, converter):
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = image_to_rgb(_msg(rgb, encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_image_to_rgb_mono(rng, converter):
    gray = rng.integers(0, 256, (4, 6, 1), dtype=np.uint8).repeat(3, axis=2)
    np.testing.assert_array_equal(image_to_rgb(_msg(gray, "mono8")), gray)


def test_image_to_rgb_rejects_bad_input(rng, converter):
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    msg = _msg(rgb, "rgb8")
    with pytest.raises(InputError, match="encoding '16UC1' is not supported.*rgb8"):
        image_to_rgb(SimpleNamespace(**{**vars(msg), "encoding": "16UC1"}))
    with pytest.raises(InputError, match="expected step\\*height"):
        image_to_rgb(SimpleNamespace(**{**vars(msg), "height": 5}))
    with pytest.raises(InputError, match="step 4 is shorter"):
        image_to_rgb(SimpleNamespace(**{**vars(msg), "step": 4}))
    with pytest.raises(InputError, match="empty"):
        image_to_rgb(SimpleNamespace(**{**vars(msg), "width": 0}))


def test_rgb_to_image_round_trip_with_real_message(rng, converter):
    rgb = rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, frame_id="cam")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.header.frame_id) == ("rgb8", 5, 8, 24, "cam")
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    with pytest.raises(InputError, match="uint8 RGB"):
        rgb_to_image(rgb.astype(np.float32))
    assert stamp_to_seconds(SimpleNamespace(sec=3, nanosec=500_000_000)) == 3.5


def test_compressed_images_png_exact_jpeg_close_and_garbage_refused(rng):
    import cv2

    rgb = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    png = cv2.imencode(".png", rgb[:, :, ::-1])[1]  # what image_transport's compressed plugin sends: bgr8 inside
    out = converters.compressed_to_rgb(SimpleNamespace(format="rgb8; png compressed bgr8", data=png.tobytes()))
    np.testing.assert_array_equal(out, rgb)
    smooth = np.repeat(np.repeat(rgb[:2, :2], 8, axis=0), 8, axis=1)  # 16x16 flat blocks: JPEG keeps them closely
    jpg = cv2.imencode(".jpg", smooth[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    out = converters.compressed_to_rgb(SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=jpg.tobytes()))
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - smooth).mean() < 8
    import array  # rclpy hands uint8[] fields over as array.array('B')
    out = converters.compressed_to_rgb(SimpleNamespace(format="png", data=array.array("B", png.tobytes())))
    np.testing.assert_array_equal(out, rgb)
    for data in (b"", b"not an image at all"):
        with pytest.raises(InputError, match="could not be decoded; expected jpeg or png"):
            converters.compressed_to_rgb(SimpleNamespace(format="jpeg", data=data))


def test_image_input_picks_the_message_type_of_the_transport():
    from sensor_msgs.msg import CompressedImage, Image

    assert converters.image_input("raw") == (Image, image_to_rgb)
    assert converters.image_input("compressed") == (CompressedImage, converters.compressed_to_rgb)
    with pytest.raises(InputError, match="image transport 'theora' is not supported"):
        converters.image_input("theora")


# ------------------------------------------------------------------------------------------------ safety
MAP = TwistActionMap(("dx", "dy", "dz", "gripper"), linear_scale=0.8)
LIM = Limits(max_linear_speed=0.5, max_angular_speed=0.5, image_timeout=0.5)


def test_scale_mismatch_names_what_differs_and_the_speed_it_gives():
    from lapa_ros.safety import scale_mismatch

    recorded = {"linear_scale": 0.1, "angular_scale": 0.5, "action_limit": 1.0}
    same = TwistActionMap(("dx", "dy", "dz", "gripper"), 0.1, 0.5)
    assert scale_mismatch(same, recorded) == "" and scale_mismatch(same, None) == ""
    fast = TwistActionMap(("dx", "dy", "dz", "gripper"), 0.8, 1.0)
    text = scale_mismatch(fast, recorded)
    assert "linear_scale 0.8 m/s per unit, recorded with 0.1 (8x the demonstrated speed)" in text
    assert "angular_scale 1" not in text  # no angular action dims: that scale is never used
    turning = TwistActionMap(("dx", "dy", "dz", "dyaw", "gripper"), 0.1, 0.25)
    assert "angular_scale 0.25 rad/s per unit, recorded with 0.5 (0.5x" in scale_mismatch(turning, recorded)


def test_clamp_norm_keeps_direction():
    v = clamp_norm(np.array([3.0, 4.0, 0.0]), 1.0)
    np.testing.assert_allclose(v, [0.6, 0.8, 0.0])
    np.testing.assert_allclose(clamp_norm(np.array([0.1, 0, 0]), 1.0), [0.1, 0, 0])


def test_action_to_command_scales_clamps_and_rejects_nan():
    cmd = action_to_command([1.0, 1.0, 1.0, 5.0], MAP, LIM)
    assert np.linalg.norm(cmd.linear) == pytest.approx(0.5)
    assert cmd.gripper == 1.0  # clamped to gripper_max
    small = action_to_command([0.1, 0.0, 0.0, -1.0], MAP, LIM)
    np.testing.assert_allclose(small.linear, [0.08, 0, 0])
    assert action_to_command([np.nan, 0, 0, 0], MAP, LIM) is None
    assert action_to_command([np.inf, 0, 0, 0], MAP, LIM) is None


def test_gate_reasons_in_order():
    gate = CommandGate(MAP, LIM, enabled=False)
    assert gate.decide(0.0)[1].startswith("not ready")
    gate.set_ready(None)
    assert gate.decide(0.0)[1] == "disabled"
    gate.set_enabled(True)
    assert gate.decide(0.0)[1] == "no image received"
    gate.on_image(1.0)
    assert gate.decide(1.1)[1] == "no instruction"
    gate.on_instruction("   ", 1.1)
    assert gate.decide(1.1)[1] == "instruction empty"
    assert gate.on_instruction("push the puck", 1.1) is True
    assert gate.on_instruction("push the puck", 1.2) is False  # same text: no reset needed
    assert gate.decide(1.2)[1] == "waiting for first action"
    assert gate.input_problem(1.2) == ""
    gate.on_action([0.5, 0, 0, 1.0], image_time=1.0)
    cmd, reason = gate.decide(1.3)
    assert reason == "" and cmd.linear[0] == pytest.approx(0.4) and cmd.gripper == 1.0
    assert gate.decide(1.6)[1].startswith("image stale")  # newest image 0.6 s old
    gate.on_image(1.6)
    assert gate.decide(1.6)[1].startswith("command stale")  # the command was computed from the 1.0 s image
    gate.on_action([np.nan, 0, 0, 1.0], image_time=1.6)
    cmd, reason = gate.decide(1.6)
    assert reason == "model output not finite" and cmd.is_zero and cmd.gripper is None
    gate.on_action([0.1, 0, 0, 1.0], image_time=1.6)  # a finite answer clears it
    assert gate.decide(1.6)[1] == ""
    gate.set_enabled(False)
    cmd, reason = gate.decide(1.6)
    assert reason == "disabled" and cmd.is_zero


def test_gate_instruction_timeout_and_reset():
    gate = CommandGate(MAP, Limits(instruction_timeout=2.0), enabled=True)
    gate.set_ready(None)
    gate.on_instruction("open the drawer", 0.0)
    gate.on_image(2.5)
    assert gate.decide(2.5)[1].startswith("instruction stale")
    gate.on_instruction("close the drawer", 2.5)
    gate.on_action([0, 0, 0, 0], 2.5)
    gate.reset()
    assert gate.decide(2.5)[1] == "waiting for first action"


def test_gate_says_image_rejected_while_only_bad_images_arrive():
    gate = CommandGate(MAP, LIM, enabled=True)
    gate.set_ready(None)
    gate.on_instruction("push the puck", 0.0)
    gate.on_rejected_image("image size 0x0 is empty", 1.0)
    assert gate.decide(1.2)[1] == "image rejected: image size 0x0 is empty"  # not "no image received"
    gate.on_image(2.0)
    gate.on_action([0.1, 0, 0, 1.0], image_time=2.0)
    assert gate.decide(2.1)[1] == ""
    gate.on_rejected_image("encoding 'yuv422' is not supported", 2.2)
    assert gate.decide(2.3)[1] == ""  # a fresh good image still counts
    gate.on_rejected_image("encoding 'yuv422' is not supported", 2.7)
    assert gate.decide(2.8)[1] == "image rejected: encoding 'yuv422' is not supported"  # instead of "image stale"
    assert gate.decide(3.5)[1].startswith("image stale")  # the rejection is old too: nothing arrives at all


def test_gate_refuses_an_instruction_longer_than_the_limit():
    gate = CommandGate(MAP, Limits(max_instruction_chars=20), enabled=True)
    gate.set_ready(None)
    gate.on_image(0.0)
    gate.on_instruction("x" * 21, 0.0)
    assert gate.input_problem(0.0) == "instruction too long (21 chars, max_instruction_chars 20)"
    gate.on_action([0.5, 0, 0, 1.0], image_time=0.0)  # an answer that raced the new instruction
    cmd, reason = gate.decide(0.1)
    assert reason.startswith("instruction too long") and cmd.is_zero and cmd.gripper is None
    assert gate.on_instruction("x" * 20, 0.2)  # at the limit: fine
    gate.on_action([0.5, 0, 0, 1.0], image_time=0.2)
    assert gate.decide(0.3)[1] == ""


def test_shorten_cuts_long_texts_for_the_log():
    assert shorten("push the puck") == "'push the puck'"
    line = shorten("a" * 100_000)
    assert len(line) < 120 and line.endswith("... (100000 chars)")


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_instruction_chars=0), "max_instruction_chars"),
    (dict(max_linear_speed=0.0), "max_linear_speed"),
    (dict(image_timeout=float("nan")), "image_timeout"),
    (dict(instruction_timeout=-1.0), "instruction_timeout"),
    (dict(gripper_min=1.0, gripper_max=0.0), "gripper_min"),
])
def test_limits_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Limits(**kwargs)


# ------------------------------------------------------------------------------------------------ params
def test_params_defaults_and_validation():
    p = PolicyParams()
    assert p.enabled is False and p.twist_topic == "servo_node/delta_twist_cmds"
    r = RecorderParams(dataset_root="/tmp/x")  # records in the policy node's units (docs/ros.md, config/record.yaml)
    assert (r.linear_scale, r.angular_scale) == (p.linear_scale, p.angular_scale) == (0.1, 0.5)
    with pytest.raises(ConfigError, match="control_rate"):
        PolicyParams(control_rate=0.0)
    with pytest.raises(ConfigError, match="dataset_root is required"):
        RecorderParams()
    with pytest.raises(ConfigError, match="image_size"):
        RecorderParams(dataset_root="/tmp/x", image_size=(64,))
    with pytest.raises(ConfigError, match="max_instruction_chars"):
        PolicyParams(max_instruction_chars=0)
    with pytest.raises(ConfigError, match="chunk_blend must be ensemble, switch or off, got 'mean'"):
        PolicyParams(chunk_blend="mean")
    with pytest.raises(ConfigError, match="chunk_decay"):
        PolicyParams(chunk_decay=-0.1)
    with pytest.raises(ConfigError, match="chunk_prefetch"):
        PolicyParams(chunk_prefetch=-1)
    with pytest.raises(ConfigError, match="max_instruction_chars"):
        RecorderParams(dataset_root="/tmp/x", max_instruction_chars=-1)
    with pytest.raises(ConfigError, match="tasks"):
        SimParams(tasks=())
    with pytest.raises(ConfigError, match=r"parameter tasks: unknown Meta-World task\(s\) \['push'\]; expected names"):
        SimParams(tasks=("reach-v3", "push"))
    with pytest.raises(ConfigError, match="parameter camera: unknown camera 'top'; expected one of front"):
        SimParams(camera="top")
    with pytest.raises(ConfigError, match="parameter image_size must be in"):
        SimParams(image_size=8)
    with pytest.raises(ConfigError, match="parameter max_steps must be in"):
        SimParams(max_steps=600)
    assert SimParams(tasks=("reach-v3", "door-close-v3"), camera="front_left").tasks == ("reach-v3", "door-close-v3")
    assert PolicyParams().image_transport == "raw"
    for params in (PolicyParams, lambda **kw: RecorderParams(dataset_root="/tmp/x", **kw)):
        assert params(image_transport="compressed").image_transport == "compressed"
        with pytest.raises(ConfigError, match="image_transport must be raw .* or compressed .*got 'jpeg'"):
            params(image_transport="jpeg")
    assert defaults(SimParams)["tasks"] == ("push-v3",)


def test_param_conversion():
    assert _convert("rate", 10, "float") == 10.0 and isinstance(_convert("rate", 10, "float"), float)
    assert _convert("n", 3.0, "int") == 3
    assert _convert("tasks", ["a", "b"], "list") == ("a", "b")
    for value, kind in ((True, "float"), (3.5, "int"), ("yes", "bool"), (1, "str"), ("ab", "list"),
                        (float("inf"), "int"), (float("nan"), "int"), ("abc", "int")):
        with pytest.raises(ConfigError, match="must be a"):
            _convert("x", value, kind)
    # ROS reads `chunk_blend: off` (YAML 1.1) as false: that is "off", for chunk_blend only.
    assert _convert("chunk_blend", False, "str") == "off" and PolicyParams(chunk_blend="off").chunk_blend == "off"
    with pytest.raises(ConfigError, match="parameter device must be a str, got False"):
        _convert("device", False, "str")
    with pytest.raises(ConfigError, match="must be a str, got True"):
        _convert("chunk_blend", True, "str")


def test_unknown_parameter_names_are_named_with_the_nearest_known_ones():
    known = [f for f in defaults(PolicyParams)]
    assert unknown_parameters({"max_linear_speed": 1, "use_sim_time": 1, "qos_overrides./clock.depth": 1,
                               "executor": 1, "start_type_description_service": 1}, known) == ""
    problem = unknown_parameters({"max_linear_sped": 0.01, "zzz": 1}, known)
    assert problem.startswith("unknown parameters max_linear_sped (did you mean max_linear_speed"), problem
    assert "zzz (no similar name)" in problem and "\n" not in problem


def test_runner_and_sim_parameters_are_checked():
    pytest.importorskip("rosgraph_msgs", reason="sim_node publishes /clock")
    from lapa_ros.episode_runner import RunnerParams

    for bad, match in ((dict(episodes=0), "episodes must be >= 1, got 0"),
                       (dict(episode_timeout=0.0), "episode_timeout must be a positive number"),
                       (dict(sim_node="/"), "sim_node must name a node")):
        with pytest.raises(ConfigError, match=match):
            RunnerParams(**bad)
    with pytest.raises(ConfigError, match=r"parameter seed must be an integer in \[0, "):
        SimParams(seed=-5)


def test_sim_time_messages_never_jump_back():
    pytest.importorskip("rosgraph_msgs", reason="sim_node publishes /clock")
    from lapa_ros.sim_node import _time_msg

    for seconds, expected in ((1.9999999999999996, (2, 0)), (0.9999999999, (1, 0)), (1.9999999994, (1, 999_999_999)),
                              (2.5, (2, 500_000_000)), (1.0 + 1 / 80, (1, 12_500_000)), (0.0, (0, 0))):
        t = _time_msg(seconds)
        assert (t.sec, t.nanosec) == expected, (seconds, t)
    stamps = [_time_msg(1.0 + i / 80) for i in range(2000)]  # sim_node's steps: strictly increasing, no 1 s jump back
    ns = [t.sec * 10**9 + t.nanosec for t in stamps]
    assert all(b > a for a, b in zip(ns, ns[1:])) and all(t.nanosec < 10**9 for t in stamps)


def test_config_files_match_the_dataclasses():
    """Every key in config/*.yaml is a parameter of that node (a typo would be silently ignored by ROS)."""
    from pathlib import Path

    import yaml

    from lapa_ros.episode_runner import RunnerParams
    from lapa_ros.params import TeleopParams

    known = {"policy_node": PolicyParams, "recorder_node": RecorderParams, "sim_node": SimParams,
             "expert_teleop": TeleopParams, "episode_runner": RunnerParams}
    config = Path(__file__).resolve().parents[1] / "config"
    files = sorted(config.glob("*.yaml"))
    assert files
    for path in files:
        for key, body in yaml.safe_load(path.read_text()).items():
            # `/**/policy_node`: the node in any namespace (a plain `policy_node:` key is dropped under -r __ns:=...)
            assert key.startswith("/**/"), f"{path.name}: {key} does not apply under a namespace; key /**/{key}"
            node = key[len("/**/"):]
            assert node in known, f"{path.name}: unknown node {node}"
            names = set(defaults(known[node])) | {"use_sim_time"}
            extra = set(body["ros__parameters"]) - names
            assert not extra, f"{path.name}: {node} has unknown parameters {extra}"


# ------------------------------------------------------------------------------------------------ recording
def _frames(rng, n, size=(16, 16)):
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_recorder_saves_discards_and_appends(tmp_path, rng):
    from lapa_learning.data import EpisodeDataset

    root = tmp_path / "ds"
    rec = EpisodeRecorder(root, fps=10, mapping=MAP)
    with pytest.raises(RecordingError, match="not recording"):
        rec.stop(True)
    rec.start()
    with pytest.raises(RecordingError, match="already recording"):
        rec.start()
    with pytest.raises(RecordingError, match="no instruction"):
        rec.add_frame(0.0, _frames(rng, 1)[0], np.zeros(4), None)
    actions = []
    for i, frame in enumerate(_frames(rng, 5)):
        a = np.array([0.1 * i, 0, 0, 1], np.float32)
        actions.append(a)
        rec.add_frame(i * 0.1, frame, a, "push the puck" if i == 0 else "changed later: ignored")
    index, message = rec.stop(success=True)
    assert index == 0 and "5 frames" in message
    rec.start()
    rec.add_frame(0.0, _frames(rng, 1)[0], actions[0], "push the puck")
    assert "1 frames" in rec.discard()
    rec.start()
    rec.add_frame(0.0, _frames(rng, 1)[0], actions[0], "open the drawer")
    with pytest.raises(RecordingError, match="only 1 frame"):
        rec.stop(False)
    rec.close()
    # A second recorder (a new session) appends.
    rec2 = EpisodeRecorder(root, fps=10, mapping=MAP)
    assert rec2.next_index() == 1
    rec2.start()
    for i, frame in enumerate(_frames(rng, 3)):
        rec2.add_frame(i * 0.1, frame, actions[i], "open the drawer")
    assert rec2.stop(False)[0] == 1
    rec2.start()
    assert "not saved" in rec2.close()  # shutting down mid-episode drops only that episode
    ds = EpisodeDataset(root)
    assert ds.num_episodes == 2 and [e.success for e in ds.episodes] == [True, False]
    np.testing.assert_allclose(ds.actions(0), np.stack(actions), atol=1e-6)
    assert ds.episodes[1].instruction == "open the drawer"


def test_recorder_refuses_too_long_instructions(tmp_path, rng):
    rec = EpisodeRecorder(tmp_path / "ds", fps=10, mapping=MAP, max_instruction_chars=10)
    with pytest.raises(RecordingError, match=r"not starting: instruction too long \(11 chars"):
        rec.start("x" * 11)
    assert not rec.recording
    rec.start("short")  # started before a new instruction arrives: checked again at the first frame
    with pytest.raises(RecordingError, match="instruction too long"):
        rec.add_frame(0.0, _frames(rng, 1)[0], np.zeros(4), "y" * 11)
    assert rec.num_frames == 0
    rec.add_frame(0.0, _frames(rng, 1)[0], np.zeros(4), "y" * 10)
    assert rec.num_frames == 1


def test_recorder_resizes_and_bounds_length(tmp_path, rng):
    rec = EpisodeRecorder(tmp_path / "ds", fps=10, mapping=MAP, image_size=(8, 12), max_frames=3)
    rec.start()
    results = [rec.add_frame(i * 0.1, f, np.zeros(4), "push") for i, f in enumerate(_frames(rng, 4, (20, 30)))]
    assert results == [True, True, False, False] and rec.num_frames == 3
    rec.stop(None)
    from lapa_learning.data import EpisodeDataset

    assert EpisodeDataset(tmp_path / "ds").frames(0).shape == (3, 8, 12, 3)


def test_recorder_reports_a_full_disk_and_keeps_earlier_episodes(tmp_path, rng, monkeypatch):
    from lapa_learning.data import EpisodeDataset, writer

    rec = EpisodeRecorder(tmp_path / "ds", fps=10, mapping=MAP)
    rec.start()
    for i, f in enumerate(_frames(rng, 3)):
        rec.add_frame(i * 0.1, f, np.zeros(4), "push")
    rec.stop(True)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "write_video", full_disk)
    rec.start()
    for i, f in enumerate(_frames(rng, 3)):
        rec.add_frame(i * 0.1, f, np.zeros(4), "push")
    with pytest.raises(RecordingError, match="disk is full.*3 frames are kept: stop again to retry"):
        rec.stop(True)
    assert EpisodeDataset(tmp_path / "ds").num_episodes == 1 and rec.saved == 1
    assert rec.unsaved and rec.num_frames == 3 and not rec.recording
    with pytest.raises(RecordingError, match="could not be written; stop again to retry"):
        rec.start()  # the kept frames first
    assert rec.add_frame(0.5, _frames(rng, 1)[0], np.zeros(4), "push") is False  # stopped: no more frames
    monkeypatch.undo()  # space is back: the retry writes the kept episode with the next index
    assert rec.stop(False)[0] == 1 and not rec.unsaved and rec.num_frames == 0
    assert EpisodeDataset(tmp_path / "ds").episodes[1].success is False
    rec.start()
    for i, f in enumerate(_frames(rng, 2)):
        rec.add_frame(i * 0.1, f, np.zeros(4), "push")
    assert rec.stop(True)[0] == 2
    monkeypatch.setattr(writer, "write_video", full_disk)  # a failed write can also be discarded
    rec.start()
    for i, f in enumerate(_frames(rng, 2)):
        rec.add_frame(i * 0.1, f, np.zeros(4), "push")
    with pytest.raises(RecordingError, match="kept"):
        rec.stop(True)
    assert "2 frames" in rec.discard() and not rec.unsaved and rec.discarded == 1
    assert "not saved" not in (rec.close() or "")


def test_recorder_checks_the_dataset_root_before_recording(tmp_path, rng):
    from lapa_learning.data import EpisodeDataset

    afile = tmp_path / "afile"
    afile.write_text("x")
    for root, match in ((afile, "is a file, not a folder"), (afile / "sub", "cannot be created"),
                        ("/proc/lapa_x", "cannot be created")):
        with pytest.raises(ConfigError, match=f"parameter dataset_root: {root} {match}"):
            EpisodeRecorder(root, fps=10, mapping=MAP)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and holds no episode dataset") as err:
        EpisodeRecorder(tmp_path / "other", fps=10, mapping=MAP)
    assert "--" not in str(err.value)  # no CLI flags: node users have none
    new = tmp_path / "a" / "b"
    EpisodeRecorder(new, fps=10, mapping=MAP)  # created at once
    assert new.is_dir()
    # An existing dataset (10 fps, 16x16, dx dy dz gripper) and parameters that differ: refused, both values named.
    rec = EpisodeRecorder(tmp_path / "ds", fps=10, mapping=MAP)
    rec.start()
    for i, f in enumerate(_frames(rng, 3)):
        rec.add_frame(i * 0.1, f, np.zeros(4), "push")
    rec.stop(True)
    rec.close()
    for kwargs, match in ((dict(fps=20), "fps is 10.0 in the dataset but 20.0 here"),
                          (dict(video_key="observation.images.wrist"),
                           "video_key is 'observation.images.front' in the dataset but 'observation.images.wrist'"),
                          (dict(image_size=(32, 32)), r"image_size is \[16, 16\] in the dataset but \[32, 32\]"),
                          (dict(mapping=TwistActionMap(("dx", "dy", "dz"), 0.1, 0.5, 1.0)),
                           r"action_names is \['dx', 'dy', 'dz', 'gripper'\] in the dataset but \['dx', 'dy', 'dz'\]"),
                          # the same actions recorded with other scales would mean other velocities
                          (dict(mapping=TwistActionMap(MAP.action_names, MAP.linear_scale * 8, MAP.angular_scale,
                                                       MAP.action_limit)),
                           f"linear_scale is {MAP.linear_scale!r} in the dataset but {MAP.linear_scale * 8!r} here")):
        with pytest.raises(ConfigError, match=match) as err:
            EpisodeRecorder(tmp_path / "ds", **{"fps": 10, "mapping": MAP, **kwargs})
        assert "--append" not in str(err.value) and "--overwrite" not in str(err.value)
    assert EpisodeRecorder(tmp_path / "ds", fps=10, mapping=MAP, image_size=(16, 16)).next_index() == 1
    # scales recorded by another tool with other keys: still found at start-up
    info_path = tmp_path / "ds" / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["lapa"]["action_scales"] = {"linear_scale": MAP.linear_scale, "angular_scale": MAP.angular_scale}
    info_path.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="action_limit is 'not recorded' in the dataset but 1.0 here"):
        EpisodeRecorder(tmp_path / "ds", fps=10, mapping=MAP)
    info["lapa"]["action_scales"] = MAP.scales()
    info_path.write_text(json.dumps(info))
    # Sets the recorder's episodes could not join (found at start-up, not at the first ~/stop after a demonstration)
    from lapa_learning.vla.testing import make_toy_dataset

    with_states = make_toy_dataset(tmp_path / "states", episodes=1, length=4, image_size=16, latent_labels=False)
    with pytest.raises(ConfigError, match=r"its episodes have states \['x', 'y', 'z', 'gripper_opening'\]"):
        EpisodeRecorder(with_states, fps=10, mapping=MAP)
    videos = make_toy_dataset(tmp_path / "videos", episodes=1, length=4, image_size=16, with_actions=False,
                              latent_labels=False)
    with pytest.raises(ConfigError, match=r"it holds no actions \(an action-free video set\)"):
        EpisodeRecorder(videos, fps=10, mapping=MAP)
    # image_size [0, 0] ("the camera's") and a camera of another size: stored at the dataset's size, and saved
    rec = EpisodeRecorder(tmp_path / "ds", fps=10, mapping=MAP)
    rec.start()
    for i in range(3):
        rec.add_frame(i * 0.1, rng.integers(0, 255, (24, 40, 3), dtype=np.uint8), np.zeros(4), "push")
    rec.stop(True)
    rec.close()
    assert EpisodeDataset(tmp_path / "ds").num_episodes == 2


# ------------------------------------------------------------------------------------------------ sim mapping
def test_sim_twist_mapping_is_the_inverse_of_the_policy_scaling():
    pytest.importorskip("rosgraph_msgs", reason="sim_node publishes /clock")
    from lapa_ros.sim_node import twist_to_metaworld

    # 0.8 m/s is one Meta-World unit (1 cm per 1/80 s step), so linear_scale 0.8 round-trips exactly.
    linear, _, gripper = MAP.to_twist([0.25, -0.5, 1.0, 1.0])
    np.testing.assert_allclose(twist_to_metaworld(linear, gripper, fps=80.0), [0.25, -0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(twist_to_metaworld(np.array([8.0, 0, 0]), -3.0, fps=80.0), [1.0, 0, 0, -1.0])


# ------------------------------------------------------------------------------------------------ runtime
def test_executor_choice_and_spin_loop():
    import rclpy

    from lapa_ros.runtime import make_executor, spin

    with pytest.raises(ConfigError, match="executor must be one of events, single, got 'multi'"):
        make_executor("multi")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        for kind in ("events", "single"):
            executor, used = make_executor(kind, context=context)
            assert used == kind
            calls = []
            spin(executor, context=context, stop=lambda: calls.append(1) or len(calls) > 2)  # returns when told
            assert len(calls) == 3
            executor.shutdown()
    finally:
        rclpy.try_shutdown(context=context)


def test_stop_handlers_set_a_flag_and_only_a_third_signal_acts_as_default():
    import os
    import signal

    from lapa_ros.runtime import install_stop_handlers

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = install_stop_handlers()
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C from the terminal: no KeyboardInterrupt, only the flag
        assert stop.is_set()
        assert signal.getsignal(signal.SIGINT) not in (signal.SIG_DFL, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGTERM)  # the same Ctrl-C relayed by `ros2 launch` (or a SIGTERM)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the next one ends the process
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_problem_log_remembers_the_newest_and_throttles_repeats():
    from lapa_ros.status import ProblemLog

    log = ProblemLog(repeat_s=5.0)
    assert log.age(10.0) == "" and log.text == ""
    assert log.report("image rejected", 10.0)  # new: logged
    assert not log.report("image rejected", 12.0)  # the same within 5 s: remembered, not logged
    assert log.time == 12.0 and log.age(13.5) == "1.5"
    assert log.report("model error", 12.5)  # another text: logged at once
    assert log.report("model error", 18.0)  # the same after 5 s: logged again


def test_policy_status_level_follows_the_reason():
    from lapa_ros.status import ERROR, OK, WARN, policy_level, status_instruction

    assert policy_level("commanding") == OK
    assert policy_level("model output not finite") == ERROR and policy_level("not ready: no model") == ERROR
    assert policy_level("image stale") == WARN and policy_level("disabled") == WARN
    assert status_instruction("push") == "push" and status_instruction(None) is None
    long = status_instruction("x" * 500)
    assert long == shorten("x" * 500, 200) and "(500 chars)" in long
