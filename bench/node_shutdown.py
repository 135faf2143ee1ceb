"""How long policy_node takes to stop on SIGTERM while it is commanding, with and without the interpreter's teardown.

    .venv/bin/python bench/node_shutdown.py [--trials 5] [--out results/node_shutdown.json]

Each trial starts policy_node as its own process (a random tiny checkpoint from lapa_learning.vla.testing,
enabled), streams 64 px images at 20 Hz and an instruction to it from this process until it has sent 20
twists, then sends SIGTERM and times how long the process takes to exit. Two ways of running the same node:
    fast      `python -m lapa_ros.policy_node` as shipped: after close/destroy/shutdown the process ends with os._exit
    teardown  the same run_node(..., exit_process=False), then a normal interpreter exit (how the nodes ended
              before; the interpreter then tears down torch, transformers and every module)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ros_loop import _env, machine  # noqa: E402

TEARDOWN = ("import sys; from lapa_ros.policy_node import PolicyNode; from lapa_ros.runtime import run_node; "
            "sys.exit(run_node('policy_node', PolicyNode, sys.argv, exit_process=False))")
COMMANDS = {"fast": [sys.executable, "-m", "lapa_ros.policy_node"], "teardown": [sys.executable, "-c", TEARDOWN]}


def trial(mode: str, checkpoint: str, probe, twists: list) -> dict:
    from std_msgs.msg import String

    from lapa_ros.converters import rgb_to_image

    args = [*COMMANDS[mode], "--ros-args", "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu",
            "-p", "enabled:=true"]
    proc = subprocess.Popen(args, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    twists.clear()
    rng = np.random.default_rng(0)
    end = time.monotonic() + 120
    while len(twists) < 20 and time.monotonic() < end and proc.poll() is None:
        probe.instruction_pub.publish(String(data="push the puck to the goal"))
        probe.image_pub.publish(rgb_to_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
        time.sleep(0.05)
    assert len(twists) >= 20, f"policy_node sent {len(twists)} twists; stderr:\n{proc.stderr.read()[-2000:]}"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    stop_s = time.monotonic() - t0
    proc.stderr.read()
    return {"stop_s": round(stop_s, 3), "exit_code": code}


def main(argv=None) -> int:
    from lapa_learning.io import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="stops measured per mode (default: 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "node_shutdown.json")
    args = parser.parse_args(argv)
    os.environ.update({k: v for k, v in _env().items() if k not in os.environ or k.startswith(("ROS_", "FASTDDS"))})
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from lapa_learning.vla.testing import make_tiny_checkpoint
    from lapa_ros import qos

    checkpoint = str(make_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny"))
    rclpy.init()
    probe = rclpy.create_node("shutdown_probe")
    twists: list = []
    probe.image_pub = probe.create_publisher(Image, "camera/image_raw", qos.camera_publisher())
    probe.instruction_pub = probe.create_publisher(String, "instruction", qos.instruction())
    probe.create_subscription(TwistStamped, "servo_node/delta_twist_cmds",
                              lambda m: twists.append(m) if (m.twist.linear.x or m.twist.linear.y) else None,
                              qos.command())
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin)
    spinner.start()
    load_before = os.getloadavg()
    runs = {mode: [] for mode in COMMANDS}
    try:
        for i in range(args.trials):  # alternate the modes so that load changes hit both alike
            for mode in COMMANDS:
                runs[mode].append(trial(mode, checkpoint, probe, twists))
                print(f"trial {i} {mode:>8}: {runs[mode][-1]}", flush=True)
    finally:
        stop.set()
        spinner.join()
        probe.destroy_node()
        rclpy.try_shutdown()
    summary = {mode: {"median_stop_s": float(np.median([r["stop_s"] for r in rs])),
                      "max_stop_s": max(r["stop_s"] for r in rs),
                      "exit_codes": sorted({r["exit_code"] for r in rs}), "trials": rs} for mode, rs in runs.items()}
    report = {
        "what": "seconds from SIGTERM to process exit of a commanding policy_node (tiny checkpoint, 64 px, 20 Hz)",
        "modes": {"fast": "as shipped (os._exit after a clean shutdown)",
                  "teardown": "same node, normal interpreter exit afterwards (the previous behaviour)"},
        **summary,
        "machine": {**machine(), "load_average_1_5_15_before": [round(x, 2) for x in load_before],
                    "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
        "seeds": {"checkpoint": "make_tiny_checkpoint() default seed", "images": 0},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python bench/node_shutdown.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    atomic_write_json(args.out, report)
    for mode in COMMANDS:
        print(f"{mode:>8}: median {summary[mode]['median_stop_s']:.2f} s, max {summary[mode]['max_stop_s']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
