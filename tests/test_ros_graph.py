"""The node graph as separate processes, started like the launch files do (same executables, same YAML files).

Closed loop: sim_node + policy_node (real tiny checkpoint) + episode_runner run an episode to its end.
Recording loop: sim_node + expert_teleop + recorder_node record episodes; SIGKILL and SIGINT during an episode
leave every earlier episode intact; the dataset loads with EpisodeDataset (and `lapa vla finetune` when present).
Every subprocess inherits ROS_DOMAIN_ID / ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST from tests/conftest.py.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (install the `ros` extra)")
pytest.importorskip("metaworld", reason="sim_node needs Meta-World (install the `sim` extra)")

from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import Float64  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from lapa_ros import qos  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"


def executable(name: str) -> list[str]:
    """The installed console script next to this Python, else `python -m lapa_ros.<name>`."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", f"lapa_ros.{name}"]


class Graph:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(CONFIG / "fastdds_large_images.xml"),
                        PYTHONUNBUFFERED="1")

    def start(self, name: str, *param_files: str, params: dict | None = None, label: str | None = None):
        args = [*executable(name), "--ros-args"]
        for f in param_files:
            args += ["--params-file", str(CONFIG / f)]
        for k, v in (params or {}).items():
            args += ["-p", f"{k}:={v}"]
        log = open(self.tmp / f"{label or name}.log", "w")
        self.procs[label or name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                     cwd=self.tmp)
        return self.procs[label or name]

    def log(self, label: str) -> str:
        return (self.tmp / f"{label}.log").read_text()

    def run_episodes(self, n: int, record: bool, timeout: float = 120.0) -> str:
        proc = self.start("episode_runner", params={"episodes": n, "record": str(record).lower(),
                                                    "use_sim_time": "true"}, label=f"runner{time.monotonic()}")
        label = [k for k, v in self.procs.items() if v is proc][0]
        code = proc.wait(timeout=timeout)
        out = self.log(label)
        assert code == 0, f"episode_runner failed ({code}):\n{out}\n" + self.dump()
        return out

    def dump(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))

    def stop(self, label: str, sig=signal.SIGINT, timeout: float = 15.0, times: int = 1) -> int:
        proc = self.procs.pop(label)
        for _ in range(times):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def close(self):
        for label in list(self.procs):
            if self.procs[label].poll() is None:
                self.stop(label)
            else:
                self.procs.pop(label)


