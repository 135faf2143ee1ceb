"""How wrong the first frame of an episode was before MetaWorldEnv.reset recomputed positions (and that it is right
now): for every Meta-World task and a few layouts, the frame rendered right after Meta-World's reset (as before the
fix) against the frame of MetaWorldEnv.reset now, which must equal the frame rendered after a full mj_forward (every
position as the physics has it).

    .venv/bin/python scripts/first_frame_check.py [--seeds 3] [--out results/first_frame_fix.json]

Per task: the mean and max absolute pixel difference (0-255, 64 px) of the old first frame from the new one, and
the fraction of pixels that differ by more than 20 levels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="layouts per task (training seeds 0, 1, ...)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "first_frame_fix.json")
    args = parser.parse_args(argv)

    import mujoco

    from lapa_learning.cli_args import script_command
    from lapa_learning.io import atomic_write_json
    from lapa_learning.machine import machine
    from lapa_learning.sim.metaworld_env import MetaWorldEnv, task_names
    from lapa_learning.sim.seeds import train_seed

    started, per_task = time.time(), {}
    for task in task_names():
        rows = []
        with MetaWorldEnv(task, image_size=args.image_size) as env:
            for k in range(args.seeds):
                seed = train_seed(0, k)
                env._env.seed(seed)  # what reset() did before the fix: Meta-World's reset, then the picture
                env._obs, _ = env._env.reset()
                old = env._observation().image.astype(int)
                now = env.reset(seed).image.astype(int)  # the fixed reset() itself
                unwrapped = env._env.unwrapped
                mujoco.mj_forward(unwrapped.model, unwrapped.data)
                fixed = env._observation().image.astype(int)
                diff = np.abs(old - now).max(-1)
                rows.append({"seed": seed, "old_vs_new_mean": float(diff.mean()), "old_vs_new_max": int(diff.max()),
                             "old_vs_new_pixels_over_20": float((diff > 20).mean()),
                             "new_equals_recomputed": bool(np.array_equal(now, fixed))})
        per_task[task] = {
            "old_vs_new_mean": round(float(np.mean([r["old_vs_new_mean"] for r in rows])), 3),
            "old_vs_new_max": max(r["old_vs_new_max"] for r in rows),
            "old_vs_new_pixels_over_20": round(float(np.mean([r["old_vs_new_pixels_over_20"] for r in rows])), 4),
            "new_equals_recomputed": all(r["new_equals_recomputed"] for r in rows), "layouts": rows}
        p = per_task[task]
        print(f"{task:30s} old vs new: mean {p['old_vs_new_mean']:6.2f} max {p['old_vs_new_max']:3d} "
              f">20: {100 * p['old_vs_new_pixels_over_20']:5.1f}% | new = recomputed: {p['new_equals_recomputed']}",
              flush=True)
    wrong = [t for t, p in per_task.items() if p["old_vs_new_pixels_over_20"] > 0.01]
    report = {"command": script_command(), "machine": machine(), "seeds": [train_seed(0, k) for k in range(args.seeds)],
              "image_size": args.image_size, "seconds": round(time.time() - started, 1),
              "tasks_with_a_wrong_first_frame": wrong,
              "note": "old = rendered right after Meta-World's reset (before the fix); new = MetaWorldEnv.reset now; "
                      "a task counts as wrong when more than 1% of its old first frame's pixels differ by over 20",
              "tasks": per_task}
    atomic_write_json(args.out, report)
    print(f"{len(wrong)} of {len(per_task)} tasks had a first frame with more than 1% of pixels off by over 20 levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
