"""Bad parameters end every node at start-up with one line `<node>: error: ...` and exit code 2, no traceback.

The installed executables run as processes (all at once, to keep the file short on a small machine)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs rclpy (install the `ros` extra)")

pytestmark = pytest.mark.ros
CONFIG = Path(__file__).resolve().parents[1] / "config"


def executable(name: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", f"lapa_ros.{name}"]


def test_bad_parameters_give_one_line_and_exit_code_2(tmp_path):
    from lapa_learning.vla.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    typo = tmp_path / "typo.yaml"
    typo.write_text("/**/policy_node:\n  ros__parameters:\n    max_linear_sped: 0.01\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {  # label: (node, ROS arguments, what the error line must say)
        "typo": ("policy_node", ["--params-file", str(typo), "-p", f"checkpoint:={ckpt}"],
                 "unknown parameter max_linear_sped (did you mean max_linear_speed"),
        "replan_every": ("policy_node", ["-p", f"checkpoint:={ckpt}", "-p", "replan_every:=.inf"],
                         "parameter replan_every must be a int, got inf"),
        "executor": ("policy_node", ["-p", f"checkpoint:={ckpt}", "-p", "device:=cpu", "-p", "executor:=5"],
                     "parameter executor must be one of events, single, got 5"),
        "seed": ("sim_node", ["-p", "seed:=-5", "-p", "reset_on_start:=false"], "parameter seed must be an integer"),
        "episodes abc": ("episode_runner", ["-p", "episodes:=abc"], "parameter episodes must be a int, got 'abc'"),
        "episodes 0": ("episode_runner", ["-p", "episodes:=0"], "parameter episodes must be >= 1, got 0"),
        "dataset file": ("recorder_node", ["-p", f"dataset_root:={afile}"], f"{afile} is a file, not a folder"),
        "dataset /proc": ("recorder_node", ["-p", "dataset_root:=/proc/lapa_x"], "/proc/lapa_x cannot be created"),
    }
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = {label: subprocess.Popen([*executable(node), "--ros-args", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for label, (node, args, _) in cases.items()}
    failures = []
    for label, proc in procs.items():
        try:
            _out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        node, _args, expected = cases[label]
        lines = [line for line in err.splitlines() if line.strip()]
        ok = (proc.returncode == 2 and lines and lines[-1].startswith(f"{node}: error: ") and expected in lines[-1]
              and "Traceback" not in err)
        if not ok:
            failures.append(f"{label}: exit {proc.returncode}\n{err[-1500:]}")
    assert not failures, "\n\n".join(failures)
