"""`lapa demo`: the whole LAPA experiment on built-in simulated data, in one command.

    generate pretraining videos ─> LAQ ─> label ─> latent pretraining ─────────> finetune ─> eval   lapa
                                        └─> shuffled latent labels ──────────────> finetune ─> eval   lapa-shuffled
                                └─> vision tower: predict future frames ─────────> finetune ─> eval   vision
                                          └─> latent pretraining (same labels) ──> finetune ─> eval   lapa-vision*
                                          └─> the same, tower frozen ────────────> finetune ─> eval   lapa-vision-frozen*
    small labelled set ─> IDM ─> pseudo-label the videos ─> pretrain on them ──> finetune ─> eval   vpt
    same-embodiment robot videos with true actions ─> action pretraining ──────> finetune ─> eval   actionvla
    small labelled set ─────────────────────────────────────────────────────────> finetune ─> eval   scratch

Settings choose the pretraining videos: same tasks and camera (in-domain), other tasks (cross-task), another camera
(cross-view), or the same tasks done by another embodiment, a hand without the arm (cross-embodiment, action-free:
there ActionVLA stays the same-embodiment true-action reference, i.e. in-domain's robot videos). Every method
finetunes on the same small labelled set, whole (validation comes from separate episodes), for a step budget
chosen per method by one rule: each candidate budget is finetuned and evaluated on development layouts, the best
one (fewest steps on ties) is evaluated on fresh layouts. * lapa-vision and lapa-vision-frozen run only
when --methods names them.
With --laq-seeds K > 1 the LAQ is trained K times (seeds seed*K .. seed*K+K-1) and the one whose latent tokens
best explain the motion of the labelled demos (the probe of `lapa laq explain`) labels the videos.

Every stage is one `lapa ...` command (or a small in-process step such as picking the budget), run as a
subprocess with its output in <out>/logs/<stage>.log; two stages run at a time when they do not depend on each
other. A stage whose command finished before with the same arguments is reused, so re-running the demo with the
same --out continues where it stopped, and runs of several settings in one --out share what they have in common
(the labelled set, the IDM, Scratch, the robot videos and ActionVLA). Stages of one pretraining video set are
named `<stage>-<video set>` and write under <out>/<video set>/.

The package: plan.py (what runs: presets, stages, the step rule), runner.py (how stages run), report.py (the
results JSON, table and plot); this module is the verb.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from lapa_learning.demo.plan import (DEV_SEED_OFFSET, EVAL_SEED_OFFSET, EXTRA_METHODS, METHODS, PRESETS,  # noqa: F401
                                     SETTINGS, Plan, Preset, Stage, build_plan, parse_methods, select_steps)
from lapa_learning.demo.report import write_report
from lapa_learning.demo.runner import execute
from lapa_learning.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"),
                        help="output directory; settings run into the same one share their common stages "
                             "(default: %(default)s)")
    which = parser.add_mutually_exclusive_group()  # `--preset gpu --quick` is refused, not decided by order
    which.add_argument("--preset", choices=sorted(PRESETS), default="default",
                       help="default: the CPU experiment; quick: a few minutes, no claims (CI); gpu: more data and steps")
    which.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    parser.add_argument("--setting", choices=SETTINGS, default="in-domain",
                        help="pretraining videos of the same tasks (in-domain), of other tasks (cross-task), of "
                             "the same tasks from another camera (cross-view), or of the same tasks done by a "
                             "hand instead of the robot arm, without actions (cross-embodiment)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods to run (default: %(default)s; also: "
                             f"{', '.join(EXTRA_METHODS)})")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated Meta-World tasks to finetune and evaluate on (default: the preset's; "
                             "default preset: " + ",".join(PRESETS["default"].tasks) + ")")
    parser.add_argument("--other-tasks", default=None,
                        help="cross-task only: the tasks of the pretraining videos, none of them in --tasks "
                             "(default: the preset's; default preset: " + ",".join(PRESETS["default"].other_tasks)
                             + ")")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="a fixed finetuning budget for every method instead of the per-method choice "
                             "among the preset's candidates on development layouts")
    parser.add_argument("--eval-episodes", type=int, default=None, metavar="N",
                        help="evaluation episodes per task and method on the fresh layouts (default: the preset's; "
                             f"default preset: {PRESETS['default'].eval_episodes})")
    parser.add_argument("--laq-seeds", type=int, default=None, metavar="K",
                        help="LAQ selection: train the LAQ with K seeds and keep the one whose latent tokens best "
                             "explain the labelled demos' motion (cross-validated probe R²; default: the preset's, "
                             "1 = one LAQ, config seed 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data generation and training")
    parser.add_argument("--jobs", type=int, default=2, help="stages run at the same time (default: 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--results", type=Path, default=None,
                        help="also write the results JSON here (e.g. results/demo_in-domain_seed0.json)")


def with_tasks(preset: Preset, setting: str, tasks: str | None, other_tasks: str | None) -> Preset:
    """The preset with the task sets of --tasks and --other-tasks (None: the preset's own), checked."""
    from lapa_learning.sim.metaworld_env import parse_task_list

    if other_tasks is not None and setting != "cross-task":
        raise ConfigError(f"--other-tasks: only the cross-task setting pretrains on other tasks' videos; "
                          f"--setting {setting} does not use it")
    if tasks is not None:
        preset = dataclasses.replace(preset, tasks=tuple(parse_task_list(tasks, "--tasks")))
    if other_tasks is not None:
        preset = dataclasses.replace(preset, other_tasks=tuple(parse_task_list(other_tasks, "--other-tasks")))
    shared = [t for t in preset.other_tasks if t in preset.tasks]
    if setting == "cross-task" and shared:
        raise ConfigError(f"--other-tasks: {shared} also in --tasks ({','.join(preset.tasks)}); cross-task "
                          "pretrains only on videos of tasks it is not evaluated on (pass --other-tasks)")
    return preset


def stable_out(out: Path) -> Path:
    """--out as the stages' arguments name it: relative to the working directory when inside it (the default
    outputs/demo), else absolute. `--out rel/d` and `--out $PWD/rel/d` then give the same stages, so a rerun spelled
    either way reuses what the other finished."""
    out = Path(out).resolve()
    try:
        return out.relative_to(Path.cwd().resolve())
    except ValueError:
        return out


def run(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.finetune_steps is not None and args.finetune_steps < 1:
        raise ConfigError(f"--finetune-steps must be at least 1, got {args.finetune_steps}")
    if args.laq_seeds is not None:
        if args.laq_seeds < 1:
            raise ConfigError(f"--laq-seeds must be at least 1 (LAQ candidates), got {args.laq_seeds}")
        preset = dataclasses.replace(preset, laq_seeds=args.laq_seeds)
    if args.eval_episodes is not None:
        if args.eval_episodes < 1:
            raise ConfigError(f"--eval-episodes must be at least 1 (per task and method), got {args.eval_episodes}")
        preset = dataclasses.replace(preset, eval_episodes=args.eval_episodes)
    if not 0 <= args.seed < 2 ** 31:
        raise ConfigError(f"--seed {args.seed}: expected an integer in [0, 2^31) (every stage takes it)")
    if args.device == "cuda":
        from lapa_learning.cli_args import pick_device

        pick_device("cuda")  # no CUDA: the error now, not after the data stages
    if args.results is not None and (args.results.is_dir() or any(p.is_file() for p in args.results.parents)):
        raise ConfigError(f"--results {args.results}: expected a JSON file path (it is a directory, or under a file)")
    preset = with_tasks(preset, args.setting, args.tasks, args.other_tasks)
    started = time.time()
    plan = build_plan(stable_out(args.out), preset, args.setting, args.seed, args.device,
                      parse_methods(args.methods), args.finetune_steps)
    print(f"LAPA demo ({args.preset} preset, {args.setting}) in {Path(args.out).resolve()}: "
          f"{len(plan.stages)} stages, {args.jobs} at a time; logs in {plan.out / 'logs'}")
    failed = execute(plan, jobs=args.jobs)
    if failed:
        log = plan.out / "logs" / f"{failed}.log"
        tail = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-15:] if log.exists() else []
        print(f"\nstage {failed} failed; the end of {log}:\n  " + "\n  ".join(tail), file=sys.stderr)
        return 1
    report = write_report(plan, preset, args, minutes=(time.time() - started) / 60)
    print(report)
    return 0
