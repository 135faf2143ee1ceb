"""What each embodiment costs to render, against the Sawyer as shipped, and that the experts do not notice.

    python bench/embodiment_render.py            # writes results/embodiment_render.json
    python bench/embodiment_render.py --quick    # fewer repetitions

For each task, one environment per embodiment at the same state (20 expert steps into a layout); the renders are
interleaved (sawyer, hand, recolored, sawyer, ...) so that a change in the machine's load hits all alike.
Rows: median and mean ms per MetaWorldEnv.render() and the ratio to sawyer's median.
Expert rows: scripted-expert episodes (64 px, rendered, 200-step limit) on the same training layouts in each
embodiment: successes, whether every state matched the Sawyer's, and ms per recorded frame (step + render).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

from bench.policy_latency import machine  # noqa: E402
from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.sim.embodiment import embodiment_names  # noqa: E402
from lapa_learning.sim.metaworld_env import DEFAULT_TASKS, MetaWorldEnv  # noqa: E402

SEED = 7


def task_rows(task: str, image_size: int, repeats: int) -> dict:
    envs = {name: MetaWorldEnv(task, image_size=image_size, embodiment=name) for name in embodiment_names()}
    try:
        for env in envs.values():
            env.reset(SEED)
        for _ in range(20):
            action = envs["sawyer"].expert_action()
            for env in envs.values():
                env.step(action, render=False)
        times = {name: [] for name in envs}
        for _ in range(repeats + 3):  # the first three rounds warm up (EGL context, buffers)
            for name, env in envs.items():
                start = time.perf_counter()
                env.render()
                times[name].append(1000 * (time.perf_counter() - start))
    finally:
        for env in envs.values():
            env.close()
    base = float(np.median(times["sawyer"][3:]))
    return {name: {"median_ms": float(np.median(t[3:])), "mean_ms": float(np.mean(t[3:])),
                   "ratio_to_sawyer": float(np.median(t[3:])) / base} for name, t in times.items()}


def expert_rows(task: str, episodes: int) -> dict:
    from lapa_learning.sim.rollout import expert_episode
    from lapa_learning.sim.seeds import train_seed

    rows, states = {}, {}
    for name in embodiment_names():
        with MetaWorldEnv(task, max_steps=200, embodiment=name) as env:
            start = time.perf_counter()
            eps = [expert_episode(env, seed=train_seed(0, i)) for i in range(episodes)]
            seconds = time.perf_counter() - start
        states[name] = [ep.states for ep in eps]
        frames = sum(len(ep.frames) for ep in eps)
        rows[name] = {"successes": sum(ep.success for ep in eps), "episodes": episodes,
                      "ms_per_frame": 1000 * seconds / frames,
                      "states_equal_sawyer": all(np.array_equal(a, b) for a, b in zip(states[name], states["sawyer"]))}
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "embodiment_render.json")
    args = ap.parse_args()
    repeats, episodes = (20, 2) if args.quick else (100, 10)
    rows = {}
    print(f"{'task':<22}" + "".join(f"{name + ' ms':>16}" for name in embodiment_names()))
    for task in DEFAULT_TASKS:
        rows[task] = task_rows(task, args.image_size, repeats)
        print(f"{task:<22}" + "".join(f"{r['median_ms']:>9.2f} ({r['ratio_to_sawyer']:.2f}x)"
                                      for r in rows[task].values()))
    experts = {}
    for task in DEFAULT_TASKS:
        experts[task] = expert_rows(task, episodes)
        print(f"{task:<22}" + "".join(f"  {n}: {r['successes']}/{r['episodes']} ok, {r['ms_per_frame']:.1f} ms/frame, "
                                      f"same states {r['states_equal_sawyer']}" for n, r in experts[task].items()))
    result = {"command": script_command(), "machine": machine(), "seed": SEED,
              "image_size": args.image_size, "repeats": repeats, "tasks": rows,
              "expert": {"layout_seeds": "train_seed(0, 0..episodes-1)", "tasks": experts}}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
