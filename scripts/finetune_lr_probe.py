"""Would a lower finetuning learning rate help LAPA more than Scratch? Measured on development layouts only,
reusing finished `lapa demo` runs.

    python scripts/finetune_lr_probe.py --runs /root/lapa_runs/seed0_fixed /root/lapa_runs/v2_seed1 \\
        /root/lapa_runs/v2_seed2 --methods scratch,lapa-robot,lapa-hand,vpt-hand --lr 1e-4 \\
        --out /root/lapa_runs/lr_probe --results results/finetune_lr_probe.json

Every finetuning run of the demo starts from its pretrained model at the default peak learning rate (3e-4). A
lower one keeps more of what pretraining learnt (a soft freeze), which should matter more for a model pretrained
on latent actions than for one trained from scratch. For each demo run directory (a `lapa demo --out`) and each
method key (`scratch`, or `<method>-<video set>` as in the demo's stage names: lapa-robot, lapa-hand, vpt-hand,
...), this reruns that run's own finetuning stages for every step candidate with `--lr` added (the recorded
arguments otherwise unchanged, a new --out under this --out) and their development evaluations (same layouts,
same episodes), and sets the development success beside the one recorded at the default rate. Nothing is
evaluated on the fresh evaluation layouts.

The decision rule, fixed before any of these runs (so that the probe cannot pick its own winner):
  For each method key, `change` = mean over runs and step candidates of (development success at --lr minus at
  the default rate); a mean over all candidates, not the best one, so that having more candidates is no gain in
  itself. The lower rate goes into the demo's recipe (as extra candidates that the step rule chooses from for
  every method alike) only if change(lapa-<set>) - change(scratch) >= +0.05 for every LAPA video set probed.
  Otherwise the idea is recorded as tried and failed, and the recipe stays.

Stage records and logs are in <out>/stages and <out>/logs (the demo's runner), so an interrupted probe resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.demo.plan import Plan, Stage  # noqa: E402
from lapa_learning.demo.runner import execute, marker  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.machine import machine  # noqa: E402

MIN_GAIN_OVER_SCRATCH = 0.05


def recorded(run: Path, stage: str) -> list[str]:
    """The arguments a demo stage ran with (its marker in <run>/stages)."""
    path = run / "stages" / f"{stage}.json"
    try:
        return json.loads(path.read_text())["args"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"finetune_lr_probe: error: --runs {run}: no finished stage {stage} ({path}: {err}); "
                         "expected the --out of a finished `lapa demo` run that includes this method") from None


def replace_option(args: list[str], option: str, value: str) -> list[str]:
    i = args.index(option)
    return [*args[:i + 1], value, *args[i + 2:]]


def candidates(run: Path, key: str) -> dict[int, Path]:
    """step budget -> the run's development evaluation directory for that candidate (from its select-steps)."""
    args = recorded(run, f"finetune-{key}")
    if args[:1] != ["select-steps"]:
        raise SystemExit(f"finetune_lr_probe: error: {run}: stage finetune-{key} is not a step selection")
    steps = {}
    for cand in args[2:]:
        n = int(cand.rsplit("_steps", 1)[1])
        dev = recorded(run, f"dev-eval-{key}-steps{n}")
        steps[n] = Path(dev[dev.index("--out") + 1])
    return steps


def dev_success(eval_dir: Path) -> dict:
    overall = json.loads((eval_dir / "results.json").read_text())["overall"]
    return {"success": overall["success"], "episodes": overall["episodes"]}


def method_keys(args, prog: str) -> list[str]:
    """--methods as a list of keys, after checking that --lr is a rate > 0 and that the keys include scratch and a
    lapa-<video set> (what the decision rules compare)."""
    try:
        if float(args.lr) <= 0:
            raise ValueError
    except ValueError:
        raise SystemExit(f"{prog}: error: --lr {args.lr!r}: expected a learning rate > 0") from None
    keys = [k.strip() for k in args.methods.split(",") if k.strip()]
    if "scratch" not in keys or not any(k.startswith("lapa-") for k in keys):
        raise SystemExit(f"{prog}: error: --methods must include scratch and at least one lapa-<video set>")
    return keys


