"""Closed-loop success with chunk blending on vs off (`lapa eval --chunk-blend`), on the same episodes.

    .venv/bin/python bench/chunk_blend_eval.py CHECKPOINT --tasks button-press-topdown-v3,plate-slide-v3 \
        --episodes-per-task 30 [--settings off,ensemble:0.5:1,switch:0:1]

A setting is "off" (execute whole chunks, today's `lapa eval`) or "BLEND:DECAY:REPLAN_EVERY" (re-plan every
REPLAN_EVERY steps, per-environment ChunkBlender). Every setting runs the same evaluation seeds with
--num-envs batching. Writes results/chunk_blend_eval.json (the command from sys.argv, the machine, the seeds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lapa_learning.machine import machine  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.eval.evaluate import evaluate  # noqa: E402
from lapa_learning.vla.chunking import BlendedPolicy  # noqa: E402
from lapa_learning.vla.policy import Policy  # noqa: E402


def parse_setting(text: str) -> dict:
    if text == "off":
        return {"blend": "off", "decay": None, "replan_every": None}
    try:
        blend, decay, every = text.split(":")
        return {"blend": blend, "decay": float(decay), "replan_every": int(every)}
    except ValueError:
        raise SystemExit(f"chunk_blend_eval: error: setting {text!r}: expected 'off' or BLEND:DECAY:REPLAN_EVERY")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--tasks", default="button-press-topdown-v3,plate-slide-v3")
    parser.add_argument("--episodes-per-task", type=int, default=30)
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--settings", default="off,ensemble:0.5:1,switch:0:1")
    parser.add_argument("--data-command", default=None, help="how the checkpoint's data was made (recorded)")
    parser.add_argument("--out", type=Path, default=ROOT / "results/chunk_blend_eval.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = Policy.load(args.checkpoint, device="cpu")
    tasks = args.tasks.split(",")
    rows = []
    for text in args.settings.split(","):
        setting = parse_setting(text)
        policy = base if setting["blend"] == "off" else BlendedPolicy(base, setting["blend"], setting["decay"],
                                                                      setting["replan_every"])
        started = time.time()
        res = evaluate(policy, tasks, args.episodes_per_task, max_steps=args.max_steps, seed=args.seed,
                       num_envs=args.num_envs, progress=False)
        rows.append({"setting": text, **setting, "success": res["overall"]["success"],
                     "ci95": res["overall"]["ci95"], "successes": res["overall"]["successes"],
                     "episodes": res["overall"]["episodes"],
                     "mean_steps_to_success": res["overall"]["mean_steps_to_success"],
                     "tasks": {t: {k: r[k] for k in ("success", "successes", "episodes")}
                               for t, r in res["tasks"].items()},
                     "seeds": [e["seed"] for e in res["episodes"]],
                     "episode_success": [e["success"] for e in res["episodes"]],
                     "episode_steps": [e["steps"] for e in res["episodes"]],
                     "wall_s": round(time.time() - started, 1)})
        print(f"{text:>20}: {res['overall']['successes']}/{res['overall']['episodes']} "
              f"({100 * res['overall']['success']:.0f}%), {rows[-1]['wall_s']} s", flush=True)
    first = rows[0]["episode_success"]
    for row in rows[1:]:  # how many episodes changed outcome against the first setting, each way
        row["vs_first"] = {"won_only_here": sum(b and not a for a, b in zip(first, row["episode_success"])),
                           "lost_only_here": sum(a and not b for a, b in zip(first, row["episode_success"]))}
    atomic_write_json(args.out, {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
                                 "checkpoint": str(args.checkpoint), "chunk_size": base.chunk_size,
                                 "tasks": tasks, "episodes_per_task": args.episodes_per_task,
                                 "max_steps": args.max_steps, "eval_seed": args.seed, "num_envs": args.num_envs,
                                 "data_command": args.data_command, "checkpoint_record": base.record, "machine": machine(), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
