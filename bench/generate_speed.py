"""`lapa data generate` with 1 and with N worker processes, side by side on the same episodes (the datasets must be
identical; the benchmark fails otherwise).

    .venv/bin/python bench/generate_speed.py [--tasks a-v3,b-v3] [--episodes-per-task 20] [--workers 1,2]

Wall time includes starting the worker processes and writing the dataset (video encoding runs in the main
process). The first setting is repeated at the end, to see how much the load of other jobs moved. Writes
results/generate_speed.json.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def digest(root: Path) -> str:
    """One hash of every data and video file of a dataset (meta/ holds timings-free JSON, compared via episodes)."""
    h = hashlib.sha256()
    for path in sorted(list(root.glob("data/**/*.parquet")) + list(root.glob("videos/**/*.mp4"))):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="button-press-topdown-v3,plate-slide-v3,window-open-v3")
    parser.add_argument("--episodes-per-task", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "generate_speed.json")
    args = parser.parse_args(argv)

    from lapa_learning.cli_args import script_command
    from lapa_learning.data.generate import generate
    from lapa_learning.io import atomic_write_json
    from lapa_learning.machine import machine
    from lapa_learning.sim.metaworld_env import parse_task_list

    tasks = parse_task_list(args.tasks)
    counts = [int(w) for w in args.workers.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, workers in enumerate([*counts, counts[0]]):
            out = Path(tmp) / f"run{i}"
            started = time.perf_counter()
            generate(out, tasks, args.episodes_per_task, action_noise=0.1, seed=0, progress=False, workers=workers)
            seconds = time.perf_counter() - started
            runs.append({"workers": workers, "seconds": round(seconds, 2), "digest": digest(out),
                         "repeat": i == len(counts)})
            print(f"workers {workers}: {seconds:6.1f} s", flush=True)
    identical = len({r["digest"] for r in runs}) == 1
    base = runs[0]["seconds"]
    print(f"\n{'workers':>8} {'seconds':>8} {'speed-up':>9}")
    for r in runs:
        print(f"{r['workers']:>8} {r['seconds']:>8.1f} {base / r['seconds']:>8.2f}x" + ("  (repeat)" if r["repeat"]
                                                                                        else ""))
    print("datasets identical:", identical)
    atomic_write_json(args.out, {"command": script_command(), "machine": machine(), "seed": 0,
                                 "tasks": tasks, "episodes_per_task": args.episodes_per_task,
                                 "runs": runs, "datasets_identical": identical})
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