def build(out: Path, runs: list[Path], keys: list[str], lr: str) -> tuple[Plan, dict]:
    plan, where = Plan(out), {}
    for run in runs:
        for key in keys:
            for n, base_dev in candidates(run, key).items():
                tag = f"{run.name}.{key}.steps{n}.lr{lr}"
                ft_out = out / run.name / f"finetune_{key}_steps{n}_lr{lr}"
                dev_out = out / run.name / f"dev_eval_{key}_steps{n}_lr{lr}"
                ft = [*replace_option(recorded(run, f"finetune-{key}-steps{n}"), "--out", str(ft_out)), "--lr", lr]
                dev = replace_option(recorded(run, f"dev-eval-{key}-steps{n}"), "--out", str(dev_out))
                dev[1] = str(ft_out)  # `eval CHECKPOINT ...`
                plan.add(Stage(f"finetune.{tag}", ft, outputs=(ft_out,), fresh=True))
                plan.add(Stage(f"dev-eval.{tag}", dev, deps=(f"finetune.{tag}",), outputs=(dev_out,), fresh=True))
                where[(run.name, key, n)] = (base_dev, dev_out)
    return plan, where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished `lapa demo --out` directories")
    parser.add_argument("--methods", default="scratch,lapa-robot,lapa-hand",
                        help="method keys as in the demo's stage names (default: %(default)s)")
    parser.add_argument("--lr", default="1e-4", help="the finetuning peak learning rate to try (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="working directory (resumable)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=ROOT / "results/finetune_lr_probe.json")
    args = parser.parse_args()
    keys = method_keys(args, "finetune_lr_probe")
    runs = [r.resolve() for r in args.runs]
    started = time.time()
    plan, where = build(args.out.resolve(), runs, keys, args.lr)
    print(f"finetune lr probe: {len(plan.stages)} stages in {args.out}", flush=True)
    failed = execute(plan, jobs=args.jobs)
    if failed:
        print(f"finetune_lr_probe: stage {failed} failed; see {plan.out / 'logs' / (failed + '.log')}", file=sys.stderr)
        return 1

    per_run, change = {}, {}
    for (run, key, n), (base_dev, new_dev) in where.items():
        row = per_run.setdefault(run, {}).setdefault(key, {})
        row[str(n)] = {"default_lr": dev_success(base_dev), f"lr_{args.lr}": dev_success(new_dev)}
        change.setdefault(key, []).append(row[str(n)][f"lr_{args.lr}"]["success"] - row[str(n)]["default_lr"]["success"])
    for run_rows in per_run.values():  # what the step rule would choose with both rates as candidates
        for key, row in run_rows.items():
            options = [(v[rate]["success"], int(n), rate != "default_lr", rate)
                       for n, v in row.items() for rate in ("default_lr", f"lr_{args.lr}")]
            best_default = max((o for o in options if o[3] == "default_lr"), key=lambda o: (o[0], -o[1]))
            best_all = max(options, key=lambda o: (o[0], -o[1], not o[2]))
            row["chosen_default_only"] = {"steps": best_default[1], "success": best_default[0]}
            row["chosen_both_rates"] = {"steps": best_all[1], "rate": best_all[3], "success": best_all[0]}
    mean_change = {k: statistics.mean(v) for k, v in change.items()}
    lapa_keys = [k for k in keys if k.startswith("lapa-")]
    gains = {k: mean_change[k] - mean_change["scratch"] for k in lapa_keys}
    adopt = all(g >= MIN_GAIN_OVER_SCRATCH for g in gains.values())
    result = {"command": script_command(), "machine": machine(), "lr": float(args.lr), "default_lr": 3e-4,
              "runs": [str(r) for r in runs], "methods": keys,
              "rule": f"adopt the lower rate only if, for every lapa-<set>, mean change (over runs and step "
                      f"candidates) of development success minus Scratch's is >= {MIN_GAIN_OVER_SCRATCH}",
              "minutes": (time.time() - started) / 60, "per_run": per_run,
              "mean_change": mean_change, "lapa_change_minus_scratch": gains, "adopt": adopt}
    atomic_write_json(args.results, result)
    print("\n| method | mean change in development success at --lr " + args.lr + " | minus Scratch's |")
    print("|---|---|---|")
    for k in keys:
        print(f"| {k} | {100 * mean_change[k]:+.1f} | "
              + (f"{100 * gains[k]:+.1f} |" if k in gains else "|"))
    print(f"adopt: {adopt}\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
