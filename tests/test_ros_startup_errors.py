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


def test_episode_runner_stops_on_ctrl_c_or_sigterm_with_128_plus_the_signal():
    """No simulator: the runner says what it waits for; Ctrl-C or SIGTERM then ends it, no traceback."""
    import signal
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = {sig: subprocess.Popen([*executable("episode_runner"), "--ros-args", "-p", "sim_node:=no_such_sim"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, proc in procs.items():
        line = proc.stdout.readline()  # blocks until the runner waits for the service (or ends)
        assert "waiting up to 30 s for service /no_such_sim/reset" in line, line + proc.stderr.read()
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, f"{sig!r}: exit {proc.returncode}\n{out}\n{err}"
        assert time.monotonic() - started < 10 and "Traceback" not in err, err
