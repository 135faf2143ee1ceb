"""The package's own interfaces (msg/): valid definitions, and a real `colcon build` that generates, imports and
publishes them.

The build needs the rosidl generators, ament_cmake and colcon (PyPI wheels: see docs/ros.md, "Building the
interfaces") plus Debian cmake, ninja and g++. They live in a separate virtualenv named by LAPA_ROS_BUILD_VENV
(default: this interpreter's environment); without them the build test is skipped with the reason.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MSGS = sorted((ROOT / "msg").glob("*.msg"))


def test_message_definitions_parse():
    parser = pytest.importorskip("rosidl_adapter.parser", reason="rosidl_adapter (ros-rosidl-adapter) not installed")
    assert {m.stem for m in MSGS} == {"ActionChunk", "LatentActionTokens"}
    fields = {m.stem: {f.name: str(f.type) for f in parser.parse_message_file("lapa_ros", str(m)).fields}
              for m in MSGS}
    assert fields["ActionChunk"]["values"] == "float32[]"
    assert fields["ActionChunk"]["time_step"] == "builtin_interfaces/Duration"
    assert fields["LatentActionTokens"] == {"header": "std_msgs/Header", "tokens": "int32[]",
                                            "codebook_size": "uint32"}


def test_cmake_lists_every_message():
    text = (ROOT / "CMakeLists.txt").read_text()
    for m in MSGS:
        assert f'"msg/{m.name}"' in text
    assert "<build_type>ament_cmake</build_type>" in (ROOT / "package.xml").read_text()


def _build_env_problem(venv: Path) -> str:
    missing = [tool for tool in ("cmake", "ninja", "g++") if shutil.which(tool) is None]
    if missing:
        return f"missing build tools {missing} (apt-get install cmake ninja-build g++)"
    if not (venv / "bin" / "colcon").exists():
        return f"colcon is not installed in {venv} (pip install colcon-common-extensions)"
    if not (venv / "share" / "rosidl_default_generators").is_dir():
        return f"rosidl generators are not installed in {venv} (see docs/ros.md, 'Building the interfaces')"
    export = venv / "share" / "std_msgs" / "cmake" / "export_std_msgs__rosidl_generator_pyExport.cmake"
    if export.exists() and "/opt/python/" in export.read_text():
        return f"{export} still has the wheels' /opt/python include paths (run the sed step in docs/ros.md)"
    return ""


@pytest.mark.slow
def test_colcon_builds_generates_imports_and_publishes(tmp_path):
    venv = Path(os.environ.get("LAPA_ROS_BUILD_VENV", sys.prefix))
    problem = _build_env_problem(venv)
    if problem:
        pytest.skip(f"interface build tools absent: {problem}")
    src = tmp_path / "ws" / "src" / "lapa_ros"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "results", "__pycache__",
                                                              "*.egg-info", "build", "install", "log"))
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", AMENT_PREFIX_PATH=str(venv),
               CMAKE_PREFIX_PATH=str(venv))
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    build = subprocess.run(
        ["colcon", "build", "--event-handlers", "console_direct-", "--cmake-args",
         f"-DPython3_EXECUTABLE={venv / 'bin' / 'python'}", "-DBUILD_TESTING=OFF", "-G", "Ninja"],
        cwd=tmp_path / "ws", env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    install = tmp_path / "ws" / "install" / "lapa_ros"
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for exe in ("policy_node", "recorder_node", "sim_node", "expert_teleop", "episode_runner"):
        assert (install / "lib" / "lapa_ros" / exe).exists()
    for cfg in ("policy.yaml", "sim.yaml", "record.yaml", "fastdds_large_images.xml"):
        assert (install / "share" / "lapa_ros" / "config" / cfg).exists()
    assert (site / "lapa_ros" / "safety.py").exists() and (site / "lapa_learning" / "errors.py").exists()

    check = r'''
import time, rclpy
from lapa_ros.msg import ActionChunk, LatentActionTokens
import lapa_ros.qos  # the hand-written package shares the installed lapa_ros/ folder
rclpy.init()
pub, sub = rclpy.create_node("if_pub"), rclpy.create_node("if_sub")
got = []
sub.create_subscription(ActionChunk, "chunk", got.append, 10)
sub.create_subscription(LatentActionTokens, "tokens", got.append, 10)
p1, p2 = pub.create_publisher(ActionChunk, "chunk", 10), pub.create_publisher(LatentActionTokens, "tokens", 10)
chunk = ActionChunk(action_names=["dx", "dy", "dz", "gripper"], values=[0.1, 0.2, 0.3, 1.0] * 2, num_steps=2)
chunk.time_step.nanosec = 100_000_000
tokens = LatentActionTokens(tokens=[1, 7, 0, 3], codebook_size=8)
end = time.time() + 20
while {type(g).__name__ for g in got} != {"ActionChunk", "LatentActionTokens"} and time.time() < end:
    p1.publish(chunk); p2.publish(tokens); rclpy.spin_once(sub, timeout_sec=0.1)
names = sorted({type(g).__name__ for g in got})
assert names == ["ActionChunk", "LatentActionTokens"], names
c = [g for g in got if isinstance(g, ActionChunk)][0]
assert c.num_steps == 2 and list(c.action_names) == ["dx", "dy", "dz", "gripper"]
print("published and received", names)
'''
    run_env = dict(os.environ, PYTHONPATH=str(site), LD_LIBRARY_PATH=str(install / "lib"),
                   AMENT_PREFIX_PATH=f"{install}:{venv}")
    # The ROS wheels re-exec Python once with their library path unless this guard is set: let the build
    # venv's Python do its own bootstrap (the guard inherited from this process points at another venv).
    run_env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    python = venv / "bin" / "python"
    # cwd outside the source tree: `python -c` puts the cwd first on sys.path (it would find the source lapa_ros/)
    result = subprocess.run([str(python), "-c", check], env=run_env, capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published and received" in result.stdout
