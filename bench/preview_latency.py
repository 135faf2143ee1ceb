"""Command latency of policy_node with the live latent preview off vs on, side by side (real rclpy, loopback).

    .venv/bin/python bench/preview_latency.py [--samples 150] [--rounds 3] [--preview-rate 10]

One process: a probe node publishes a camera image (64 px rgb8) and waits for the node's TwistStamped; the next
image goes out after the answer (publish_rate 0: one command per model answer; control_rate 1000 Hz: no
throttling). Latency = image published -> twist received. The policy is a random tiny checkpoint with a latent
head; the LAQ is a random one of the `tiny` LAQ preset (the demo's stage-1 architecture, 64 px), so the decoder
costs what a trained one costs. Settings alternate (off, on, off, on, ...) so that load from other jobs hits both.
The preview runs in its own thread at --preview-rate (default 10 Hz, above the 2 Hz default, to stress it);
torch uses 1 thread. Writes results/preview_latency.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 30))


def make_models(tmp: Path) -> tuple[Path, Path]:
    import torch

    from lapa_learning.laq.checkpoint import save_checkpoint
    from lapa_learning.laq.configuration_laq import preset
    from lapa_learning.laq.modeling_laq import LAQ
    from lapa_learning.vla.testing import make_tiny_checkpoint

    cfg = preset("tiny")
    cfg.model = dataclasses.replace(cfg.model, num_tokens=4, codebook_size=8)  # the tiny policy's latent head
    torch.manual_seed(0)
    save_checkpoint(tmp / "laq", 0, LAQ(cfg.model), cfg, extra={})
    return make_tiny_checkpoint(tmp / "policy"), tmp / "laq"


def measure(checkpoint: Path, laq: Path, preview: bool, samples: int, preview_rate: float) -> dict:
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from lapa_ros import qos
    from lapa_ros.converters import rgb_to_image
    from lapa_ros.policy_node import PolicyNode

    params = dict(checkpoint=str(checkpoint), device="cpu", enabled=True, control_rate=1000.0, publish_rate=0.0,
                  image_timeout=5.0, publish_preview=preview, preview_rate=preview_rate, preview_laq=str(laq))
    node = PolicyNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    probe = rclpy.create_node("bench_probe")
    got = threading.Event()
    probe.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", lambda m: got.set(), qos.command())
    image_pub = probe.create_publisher(Image, "camera/image_raw", qos.camera_publisher())
    instruction_pub = probe.create_publisher(String, "instruction", qos.instruction())
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    executor.add_node(probe)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    rng = np.random.default_rng(0)
    images = [rgb_to_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(8)]
    try:
        instruction_pub.publish(String(data="push the puck to the goal"))
        time.sleep(1.0)
        latencies, lost = [], 0
        for i in range(samples + 10):  # the first 10 warm up
            got.clear()
            t0 = time.perf_counter()
            image_pub.publish(images[i % len(images)])
            if not got.wait(2.0):
                lost += 1
                continue
            if i >= 10:
                latencies.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.01)  # let the preview thread (if any) run between commands, as between camera frames
        lat = np.array(latencies)
        return {"preview": preview, "samples": len(lat), "lost": lost,
                "median_ms": round(float(np.median(lat)), 3), "p95_ms": round(float(np.percentile(lat, 95)), 3),
                "max_ms": round(float(lat.max()), 3), "mean_ms": round(float(lat.mean()), 3),
                "previews_published": node.previews, "inferences": node.inferences,
                "last_preview_ms": None if not preview else round(node.preview_ms, 3)}
    finally:
        executor.shutdown()
        node.close()
        node.destroy_node()
        probe.destroy_node()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preview-rate", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "results/preview_latency.json")
    args = parser.parse_args()
    import rclpy
    import torch

    from lapa_learning.machine import machine
    from lapa_learning.io import atomic_write_json

    torch.set_num_threads(1)
    rclpy.init()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint, laq = make_models(Path(tmp))
            for r in range(args.rounds):
                for preview in (False, True):
                    load = list(os.getloadavg())  # other jobs on a shared machine move these numbers
                    rows.append({"round": r, "load_average_before": [round(v, 2) for v in load],
                                 **measure(checkpoint, laq, preview, args.samples, args.preview_rate)})
                    print(rows[-1], flush=True)
    finally:
        rclpy.try_shutdown()
    summary = {}
    for preview in (False, True):
        lat = [row for row in rows if row["preview"] == preview]
        summary["on" if preview else "off"] = {k: round(float(np.median([row[k] for row in lat])), 3)
                                               for k in ("median_ms", "p95_ms", "max_ms", "mean_ms")}
    atomic_write_json(args.out, {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
                                 "seeds": {"torch": 0, "images": 0}, "preview_rate_hz": args.preview_rate,
                                 "laq": "random weights, LAQ preset tiny (64 px) with 4 tokens x codebook 8",
                                 "policy": "make_tiny_checkpoint (random weights, latent head 4 x 8)",
                                 "summary_median_over_rounds": summary, "rows": rows})
    print(summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
