"""How fast the simulator renders, and how much of a closed-loop evaluation step is rendering.

    .venv/bin/python bench/render_speed.py            # writes results/render_speed.json
    .venv/bin/python bench/render_speed.py --quick    # fewer repetitions

Rows:
  render, reflections on/off   ms per 64 px frame of MetaWorldEnv.render() for a few tasks, with the material
                               reflectances Meta-World ships and with them zeroed (what MetaWorldEnv does),
                               and the mean absolute pixel difference between the two images
  step, no render              ms per env.step(render=False) (physics only)
  eval step, every frame       ms per closed-loop step of `evaluate` with a chunk-4 policy (tiny checkpoint)
                               when every step is rendered, and when only re-planning steps are (the default)

Without a GPU, MuJoCo renders through Mesa's llvmpipe (EGL) on the CPU; the Sawyer arm's ~67k mesh triangles
make a frame cost tens of milliseconds whatever its size. Timings depend on the machine's load: compare ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

from bench.policy_latency import machine  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.sim.metaworld_env import MetaWorldEnv  # noqa: E402

TASKS = ("button-press-topdown-v3", "plate-slide-v3", "window-open-v3")


def ms_per_call(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def render_rows(repeats: int) -> list[dict]:
    rows = []
    for task in TASKS:
        with MetaWorldEnv(task) as env:
            env.reset(1)
            off_ms = ms_per_call(env.render, repeats)
            off_image = env.render().astype(np.int16)
            # Put back the reflectances Meta-World ships (a fresh env of the same task has them untouched).
            from metaworld.env_dict import ALL_V3_ENVIRONMENTS

            shipped = ALL_V3_ENVIRONMENTS[task]().model.mat_reflectance.copy()
            env._env.model.mat_reflectance[:] = shipped
            on_ms = ms_per_call(env.render, repeats)
            diff = float(np.abs(env.render().astype(np.int16) - off_image).mean())
            env._env.model.mat_reflectance[:] = 0.0
            step_ms = ms_per_call(lambda: env.step(np.zeros(4), render=False), repeats)
        rows.append({"task": task, "render_ms_reflections_on": on_ms, "render_ms_reflections_off": off_ms,
                     "speedup": on_ms / off_ms, "mean_abs_pixel_difference": diff, "step_ms_no_render": step_ms})
    return rows


def eval_rows(episodes: int) -> dict:
    import torch

    from lapa_learning.eval.evaluate import evaluate
    from lapa_learning.vla.policy import Policy
    from lapa_learning.vla.testing import make_tiny_checkpoint

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Policy.load(make_tiny_checkpoint(Path(tmp) / "ckpt", chunk_size=4, config="tiny"), device="cpu")

    class EveryFrame:  # hides will_replan, so the evaluator renders every step
        reset = policy.reset

        def act(self, image, instruction):
            return policy.act(image, instruction)

    out = {}
    for name, pol in (("every_frame", EveryFrame()), ("replan_frames_only", policy)):
        start = time.perf_counter()
        res = evaluate(pol, ["window-open-v3"], episodes_per_task=episodes, max_steps=100, progress=False)
        r = res["tasks"]["window-open-v3"]
        steps = (episodes - r["successes"]) * 100 + r["successes"] * (r["mean_steps_to_success"] or 0)
        out[name] = {"ms_per_step": 1000 * (time.perf_counter() - start) / steps, "steps": steps}
    out["speedup"] = out["every_frame"]["ms_per_step"] / out["replan_frames_only"]["ms_per_step"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "render_speed.json")
    args = ap.parse_args()
    repeats, episodes = (10, 1) if args.quick else (60, 3)

    rows = render_rows(repeats)
    print(f"{'task':<26}{'reflect on ms':>14}{'reflect off ms':>15}{'speedup':>9}{'pixel diff':>11}{'physics ms':>11}")
    for r in rows:
        print(f"{r['task']:<26}{r['render_ms_reflections_on']:>14.1f}{r['render_ms_reflections_off']:>15.1f}"
              f"{r['speedup']:>9.2f}{r['mean_abs_pixel_difference']:>11.4f}{r['step_ms_no_render']:>11.2f}")
    ev = eval_rows(episodes)
    print(f"\nclosed-loop eval step, chunk-4 policy: every frame rendered {ev['every_frame']['ms_per_step']:.1f} ms, "
          f"re-planning frames only {ev['replan_frames_only']['ms_per_step']:.1f} ms ({ev['speedup']:.2f}x)")

    result = {"command": "python bench/render_speed.py" + (" --quick" if args.quick else ""), "machine": machine(),
              "render": rows, "eval_step": ev}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
