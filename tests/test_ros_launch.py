"""Launch files: everything they name exists (checked statically, since `launch`/`launch_ros` are not installable
from PyPI here), and they build a LaunchDescription when the real packages are present.

The node graph they describe is exercised by tests/test_ros_graph.py, which starts the same executables with
the same YAML files as processes.
"""

import ast
import importlib.util
import re
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _console_scripts() -> set[str]:
    text = (ROOT / "setup.py").read_text()
    return set(re.findall(r'"(\w+) = lapa_ros\.\w+:main"', text))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, key: str):
    for kw in call.keywords:
        if kw.arg == key:
            return kw.value
    return None


def _node_params():
    pytest.importorskip("rclpy", reason="lapa_ros.params needs rclpy's message packages")
    from lapa_ros.episode_runner import RunnerParams
    from lapa_ros.params import PolicyParams, RecorderParams, SimParams, TeleopParams

    return {"policy_node": PolicyParams, "recorder_node": RecorderParams, "sim_node": SimParams,
            "expert_teleop": TeleopParams, "episode_runner": RunnerParams}


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"policy.launch.py", "record.launch.py", "sim.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_only_things_that_exist(path):
    tree = ast.parse(path.read_text())
    scripts = _console_scripts()
    params = _node_params()

    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used <= declared, f"{path.name}: LaunchConfiguration without DeclareLaunchArgument: {used - declared}"
    assert declared <= used, f"{path.name}: declared but unused arguments: {declared - used}"
    for call in _calls(tree, "DeclareLaunchArgument"):
        assert _kw(call, "description") is not None, f"{path.name}: {call.args[0].value} has no description"

    # Every file named under config/ exists.
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for name in names:
        if name.endswith((".yaml", ".xml")):
            assert (ROOT / "config" / name).is_file(), f"{path.name}: config/{name} does not exist"

    nodes = _calls(tree, "Node")
    assert nodes
    # Parameter dicts are assigned to names (e.g. `overrides = {...}`): resolve them.
    assigned = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    for node in nodes:
        assert _kw(node, "package").value == "lapa_ros"
        exe = _kw(node, "executable").value
        assert exe in scripts, f"{path.name}: executable {exe} is not a console script in setup.py"
        known = {f.name for f in fields(params[exe])} | {"use_sim_time"}
        for item in _kw(node, "parameters").elts:
            item = assigned.get(item.id, item) if isinstance(item, ast.Name) else item
            if isinstance(item, ast.Dict):
                keys = {k.value for k in item.keys}
                assert keys <= known, f"{path.name}: {exe} has no parameter(s) {keys - known}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_builds_with_real_launch_packages(path):
    if importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None:
        pytest.skip("the `launch` and `launch_ros` packages are not installed (not available from PyPI; "
                    "they come with a ROS 2 installation)")
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert description.entities


def test_setup_installs_launch_and_config_files():
    text = (ROOT / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in text and 'glob("config/*.yaml") + glob("config/*.xml")' in text
