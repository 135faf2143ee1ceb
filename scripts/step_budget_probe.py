"""Would the step rule pick a larger finetuning budget if it were offered one?  Development layouts only.

    python scripts/step_budget_probe.py --demo-out /root/lapa_runs/seed0 --seed 0 --methods lapa,scratch --steps 1600

For each method, finetunes once more from the same initialisation and labelled set as the demo's candidates in
`--demo-out` (a finished `lapa demo` directory of that setting and seed), for each of `--steps`, with the arguments of
the demo's own stages for its largest candidate (only the budget and the paths change), and evaluates it on the
same development layouts (base seed = seed + DEV_SEED_OFFSET, the preset's dev episodes per task). Reads the demo's own
development rates for its candidates from `finetune_<method>/selection.json`, so the table shows every budget
side by side. Never touches the evaluation layouts. Writes results/step_budget_probe_<setting>_seed<k>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.demo.plan import DEV_SEED_OFFSET, PRESETS, VIDEO_SET, build_plan  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.machine import machine  # noqa: E402


def lapa(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lapa_learning.cli", *args], check=True)


def with_values(args: list[str], **values: str) -> list[str]:
    """`args` with the value after each --<key> replaced (underscores in keys stand for dashes)."""
    args = list(args)
    for key, value in values.items():
        args[args.index("--" + key.replace("_", "-")) + 1] = value
    return args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-out", type=Path, required=True, help="a finished `lapa demo` output directory")
    parser.add_argument("--setting", default="in-domain", choices=sorted(VIDEO_SET))
    parser.add_argument("--seed", type=int, default=0, help="the demo's --seed")
    parser.add_argument("--methods", default="lapa,scratch")
    parser.add_argument("--steps", default="1600", help="comma-separated extra budgets")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    preset, out = PRESETS["default"], args.demo_out
    # the demo's own stages for its largest candidate: the same recipe, only the budget and the paths change
    plan, largest = build_plan(out, preset, args.setting, args.seed, "auto"), preset.finetune_steps[-1]
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in plan.finals]
    unfinished = [str(plan.finals[m] / "selection.json") for m in methods
                  if m in plan.finals and not (plan.finals[m] / "selection.json").is_file()]
    if unknown or unfinished:
        print(f"step_budget_probe: error: --methods: unknown {unknown} (expected some of {', '.join(plan.finals)})"
              if unknown else f"step_budget_probe: error: --demo-out {out}: not a finished {args.setting} demo of seed "
              f"{args.seed} with the step rule (missing {', '.join(unfinished)})", file=sys.stderr)
        return 2
    rows = {}
    for method in methods:
        base = plan.finals[method].parent
        selection = json.loads((plan.finals[method] / "selection.json").read_text())
        rows[method] = {"demo_candidates": selection["dev_success"], "extra": {}}
        template = base / f"finetune_{method}_steps{largest}"
        train = next(st for st in plan.stages.values() if st.outputs == (template,))
        dev_eval = next(st for st in plan.stages.values() if st.args[:2] == ["eval", str(template)])
        for steps in (int(s) for s in args.steps.split(",")):
            run, ev = base / f"probe_finetune_{method}_steps{steps}", base / f"probe_dev_eval/{method}_steps{steps}"
            started = time.time()
            lapa(*with_values(train.args, out=str(run), max_steps=str(steps)), "--overwrite")
            lapa("eval", str(run), *with_values(dev_eval.args[2:], out=str(ev)))
            r = json.loads((ev / "results.json").read_text())
            rows[method]["extra"][str(steps)] = {
                "success": r["overall"]["success"], "episodes": r["overall"]["episodes"],
                "per_task_successes": {t: v["successes"] for t, v in r["tasks"].items()},
                "minutes": (time.time() - started) / 60}
            print(f"{method} {steps} steps: development success {r['overall']['success']:.3f}", flush=True)
    result = {"command": script_command(), "machine": machine(), "setting": args.setting,
              "seed": args.seed, "dev_seed": args.seed + DEV_SEED_OFFSET,
              "dev_episodes_per_task": preset.dev_episodes, "methods": rows}
    path = args.out or ROOT / f"results/step_budget_probe_{args.setting}_seed{args.seed}.json"
    atomic_write_json(path, result)
    print(f"\n| method | " + " | ".join([*map(str, preset.finetune_steps), *args.steps.split(",")]) + " |")
    for method, row in rows.items():
        rates = {**{k: v["success"] for k, v in row["demo_candidates"].items()},
                 **{k: v["success"] for k, v in row["extra"].items()}}
        print(f"| {method} | " + " | ".join(f"{100 * v:.0f}%" for v in rates.values()) + " |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