class Probe:
    """An in-test node that records the commands on the wire and calls services."""

    def __init__(self):
        rclpy.init()
        self.node = rclpy.create_node("graph_probe")
        self.twists, self.grippers = [], []
        self.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", self.twists.append, qos.command())
        self.node.create_subscription(Float64, "gripper/command", self.grippers.append, qos.command())
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop:
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_service(self, srv_type, name: str, timeout: float = 60.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} did not appear in {timeout} s"
        return client

    def call(self, client, request, timeout: float = 30.0, resend_after: float = 5.0):
        """Call a service; resend if unanswered after `resend_after` s, and return the first answer.

        After a SIGKILL the dead server's endpoint stays in discovery until its lease runs out, so
        wait_for_service() can succeed before the restarted server is matched, and DDS drops a request sent then
        (it is never delivered later). Should two requests both arrive, the first answer is the one used."""
        futures = [client.call_async(request)]
        end = time.monotonic() + timeout
        next_send = time.monotonic() + resend_after
        while time.monotonic() < end:
            done = [f for f in futures if f.done()]
            if done:
                return done[0].result()
            if time.monotonic() > next_send:
                # Resend from a new client (new DDS endpoints, matched afresh): on a loaded machine a client
                # that had matched the killed server was seen to get no answer from the restarted one at all.
                client = self.node.create_client(client.srv_type, client.srv_name)
                if client.wait_for_service(timeout_sec=resend_after):
                    futures.append(client.call_async(request))
                next_send = time.monotonic() + resend_after
            time.sleep(0.02)
        raise AssertionError(f"{client.srv_name} did not answer in {timeout} s ({len(futures)} requests sent)")

    def subscriptions_of(self, node_name: str) -> dict[str, set[bytes]]:
        """topic -> the endpoint ids of `node_name`'s subscriptions on it, as discovery shows them now."""
        out = {}
        for topic, _types in self.node.get_topic_names_and_types():
            for info in self.node.get_subscriptions_info_by_topic(topic):
                if info.node_name == node_name:
                    out.setdefault(topic, set()).add(bytes(info.endpoint_gid))
        return out

    def wait_for_new_subscriptions(self, node_name: str, old: dict[str, set[bytes]], timeout: float = 60.0):
        """Until a restarted `node_name` has a subscription on every topic of `old` that is not one of `old`'s
        endpoints (a killed node's endpoints linger in discovery until their lease runs out)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = self.subscriptions_of(node_name)
            if all(now.get(topic, set()) - gids for topic, gids in old.items()):
                return
            time.sleep(0.1)
        raise AssertionError(f"{node_name} did not subscribe again to {sorted(old)} in {timeout} s")

    def close(self):
        self._stop = True
        self.thread.join(timeout=5)
        self.node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture
def graph(tmp_path):
    g = Graph(tmp_path)
    probe = Probe()
    yield g, probe
    probe.close()
    g.close()


def test_closed_loop_sim_and_policy_run_an_episode_to_the_end(graph, tmp_path):
    from lapa_learning.vla.testing import make_tiny_checkpoint

    g, probe = graph
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    g.start("sim_node", "sim.yaml", params={"max_steps": 80, "reset_on_start": "false"})
    g.start("policy_node", "policy.yaml", "sim.yaml", params={"checkpoint": str(ckpt), "device": "cpu"})
    probe.wait_for_service(Trigger, "/sim_node/reset")
    probe.wait_for_service(Trigger, "/policy_node/reset")  # the model is loaded once its services exist
    out = g.run_episodes(1, record=False)
    assert "episode 0 push-v3" in out and "steps=80" in out, out  # success or the step limit: the end
    moving = [m for m in probe.twists if m.twist.linear.x or m.twist.linear.y or m.twist.linear.z]
    assert len(moving) >= 5, f"{len(probe.twists)} twists, {len(moving)} non-zero\n" + g.dump()
    linear = np.array([[m.twist.linear.x, m.twist.linear.y, m.twist.linear.z] for m in probe.twists])
    angular = np.array([[m.twist.angular.x, m.twist.angular.y, m.twist.angular.z] for m in probe.twists])
    assert np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))
    assert np.linalg.norm(linear, axis=1).max() <= 1.0 + 1e-9  # max_linear_speed in config/sim.yaml
    assert np.linalg.norm(angular, axis=1).max() <= 0.5 + 1e-9
    assert probe.grippers and all(-1.0 <= m.data <= 1.0 for m in probe.grippers)
    assert all(m.header.frame_id == "world" for m in probe.twists)
    assert g.procs["policy_node"].poll() is None and g.procs["sim_node"].poll() is None


def test_recording_loop_survives_sigkill_and_sigint(graph, tmp_path):
    from lapa_learning.data import EpisodeDataset

    g, probe = graph
    root = tmp_path / "demos"
    record = {"dataset_root": str(root), "fps": 20.0}
    g.start("sim_node", "sim.yaml", params={"max_steps": 60, "reset_on_start": "false"})
    g.start("expert_teleop", "sim.yaml")
    g.start("recorder_node", "record.yaml", "sim.yaml", params=record)
    probe.wait_for_service(Trigger, "/sim_node/reset")
    start = probe.wait_for_service(Trigger, "/recorder_node/start")
    out = g.run_episodes(3, record=True)
    assert out.count("saved episode") == 3, out

    ds = EpisodeDataset(root)
    assert ds.num_episodes == 3 and ds.fps == 20.0 and ds.action_names == ("dx", "dy", "dz", "gripper")
    before = [(ds.frames(i).copy(), ds.actions(i).copy()) for i in range(3)]
    for frames, actions in before:
        assert len(frames) >= 2 and frames.shape[1:] == (64, 64, 3)
        assert np.all(np.isfinite(actions)) and np.abs(actions).max() <= 1.0
        assert np.abs(actions[:, :3]).max() > 0.05  # the expert moved the arm
    assert sum(e.success for e in ds.episodes) >= 1

    # SIGKILL in the middle of an episode: the three saved episodes stay intact and readable.
    reset = probe.wait_for_service(Trigger, "/sim_node/reset")
    inputs = probe.subscriptions_of("recorder_node")  # camera, teleop twist and gripper, instruction
    assert len(inputs) >= 3, inputs
    assert probe.call(start, Trigger.Request()).success
    assert probe.call(reset, Trigger.Request()).success
    time.sleep(1.0)
    assert g.stop("recorder_node", signal.SIGKILL) == -signal.SIGKILL
    ds = EpisodeDataset(root)
    assert ds.num_episodes == 3
    for i, (frames, actions) in enumerate(before):
        np.testing.assert_array_equal(ds.actions(i), actions)
        assert ds.frames(i).shape == frames.shape

    # A restarted recorder appends after them; SIGINT mid-episode drops only that episode.
    g.start("recorder_node", "record.yaml", "sim.yaml", params=record, label="recorder2")
    start = probe.wait_for_service(Trigger, "/recorder_node/start")
    # The restarted recorder must be matched with the camera and teleop publishers before the episode runs, or it
    # samples no frame at all; its new subscriptions showing in discovery is when that happens.
    probe.wait_for_new_subscriptions("recorder_node", inputs)
    time.sleep(0.5)
    out = g.run_episodes(1, record=True)
    assert "saved episode 3" in out, out
    assert probe.call(start, Trigger.Request()).success
    assert probe.call(reset, Trigger.Request()).success
    time.sleep(0.5)
    code = g.stop("recorder2", signal.SIGINT, times=2)  # Ctrl-C under `ros2 launch` arrives twice
    assert code == 0, f"recorder exited with {code} after SIGINT\n" + g.dump()
    assert "was not saved" in g.log("recorder2")
    ds = EpisodeDataset(root)
    assert ds.num_episodes == 4 and (root / "meta" / "stats.json").is_file()
    for i, (_frames, actions) in enumerate(before):
        np.testing.assert_array_equal(ds.actions(i), actions)
    assert ds.action_stats()["count"] == ds.num_frames

    # The recorded set trains a policy (a few steps: this checks the format, not the skill).
    lapa = Path(sys.executable).parent / "lapa"
    cmd = [str(lapa)] if lapa.exists() else [sys.executable, "-m", "lapa_learning.cli"]
    ft = subprocess.run([*cmd, "vla", "finetune", "--data", str(root), "--out", str(tmp_path / "ft"),
                         "--max-steps", "2", "--batch-size", "4", "--threads", "1", "--no-progress"],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ft.returncode == 0, ft.stdout[-2000:] + ft.stderr[-2000:]
    from lapa_learning.vla.policy import Policy

    policy = Policy.load(tmp_path / "ft", device="cpu")
    assert policy.action_names == ("dx", "dy", "dz", "gripper")


def test_policy_node_exits_with_a_clear_message_without_checkpoint(tmp_path):
    env = dict(os.environ)
    proc = subprocess.run([*executable("policy_node"), "--ros-args", "--params-file", str(CONFIG / "policy.yaml"),
                           "-p", f"checkpoint:={tmp_path / 'missing'}"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("policy_node: error:") and "missing" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_sim_node_exits_with_a_clear_message_for_an_unknown_task():
    proc = subprocess.run([*executable("sim_node"), "--ros-args", "-p", "tasks:=[reach-v3, push]"],
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("sim_node: error: parameter tasks: unknown Meta-World task(s) ['push']"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_policy_node_stops_quickly_on_sigterm(graph, tmp_path):
    """SIGTERM -> clean exit 0 without the interpreter's teardown (~1 s idle, 2-5 s on a busy machine before).

    bench/node_shutdown.py measures it (results/node_shutdown.json); the bound here is generous on purpose."""
    from lapa_learning.vla.testing import make_tiny_checkpoint

    g, probe = graph
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    g.start("policy_node", "policy.yaml", params={"checkpoint": str(ckpt), "device": "cpu"})
    probe.wait_for_service(Trigger, "/policy_node/reset")
    proc = g.procs["policy_node"]
    t0 = time.monotonic()
    code = g.stop("policy_node", signal.SIGTERM)
    elapsed = time.monotonic() - t0
    assert code == 0, g.dump()
    assert elapsed < 5.0, f"SIGTERM took {elapsed:.1f} s\n" + g.dump()
    assert proc.returncode == 0 and "Traceback" not in g.log("policy_node")
