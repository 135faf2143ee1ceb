"""Would a longer finetuning budget at a lower learning rate help LAPA more than Scratch? Measured on development
layouts only, reusing finished `lapa demo` runs (as scripts/finetune_lr_probe.py does).

    python scripts/finetune_budget_probe.py --runs /root/lapa_runs/seed0_fixed /root/lapa_runs/v2_seed1 \\
        /root/lapa_runs/v2_seed2 --steps 1600 --lr 1e-4 --out /root/lapa_runs/budget_probe \\
        --results results/finetune_budget_probe.json

The lower-rate probe (results/finetune_lr_probe.json) found every method still improving at 800 steps with
--lr 1e-4, and LAPA losing less than Scratch there. This probe gives each method one extra step candidate, `--steps`
at `--lr`, trained from that run's own pretrained model with that run's own finetuning arguments (a new --out under
this --out), and evaluated on that run's development layouts and episodes. Nothing is evaluated on the fresh
evaluation layouts.

The decision rule, fixed before any of these runs (so that the probe cannot pick its own winner):
  For each run and method key, `best` = the development success the step rule chooses today (the best of the
  run's default candidates), `extended` = the best of those and the new candidate; `gain` = mean over runs of
  (extended - best). The candidate goes into the demo's recipe (for every method alike) only if
  gain(lapa-<set>) - gain(scratch) >= +0.05 for every LAPA video set probed. Otherwise the idea is recorded as tried
  and failed, and the recipe stays.

Stage records and logs are in <out>/stages and <out>/logs (the demo's runner), so an interrupted probe resumes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from finetune_lr_probe import candidates, dev_success, method_keys, recorded, replace_option  # noqa: E402

from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.demo.plan import Plan, Stage  # noqa: E402
from lapa_learning.demo.runner import execute  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.machine import machine  # noqa: E402

MIN_GAIN_OVER_SCRATCH = 0.05
METHODS = "scratch,lapa-robot,lapa-hand,lapa-other-tasks,lapa-other-view,vpt-hand"


def build(out: Path, runs: list[Path], keys: list[str], steps: int, lr: str) -> tuple[Plan, dict]:
    """One finetuning + development evaluation per (run, method): the run's largest candidate's arguments with
    --max-steps, --lr and --out replaced."""
    plan, where = Plan(out), {}
    for run in runs:
        for key in keys:
            defaults = candidates(run, key)
            largest = max(defaults)
            tag = f"{run.name}.{key}.steps{steps}.lr{lr}"
            ft_out = out / run.name / f"finetune_{key}_steps{steps}_lr{lr}"
            dev_out = out / run.name / f"dev_eval_{key}_steps{steps}_lr{lr}"
            ft = replace_option(recorded(run, f"finetune-{key}-steps{largest}"), "--out", str(ft_out))
            ft = [*replace_option(ft, "--max-steps", str(steps)), "--lr", lr]
            dev = replace_option(recorded(run, f"dev-eval-{key}-steps{largest}"), "--out", str(dev_out))
            dev[1] = str(ft_out)  # `eval CHECKPOINT ...`
            plan.add(Stage(f"finetune.{tag}", ft, outputs=(ft_out,), fresh=True))
            plan.add(Stage(f"dev-eval.{tag}", dev, deps=(f"finetune.{tag}",), outputs=(dev_out,), fresh=True))
            where[(run.name, key)] = (defaults, dev_out)
    return plan, where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished `lapa demo --out` directories")
    parser.add_argument("--methods", default=METHODS,
                        help="method keys as in the demo's stage names (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1600,
                        help="the extra candidate's step budget (default: %(default)s)")
    parser.add_argument("--lr", default="1e-4", help="its finetuning peak learning rate (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="working directory (resumable)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=ROOT / "results/finetune_budget_probe.json")
    args = parser.parse_args()
    keys = method_keys(args, "finetune_budget_probe")
    if args.steps < 1:
        raise SystemExit(f"finetune_budget_probe: error: --steps {args.steps}: expected a step budget >= 1")
    runs = [r.resolve() for r in args.runs]
    started = time.time()
    plan, where = build(args.out.resolve(), runs, keys, args.steps, args.lr)
    print(f"finetune budget probe: {len(plan.stages)} stages in {args.out}", flush=True)
    failed = execute(plan, jobs=args.jobs)
    if failed:
        print(f"finetune_budget_probe: stage {failed} failed; see {plan.out / 'logs' / (failed + '.log')}",
              file=sys.stderr)
        return 1

    new_name = f"steps{args.steps}_lr{args.lr}"
    per_run, gains, new_success = {}, {}, {}
    for (run, key), (defaults, new_dev) in where.items():
        default = {n: dev_success(d) for n, d in sorted(defaults.items())}
        best_n = max(default, key=lambda n: (default[n]["success"], -n))  # the step rule: best, fewest steps on ties
        new = dev_success(new_dev)
        extended = max(default[best_n]["success"], new["success"])
        per_run.setdefault(run, {})[key] = {
            "default_candidates": {str(n): v for n, v in default.items()}, new_name: new,
            "chosen_default_only": {"steps": best_n, "success": default[best_n]["success"]},
            "chosen_extended": {"candidate": new_name if new["success"] > default[best_n]["success"] else best_n,
                                "success": extended}}
        gains.setdefault(key, []).append(extended - default[best_n]["success"])
        new_success.setdefault(key, []).append(new["success"])
    gain = {k: statistics.mean(v) for k, v in gains.items()}
    lapa_keys = [k for k in keys if k.startswith("lapa-")]
    over_scratch = {k: gain[k] - gain["scratch"] for k in lapa_keys}
    adopt = all(g >= MIN_GAIN_OVER_SCRATCH for g in over_scratch.values())
    result = {"command": script_command(), "machine": machine(), "steps": args.steps, "lr": float(args.lr),
              "runs": [str(r) for r in runs], "methods": keys,
              "rule": f"adopt the extra candidate only if, for every lapa-<set>, the mean gain over runs of the "
                      f"chosen development success (best of the default candidates and the new one, minus best of "
                      f"the default ones) minus Scratch's is >= {MIN_GAIN_OVER_SCRATCH}",
              "minutes": (time.time() - started) / 60, "per_run": per_run,
              "mean_new_candidate_success": {k: statistics.mean(v) for k, v in new_success.items()},
              "mean_gain": gain, "lapa_gain_minus_scratch": over_scratch, "adopt": adopt}
    atomic_write_json(args.results, result)
    print(f"\n| method | development success at {args.steps} steps, lr {args.lr} (mean) | chosen today (mean) "
          "| gain of the extended grid | minus Scratch's |")
    print("|---|---|---|---|---|")
    for k in keys:
        today = statistics.mean(per_run[r][k]["chosen_default_only"]["success"] for r in per_run)
        print(f"| {k} | {100 * result['mean_new_candidate_success'][k]:.1f} | {100 * today:.1f} | "
              f"{100 * gain[k]:+.1f} | " + (f"{100 * over_scratch[k]:+.1f} |" if k in over_scratch else "|"))
    print(f"adopt: {adopt}\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
