"""Which Meta-World tasks need vision? Replay one demo's actions open-loop on other layouts.

    .venv/bin/python scripts/task_replay_probe.py                   # the tasks below, writes results/task_replay_probe.json
    .venv/bin/python scripts/task_replay_probe.py --tasks push-v3,drawer-close-v3 --demos 3 --layouts 10

For each task: the scripted expert records `--demos` episodes on training layouts; each recorded action sequence
is then replayed blind (no observation used) on `--layouts` other training layouts. A task where blind replay
often succeeds leaves little for a visual policy to learn from a few demos; a task where it rarely succeeds needs
the policy to see where the object is. This picked the demo's tasks. Evaluation layouts are never used here.
No rendering: a few seconds per task.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

TASKS = ("button-press-topdown-v3", "button-press-v3", "coffee-button-v3", "coffee-push-v3", "dial-turn-v3",
         "door-lock-v3", "door-open-v3", "drawer-close-v3", "drawer-open-v3", "faucet-open-v3", "handle-press-v3",
         "handle-pull-v3", "lever-pull-v3", "plate-slide-v3", "plate-slide-side-v3", "push-v3", "reach-wall-v3",
         "sweep-v3", "window-open-v3")


def replay_probe(task: str, demos: int, layouts: int, max_steps: int) -> dict:
    from lapa_learning.sim.metaworld_env import MetaWorldEnv
    from lapa_learning.sim.seeds import train_seed

    with MetaWorldEnv(task, max_steps=max_steps, render=False) as env:  # no images needed
        recorded = []
        for i in range(demos):
            env.reset(train_seed(0, i))
            actions, ok, done = [], False, False
            while not done:
                actions.append(env.expert_action())
                _, ok, done = env.step(actions[-1])
            recorded.append((np.stack(actions), ok))
        wins = 0
        for actions, _ in recorded:
            for j in range(layouts):
                env.reset(train_seed(1, j))  # other training layouts
                t, success, done = 0, False, False
                while not done:
                    _, success, done = env.step(actions[t] if t < len(actions) else np.zeros(4, dtype=np.float32))
                    t += 1
                wins += success
    return {"expert_success": sum(ok for _, ok in recorded) / demos,
            "demo_length": float(np.mean([len(a) for a, _ in recorded])),
            "blind_replay_success": wins / (demos * layouts), "replays": demos * layouts}


def main() -> int:
    from lapa_learning.cli_args import script_command
    from lapa_learning.io import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--demos", type=int, default=3)
    p.add_argument("--layouts", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("results/task_replay_probe.json"))
    args = p.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    started = time.time()
    rows = {}
    print(f"{'task':26s} {'expert':>7s} {'length':>7s} {'blind replay':>13s}")
    for task in args.tasks.split(","):
        r = rows[task] = replay_probe(task, args.demos, args.layouts, args.max_steps)
        print(f"{task:26s} {r['expert_success']:7.0%} {r['demo_length']:7.0f} {r['blind_replay_success']:13.0%}",
              flush=True)
    result = {"command": script_command(), "minutes": (time.time() - started) / 60,
              "demos": args.demos, "layouts": args.layouts, "max_steps": args.max_steps, "tasks": rows}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
