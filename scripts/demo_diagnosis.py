"""Why LAPA does (not) lead in a finished `lapa demo` run: what its stages' own records say, in one JSON.

    python scripts/demo_diagnosis.py --demo-out /root/lapa_runs/seed0 --setting in-domain --seed 0

Reads only what the demo wrote (no training, no evaluation): per pretraining video set, the LAQ's held-out
reconstruction, how many codes each latent token position really uses, the cross-validated probe R² of the
true actions from the latent tokens per action dimension, and the latent-pretraining accuracy against the two
majority baselines (most frequent code per position, and per position *given the instruction*: what a model
that ignores the image gets); per method, the development rates of every candidate budget and the final per-task
successes with the mean hand position at the end of failed episodes. Writes
results/demo_diagnosis_<setting>_seed<k>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.demo.plan import PRESETS, VIDEO_SET, build_plan  # noqa: E402
from lapa_learning.demo.report import read_optional_json, video_set_record  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.machine import machine  # noqa: E402


def method_record(run: Path, ev: Path) -> dict | None:
    r = read_optional_json(ev / "results.json")
    if r is None:
        return None
    selection = read_optional_json(run / "selection.json") or {}
    tasks = {}
    for task, t in r["tasks"].items():
        failed = [e["final_state"][:3] for e in r["episodes"] if e["task"] == task and not e["success"]]
        tasks[task] = {"successes": t["successes"], "episodes": t["episodes"],
                       "mean_steps_to_success": t["mean_steps_to_success"],
                       "failed_mean_final_hand_xyz": np.mean(failed, 0).round(4).tolist() if failed else None}
    return {"chosen_steps": selection.get("chosen_steps"), "dev_success": selection.get("dev_success"),
            "final": tasks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-out", type=Path, required=True)
    parser.add_argument("--setting", required=True, choices=sorted(VIDEO_SET))
    parser.add_argument("--seed", type=int, required=True, help="the demo's --seed (for the output name)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.demo_out
    if not (out / "stages").is_dir():
        print(f"demo_diagnosis: error: {out} is not a `lapa demo` output directory (no stages/)", file=sys.stderr)
        return 2
    vset = VIDEO_SET[args.setting]
    plan = build_plan(out, PRESETS["default"], args.setting, args.seed, "auto")  # where each method's runs are
    methods = {}
    for method, final in plan.finals.items():
        rec = method_record(final, plan.evals[method])
        if rec is not None:
            methods[method] = rec
    result = {"command": script_command(), "machine": machine(), "setting": args.setting,
              "seed": args.seed, "video_set": vset, "video_set_record": video_set_record(out / vset),
              "methods": methods}
    path = args.out or ROOT / f"results/demo_diagnosis_{args.setting}_seed{args.seed}.json"
    atomic_write_json(path, result)
    print(json.dumps(result["video_set_record"], indent=1))
    for method, rec in methods.items():
        print(method, rec["chosen_steps"], {t: f"{v['successes']}/{v['episodes']}" for t, v in rec["final"].items()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
