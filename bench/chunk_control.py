"""Chunked control: command period jitter and the largest gap between commands, chunk_blend off / switch / ensemble.

    .venv/bin/python bench/chunk_control.py [--seconds 12] [--delays 0,0.15] [--out results/chunk_control.json]

policy_node runs in its own process (started here with `--serve`) with a random tiny chunk-8 policy
(lapa_learning.vla.testing, continuous head), control_rate 10 Hz, chunk_prefetch 3, publish_rate 0 (only new
commands are sent, so a stall shows as a gap) and enabled. Each model call can be slowed by a fixed sleep
(`--delays`, seconds) to stand in for a larger, slower model (the tiny one answers in a few ms). This process
streams 64 px images at 30 Hz and an instruction, and records when each TwistStamped arrives:
    period_*     time between consecutive commands (ms); jitter = its standard deviation
    max_gap_ms   the largest of them; stalls = how many exceed 1.5 control periods
    mean_jump    mean |change of the linear command| between consecutive commands (m/s): how abrupt
    model_calls  model calls per second (from ~/status: inferences)
chunk_blend off is the behaviour before chunk mode (the policy's own queue: the model runs when the chunk is
used up, and the robot waits for it).
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

BLENDS = ("off", "switch", "ensemble")
CONTROL_RATE = 10.0
PREFETCH = 3  # steps: the slowed model call (1.5 steps) + waiting for a new image + margin


class SlowPolicy:
    """A real policy whose model calls (not the queued actions) take `delay` seconds longer."""

    def __init__(self, policy, delay: float):
        self._policy, self.delay = policy, delay

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def act(self, image, instruction):
        if self._policy.will_replan:
            time.sleep(self.delay)
        return self._policy.act(image, instruction)

    def predict_chunk(self, images, instructions):
        time.sleep(self.delay)
        return self._policy.predict_chunk(images, instructions)


def serve(checkpoint: str, blend: str, delay: float) -> None:
    import torch
    from rclpy.parameter import Parameter

    from lapa_learning.vla.policy import Policy
    from lapa_ros.policy_node import PolicyNode
    from lapa_ros.runtime import run_node

    torch.set_num_threads(1)
    params = dict(checkpoint=checkpoint, device="cpu", enabled=True, control_rate=CONTROL_RATE, publish_rate=0.0,
                  chunk_blend=blend, chunk_prefetch=PREFETCH, image_timeout=2.0, status_rate=2.0)

    def factory():
        policy = SlowPolicy(Policy.load(checkpoint, device="cpu"), delay)
        return PolicyNode(policy=policy, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])

    run_node("policy_node", factory)


def measure(checkpoint: str, blend: str, delay: float, seconds: float, probe) -> dict:
    from std_msgs.msg import String

    from lapa_ros.converters import rgb_to_image

    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--checkpoint", checkpoint, "--blend", blend,
                             "--delay", str(delay)], env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    probe.arrivals.clear()
    rng = np.random.default_rng(0)
    frames = [rgb_to_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(30)]
    started = None
    try:
        i, end = 0, time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            if i % 30 == 0:
                probe.instruction_pub.publish(String(data="push the puck to the goal"))
            probe.image_pub.publish(frames[i % len(frames)])
            i += 1
            if started is None and len(probe.arrivals) >= 5:  # warm: measure from here
                started = time.monotonic()
                probe.arrivals.clear()
                probe.status.clear()
            if started is not None and time.monotonic() - started > seconds:
                break
            time.sleep(1 / 30)
        assert started is not None, f"no commands from policy_node ({blend}); stderr:\n{proc.stderr.read()[-2000:]}"
        elapsed = time.monotonic() - started
        arrivals = list(probe.arrivals)
        inferences = [int(s["inferences"]) for s in probe.status]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    t = np.array([a[0] for a in arrivals])
    v = np.array([a[1] for a in arrivals])
    period = np.diff(t) * 1e3  # (N-1,) ms
    jumps = np.linalg.norm(np.diff(v, axis=0), axis=1)
    return {
        "commands": len(arrivals), "seconds": round(elapsed, 2),
        "period_median_ms": float(np.median(period)), "period_jitter_std_ms": float(period.std()),
        "period_p99_ms": float(np.percentile(period, 99)), "max_gap_ms": float(period.max()),
        "stalls_over_1.5_periods": int((period > 1.5e3 / CONTROL_RATE).sum()),
        "mean_jump_m_s": float(jumps.mean()), "max_jump_m_s": float(jumps.max()),
        "model_calls_per_s": (inferences[-1] - inferences[0]) / elapsed if len(inferences) > 1 else None,
    }


def main(argv=None) -> int:
    from lapa_learning.io import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="measured seconds per run (default: 12)")
    parser.add_argument("--delays", default="0,0.15", help="added seconds per model call, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "chunk_control.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--blend", default="ensemble", help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.update({k: v for k, v in _env().items() if k not in os.environ or k.startswith(("ROS_", "FASTDDS"))})
    if args.serve:
        serve(args.checkpoint, args.blend, args.delay)
        return 0
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from lapa_learning.vla.testing import make_tiny_checkpoint
    from lapa_ros import qos

    checkpoint = str(make_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny8", chunk_size=8))
    rclpy.init()
    probe = rclpy.create_node("chunk_probe")
    probe.arrivals, probe.status = [], []
    probe.image_pub = probe.create_publisher(Image, "camera/image_raw", qos.camera_publisher())
    probe.instruction_pub = probe.create_publisher(String, "instruction", qos.instruction())
    probe.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", lambda m: probe.arrivals.append(
        (time.monotonic(), (m.twist.linear.x, m.twist.linear.y, m.twist.linear.z))), qos.command())
    probe.create_subscription(DiagnosticArray, "policy_node/status", lambda m: probe.status.append(
        {kv.key: kv.value for kv in m.status[0].values}), qos.status())
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.02)

    spinner = threading.Thread(target=spin)
    spinner.start()
    load_before = os.getloadavg()
    runs = {}
    try:
        for delay in [float(d) for d in args.delays.split(",")]:
            for blend in BLENDS:
                r = measure(checkpoint, blend, delay, args.seconds, probe)
                runs[f"delay_{delay:g}s/{blend}"] = r
                print(f"delay {delay:.2f} s {blend:>8}: period median {r['period_median_ms']:6.1f} ms, jitter "
                      f"{r['period_jitter_std_ms']:5.1f} ms, max gap {r['max_gap_ms']:6.1f} ms, stalls "
                      f"{r['stalls_over_1.5_periods']:3d}, mean jump {r['mean_jump_m_s']:.4f} m/s", flush=True)
    finally:
        stop.set()
        spinner.join()
        probe.destroy_node()
        rclpy.try_shutdown()
    report = {
        "what": "TwistStamped arrivals from policy_node with a chunk-8 policy at control_rate 10 Hz, publish_rate 0",
        "policy": "make_tiny_checkpoint(chunk_size=8) (random tiny LAPA policy, continuous head, seed 0), "
                  "each model call slowed by `delay` seconds",
        "node_settings": {"control_rate": CONTROL_RATE, "publish_rate": 0.0, "chunk_prefetch": PREFETCH,
                          "chunk_decay": 0.5, "camera_hz": 30},
        "runs": runs,
        "machine": {**machine(), "load_average_1_5_15_before": [round(x, 2) for x in load_before],
                    "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
        "seeds": {"checkpoint": 0, "images": 0},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python bench/chunk_control.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
