"""`lapa demo`: the whole LAPA experiment on built-in simulated data, in one command.

    generate pretraining videos ─> LAQ ─> label ─> latent pretraining ─────────> finetune ─> eval   lapa
                                        └─> shuffled latent labels ──────────────> finetune ─> eval   lapa-shuffled
                                └─> vision tower: predict future frames ─────────> finetune ─> eval   vision
    small labelled set ─> IDM ─> pseudo-label the videos ─> pretrain on them ──> finetune ─> eval   vpt
    same-embodiment robot videos with true actions ─> action pretraining ──────> finetune ─> eval   actionvla
    small labelled set ─────────────────────────────────────────────────────────> finetune ─> eval   scratch

Settings choose the pretraining videos: same tasks and camera (in-domain), other tasks (cross-task), another camera
(cross-view), or the same tasks done by another embodiment, a hand without the arm (cross-embodiment, action-free:
there ActionVLA stays the same-embodiment true-action reference, i.e. in-domain's robot videos). Every method
finetunes on the same small labelled set, whole (validation comes from separate episodes), for a step budget
chosen per method by one rule: each candidate budget is finetuned and evaluated on development layouts, the best
one (fewest steps on ties) is evaluated on fresh layouts.

Every stage is one `lapa ...` command (or a small in-process step such as picking the budget), run as a
subprocess with its output in <out>/logs/<stage>.log; two stages run at a time when they do not depend on each
other. A stage whose command finished before with the same arguments is reused, so re-running the demo with the
same --out continues where it stopped, and runs of several settings in one --out share what they have in common
(the labelled set, the IDM, Scratch, the robot videos and ActionVLA). Stages of one pretraining video set are
named `<stage>-<video set>` and write under <out>/<video set>/.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lapa_learning.errors import ConfigError
from lapa_learning.eval.evaluate import DEFAULT_NUM_ENVS
from lapa_learning.machine import summary as machine_summary
from lapa_learning.vla.configuration_vla import DEFAULT_VLA_CONFIG

METHODS = ("lapa", "vpt", "scratch", "actionvla", "lapa-shuffled", "vision")
METHOD_NAMES = {"lapa": "LAPA (latent pretraining)", "vpt": "VPT (IDM pseudo-actions)", "scratch": "Scratch",
                "actionvla": "ActionVLA (true actions)", "lapa-shuffled": "LAPA, shuffled latents (control)",
                "vision": "Vision-pretrained tower (control)"}
SETTINGS = ("in-domain", "cross-task", "cross-view", "cross-embodiment")
# The pretraining video set of each setting; ActionVLA needs true actions, so in cross-embodiment it uses the
# same-embodiment robot videos of in-domain (the reference), elsewhere the setting's own videos.
VIDEO_SET = {"in-domain": "robot", "cross-task": "other-tasks", "cross-view": "other-view", "cross-embodiment": "hand"}
ACTION_VIDEO_SET = {**VIDEO_SET, "cross-embodiment": "robot"}
# Evaluation layouts: always unseen in training (odd env seeds, training uses even ones), and offset from the
# base seeds whose evaluations were looked at while the demo was developed: base seed 0 (task, model and recipe
# choices) and 1000 (full runs before evaluation became fast enough for 150 episodes per task). docs/demo.md.
EVAL_SEED_OFFSET = 2000
# Development layouts, on which the finetuning step budget is chosen: base seed = training seed + 0 (the layouts
# the demo was developed on), never the evaluation ones.
DEV_SEED_OFFSET = 0
SELECTION_RULE = ("per method, finetune once per candidate step budget, evaluate each on the development layouts "
                  "(base seed = seed + DEV_SEED_OFFSET), keep the highest success rate (fewest steps on ties), and "
                  "evaluate only that one on the fresh layouts (base seed = seed + EVAL_SEED_OFFSET)")


@dataclass(frozen=True)
class Preset:
    tasks: tuple[str, ...]  # evaluated (and finetuned) tasks
    other_tasks: tuple[str, ...]  # pretraining tasks of the cross-task setting
    pretrain_episodes: int  # per pretraining task
    finetune_episodes: int  # labelled episodes per task (all trained on)
    val_episodes: int  # separate labelled episodes per task, for held-out errors only
    image_size: int
    laq_steps: int  # a step budget, not minutes: results must not depend on how busy the machine is
    pretrain_steps: int  # latent, shuffled, pseudo-action, true-action and vision pretraining
    finetune_steps: tuple[int, ...]  # candidate budgets; the step rule picks one per method (one = fixed)
    idm_steps: int  # VPT's inverse-dynamics model
    dev_episodes: int  # per task and candidate, on development layouts
    eval_episodes: int  # per task and method
    eval_max_steps: int
    vla_config: str = DEFAULT_VLA_CONFIG["cpu"]  # the CPU presets choose tiny-resnet (docs/demo.md)
    laq_config: str = "tiny"
    laq_offset: int = 12  # H of LAQ's tiny config; the vision control predicts x_t+H with the same H
    batch_size: int = 32
    laq_extra: tuple[str, ...] = ()
    vla_extra: tuple[str, ...] = ()
    # The action head of every action-predicting stage. The discrete 256-bin head decoded by argmax collapsed to
    # the extreme bins on small data (clipped actions pile up at exactly +-1), so the demo uses L1 chunks.
    action_head: tuple[str, ...] = ("--action-head", "continuous", "--chunk-size", "4")


PRESETS: dict[str, Preset] = {
    # The CPU default (2 cores). Tasks where the arm must find a randomly placed object (a demo's actions replayed
    # blind on other layouts succeed 20%, 27% and 47% of the time: scripts/task_replay_probe.py), two labelled
    # demos per task, a small ResNet tower (a ViT from scratch learned object positions too slowly). The finetuning
    # budget is chosen per method among 200/400/800 steps (400 was LAPA's best and 800 Scratch's). docs/demo.md.
    "default": Preset(tasks=("button-press-topdown-v3", "plate-slide-v3", "window-open-v3"),
                      other_tasks=("drawer-open-v3", "door-lock-v3", "coffee-push-v3"),
                      pretrain_episodes=60, finetune_episodes=2, val_episodes=2, image_size=64, laq_steps=800,
                      pretrain_steps=1500, finetune_steps=(200, 400, 800), idm_steps=1500, dev_episodes=20,
                      eval_episodes=150, eval_max_steps=150, vla_config="tiny-resnet"),
    # CI: the same code path in a few minutes; the numbers mean nothing.
    "quick": Preset(tasks=("push-v3",), other_tasks=("drawer-open-v3",), pretrain_episodes=3, finetune_episodes=2,
                    val_episodes=1, image_size=64, laq_steps=20, pretrain_steps=10, finetune_steps=(5, 10),
                    idm_steps=10, dev_episodes=1, eval_episodes=2, eval_max_steps=10, batch_size=8,
                    vla_config="tiny-resnet"),
    # A GPU machine: more data, longer training, more evaluation episodes.
    "gpu": Preset(tasks=("push-v3", "pick-place-v3", "sweep-into-v3", "peg-insert-side-v3"),
                  other_tasks=("drawer-open-v3", "button-press-topdown-v3", "door-open-v3", "window-open-v3"),
                  pretrain_episodes=400, finetune_episodes=10, val_episodes=3, image_size=128, laq_steps=50000,
                  pretrain_steps=20000, finetune_steps=(2500, 5000, 10000), idm_steps=10000, dev_episodes=20,
                  eval_episodes=50, eval_max_steps=150, laq_config="base", batch_size=64,
                  vla_config=DEFAULT_VLA_CONFIG["cuda"]),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"),
                        help="output directory; settings run into the same one share their common stages "
                             "(default: %(default)s)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: the CPU experiment; quick: a few minutes, no claims (CI); gpu: more data and steps")
    parser.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    parser.add_argument("--setting", choices=SETTINGS, default="in-domain",
                        help="pretraining videos of the same tasks (in-domain), of other tasks (cross-task), of "
                             "the same tasks from another camera (cross-view), or of the same tasks done by a "
                             "hand instead of the robot arm, without actions (cross-embodiment)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods to run (default: all: %(default)s)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="a fixed finetuning budget for every method instead of the per-method choice "
                             "among the preset's candidates on development layouts")
    parser.add_argument("--seed", type=int, default=0, help="seed of data generation and training")
    parser.add_argument("--jobs", type=int, default=2, help="stages run at the same time (default: 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--results", type=Path, default=None,
                        help="also write the results JSON here (e.g. results/demo_in-domain_seed0.json)")


@dataclass
class Stage:
    name: str
    args: list[str]  # arguments of `lapa` (for an in-process stage: what identifies its work)
    deps: tuple[str, ...] = ()
    outputs: tuple[Path, ...] = ()
    fresh: bool = False  # delete `outputs` before a re-run (stages that refuse to overwrite)
    call: Callable[[], None] | None = None  # an in-process stage (cheap bookkeeping) instead of a subprocess
    status: str = "waiting"
    started: float = 0.0
    seconds: float = 0.0
    process: subprocess.Popen | None = None


@dataclass
class Plan:
    out: Path
    stages: dict[str, Stage] = field(default_factory=dict)
    evals: dict[str, Path] = field(default_factory=dict)  # method -> its final evaluation directory
    finals: dict[str, Path] = field(default_factory=dict)  # method -> its finetuned (chosen) run
    video_set: str = "robot"  # the setting's pretraining videos

    def add(self, stage: Stage) -> None:
        self.stages[stage.name] = stage

    def keep(self, wanted: list[str]) -> None:
        """Drop every stage that none of `wanted` needs."""
        need, todo = set(), list(wanted)
        while todo:
            name = todo.pop()
            if name not in need:
                need.add(name)
                todo += self.stages[name].deps
        self.stages = {k: v for k, v in self.stages.items() if k in need}


def eval_stage(name: str, checkpoint: Path, out: Path, tasks: str, episodes: int, seed: int, preset: Preset,
               device: str, deps: tuple[str, ...]) -> Stage:
    """Every closed-loop evaluation of the demo (development and final), built in one place."""
    return Stage(name, ["eval", str(checkpoint), "--tasks", tasks, "--episodes-per-task", str(episodes),
                        "--max-steps", str(preset.eval_max_steps), "--image-size", str(preset.image_size),
                        "--seed", str(seed), "--num-envs", str(DEFAULT_NUM_ENVS), "--out", str(out),
                        "--device", device], deps=deps)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown method(s) {unknown or '(none given)'}; expected some of "
                          f"{', '.join(METHODS)}")
    return methods


def build_plan(out: Path, preset: Preset, setting: str, seed: int, device: str, methods=METHODS,
               finetune_steps: int | None = None) -> Plan:
    out = Path(out)
    plan = Plan(out)
    eval_tasks = ",".join(preset.tasks)
    size = str(preset.image_size)
    dev = ["--device", device]
    common = ["--config", preset.vla_config, "--batch-size", str(preset.batch_size), "--seed", str(seed),
              *preset.vla_extra, *dev]
    finetune, val = out / "data/finetune", out / "data/val"

    def generate(path: Path, tasks: str, episodes: int, data_seed: int, *extra: str) -> list[str]:
        return ["data", "generate", "--out", str(path), "--tasks", tasks, "--episodes-per-task", str(episodes),
                "--image-size", size, "--seed", str(data_seed), *extra]

    # the small labelled set (trained on whole) and separate validation episodes of the same tasks
    plan.add(Stage("data-finetune", generate(finetune, eval_tasks, preset.finetune_episodes, seed + 1,
                                             "--only-success"), outputs=(finetune,), fresh=True))
    plan.add(Stage("data-val", generate(val, eval_tasks, preset.val_episodes, seed + 3, "--only-success"),
                   outputs=(val,), fresh=True))
    # VPT's inverse-dynamics model learns from the labelled set only
    plan.add(Stage("vpt-train", ["vpt", "train", "--data", str(finetune), "--val-data", str(val), "--val-fraction",
                                 "0", "--out", str(out / "vpt/idm"), "--image-size", size, "--max-steps",
                                 str(preset.idm_steps), "--batch-size", str(preset.batch_size), "--seed", str(seed),
                                 "--overwrite", *dev], deps=("data-finetune", "data-val")))

    # the pretraining video sets this setting needs
    video_sets = {
        "robot": (eval_tasks, "front", ()),
        "other-tasks": (",".join(preset.other_tasks), "front", ()),
        "other-view": (eval_tasks, "front_left", ()),
        "hand": (eval_tasks, "front", ("--embodiment", "hand", "--action-free")),
    }
    for vset in dict.fromkeys((VIDEO_SET[setting], ACTION_VIDEO_SET[setting])):
        tasks, camera, extra = video_sets[vset]
        base, videos = out / vset, out / vset / "videos"
        s = f"-{vset}"
        plan.add(Stage("data-videos" + s, generate(videos, tasks, preset.pretrain_episodes, seed, "--camera", camera,
                                                   "--action-noise", "0.1", *extra),
                       outputs=(videos,), fresh=True))
        plan.add(Stage("laq-train" + s, ["laq", "train", "--data", str(videos), "--out", str(base / "laq"),
                                         "--config", preset.laq_config, "--max-steps", str(preset.laq_steps),
                                         *preset.laq_extra, *dev], deps=("data-videos" + s,)))
        plan.add(Stage("laq-label" + s, ["laq", "label", "--checkpoint", str(base / "laq"), "--data", str(videos),
                                         *dev], deps=("laq-train" + s,)))
        plan.add(Stage("laq-explain" + s, ["laq", "explain", "--checkpoint", str(base / "laq"), "--data",
                                           str(finetune), "--out", str(base / "explain"), *dev],
                       deps=("laq-train" + s, "data-finetune")))
        steps = ["--max-steps", str(preset.pretrain_steps)]
        plan.add(Stage("pretrain-lapa" + s, ["vla", "pretrain", "--data", str(videos), "--targets", "latents",
                                             "--out", str(base / "pretrain_lapa"), *steps, *common],
                       deps=("laq-label" + s,)))
        plan.add(Stage("pretrain-lapa-shuffled" + s, ["vla", "pretrain", "--data", str(videos), "--targets",
                                                      "latents", "--shuffle-labels", "--out",
                                                      str(base / "pretrain_lapa-shuffled"), *steps, *common],
                       deps=("laq-label" + s,)))
        plan.add(Stage("pretrain-vision" + s, ["vla", "pretrain-vision", "--data", str(videos), "--out",
                                               str(base / "pretrain_vision"), "--config", preset.vla_config,
                                               "--offset-frames", str(preset.laq_offset), *steps, "--batch-size",
                                               str(preset.batch_size), "--seed", str(seed), "--overwrite", *dev],
                       deps=("data-videos" + s,)))
        plan.add(Stage("vpt-label" + s, ["vpt", "label", "--checkpoint", str(out / "vpt/idm"), "--data", str(videos),
                                         *dev], deps=("vpt-train", "data-videos" + s)))
        plan.add(Stage("pretrain-vpt" + s, ["vla", "pretrain", "--data", str(videos), "--targets", "pseudo-actions",
                                            "--out", str(base / "pretrain_vpt"), *steps, *preset.action_head,
                                            *common], deps=("vpt-label" + s,)))
        if not extra:  # videos with their true actions
            plan.add(Stage("pretrain-actionvla" + s, ["vla", "pretrain", "--data", str(videos), "--targets",
                                                      "actions", "--out", str(base / "pretrain_actionvla"), *steps,
                                                      *preset.action_head, *common], deps=("data-videos" + s,)))

    candidates = (finetune_steps,) if finetune_steps is not None else preset.finetune_steps
    wanted = []  # the final evaluations (and the LAQ figures): every other stage is kept only if these need it
    for method in methods:
        vset = {"scratch": None, "actionvla": ACTION_VIDEO_SET[setting]}.get(method, VIDEO_SET[setting])
        s = f"-{vset}" if vset else ""
        base = out / vset if vset else out
        init = ["--init", str(base / f"pretrain_{method}")] if vset else []
        final = base / f"finetune_{method}"
        ft_deps = ("data-finetune", "data-val") + ((f"pretrain-{method}{s}",) if vset else ())

        def finetune_stage(name: str, run: Path, steps: int) -> Stage:  # fresh: no stale selection.json
            return Stage(name, ["vla", "finetune", "--data", str(finetune), "--val-data", str(val),
                                "--out", str(run), "--max-steps", str(steps), *preset.action_head, *common, *init],
                         deps=ft_deps, outputs=(run,), fresh=True)

        if len(candidates) == 1:
            plan.add(finetune_stage(f"finetune-{method}{s}", final, candidates[0]))
        else:
            dev_evals = []
            for steps in candidates:
                run = base / f"finetune_{method}_steps{steps}"
                plan.add(finetune_stage(f"finetune-{method}{s}-steps{steps}", run, steps))
                plan.add(eval_stage(f"dev-eval-{method}{s}-steps{steps}", run, base / f"dev_eval/{method}_steps{steps}",
                                    eval_tasks, preset.dev_episodes, seed + DEV_SEED_OFFSET, preset, device,
                                    deps=(f"finetune-{method}{s}-steps{steps}",)))
                dev_evals.append((steps, run, base / f"dev_eval/{method}_steps{steps}"))
            plan.add(Stage(f"finetune-{method}{s}", ["select-steps", str(final), *(str(r) for _, r, _ in dev_evals)],
                           deps=tuple(f"dev-eval-{method}{s}-steps{st}" for st in candidates),
                           call=lambda final=final, dev_evals=dev_evals: select_steps(final, dev_evals)))
        plan.add(eval_stage(f"eval-{method}{s}", final, base / f"eval/{method}", eval_tasks, preset.eval_episodes,
                            seed + EVAL_SEED_OFFSET, preset, device, deps=(f"finetune-{method}{s}",)))
        plan.evals[method], plan.finals[method] = base / f"eval/{method}", final
        wanted.append(f"eval-{method}{s}")
    plan.video_set = VIDEO_SET[setting]
    if {"lapa", "lapa-shuffled"} & set(methods):
        wanted.append(f"laq-explain-{plan.video_set}")
    plan.keep(wanted)
    return plan


def select_steps(final: Path, dev_evals: list[tuple[int, Path, Path]]) -> None:
    """The step rule: the candidate with the highest development success (fewest steps on ties) becomes `final`."""
    rates = {}
    for steps, _, ev in dev_evals:
        overall = json.loads((ev / "results.json").read_text())["overall"]
        rates[steps] = {"success": overall["success"], "episodes": overall["episodes"]}
    chosen = min(rates, key=lambda st: (-rates[st]["success"], st))
    run = next(r for st, r, _ in dev_evals if st == chosen)
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(run / "checkpoint", final / "checkpoint")
    from lapa_learning.io import atomic_write_json

    atomic_write_json(final / "selection.json", {"rule": SELECTION_RULE, "chosen_steps": chosen,
                                                 "dev_success": {str(k): v for k, v in rates.items()},
                                                 "copied_from": str(run)})
    print(f"chosen: {chosen} steps; development success {json.dumps(rates)}")


def run(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.finetune_steps is not None and args.finetune_steps < 1:
        raise ConfigError(f"--finetune-steps must be at least 1, got {args.finetune_steps}")
    started = time.time()
    plan = build_plan(args.out, preset, args.setting, args.seed, args.device, parse_methods(args.methods),
                      args.finetune_steps)
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


# ---------------------------------------------------------------------------------------------- the scheduler
def execute(plan: Plan, jobs: int) -> str | None:
    """Run the stages in dependency order, `jobs` at a time. Returns the name of a failed stage, or None."""
    (plan.out / "logs").mkdir(parents=True, exist_ok=True)
    (plan.out / "stages").mkdir(parents=True, exist_ok=True)
    done: dict[str, bool] = {}

    def reusable(name: str) -> bool:  # finished with the same arguments, and so did everything it depends on
        if name not in done:
            stage = plan.stages[name]
            done[name] = _is_done(plan, stage) and all(reusable(d) for d in stage.deps)
        return done[name]

    for stage in plan.stages.values():
        if reusable(stage.name):
            stage.status = "reused"
    running: dict[Future, Stage] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            for stage in plan.stages.values():
                ready = stage.status == "waiting" and all(
                    plan.stages[d].status in ("done", "reused") for d in stage.deps)
                if ready and len(running) < jobs:
                    stage.status, stage.started = "running", time.time()
                    running[pool.submit(_run_stage, plan, stage)] = stage
            if not running:
                break
            done, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
            for future in done:
                stage = running.pop(future)
                stage.seconds = time.time() - stage.started
                stage.status = "done" if future.result() == 0 else "failed"
                clear = "\r\033[K" if sys.stdout.isatty() else ""
                print(f"{clear}[{stage.status:>6}] {stage.name} ({stage.seconds / 60:.1f} min)", flush=True)
            if any(s.status == "failed" for s in plan.stages.values()):
                for stage in running.values():  # stop the sibling stage; its outputs are kept for a resume
                    if stage.process is not None and stage.process.poll() is None:
                        stage.process.terminate()
                    stage.status = "stopped"
                return next(s.name for s in plan.stages.values() if s.status == "failed")
            _print_progress(plan, running.values())
    for stage in plan.stages.values():
        if stage.status == "reused":
            print(f"[reused] {stage.name}")
    return None


def _command(stage: Stage) -> list[str]:
    return [sys.executable, "-m", "lapa_learning.cli", *stage.args]


def _marker(plan: Plan, stage: Stage) -> Path:
    return plan.out / "stages" / f"{stage.name}.json"


def _is_done(plan: Plan, stage: Stage) -> bool:
    try:
        return json.loads(_marker(plan, stage).read_text())["args"] == stage.args
    except (OSError, ValueError, KeyError):
        return False


def _run_stage(plan: Plan, stage: Stage) -> int:
    if stage.fresh:
        for path in stage.outputs:
            if path.exists():
                shutil.rmtree(path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    log = plan.out / "logs" / f"{stage.name}.log"
    with open(log, "w") as f:
        f.write(("# in process: " if stage.call else "$ lapa ") + " ".join(shlex.quote(a) for a in stage.args) + "\n")
        f.flush()
        if stage.call is not None:
            from contextlib import redirect_stdout

            try:
                with redirect_stdout(f):
                    stage.call()
                code = 0
            except Exception:  # noqa: BLE001 - reported in the stage's log like a failed subprocess
                f.write(traceback.format_exc())
                code = 1
        else:
            stage.process = subprocess.Popen(_command(stage), stdout=f, stderr=subprocess.STDOUT, env=env)
            code = stage.process.wait()
    if code == 0:
        from lapa_learning.io import atomic_write_json

        atomic_write_json(_marker(plan, stage), {"args": stage.args, "seconds": time.time() - stage.started})
    return code


def _print_progress(plan: Plan, running) -> None:
    finished = sum(s.status in ("done", "reused") for s in plan.stages.values())
    parts = []
    for stage in running:
        parts.append(f"{stage.name}: {_last_progress(plan.out / 'logs' / f'{stage.name}.log')}")
    line = f"[{finished}/{len(plan.stages)}] " + " | ".join(parts)
    width = max(40, _terminal_width() - 1)
    if sys.stdout.isatty():
        print("\r\033[K" + line[:width], end="", flush=True)
    else:  # a log file: one line every ~30 s is plenty
        now = time.time()
        if now - getattr(_print_progress, "last", 0.0) > 30:
            _print_progress.last = now
            print(line[:200], flush=True)


def _last_progress(log: Path) -> str:
    """The newest progress-bar state in a log (tqdm writes carriage returns)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 400))
            tail = f.read().decode(errors="replace")
    except OSError:
        return "starting"
    pieces = [p.strip() for p in tail.replace("\n", "\r").split("\r") if p.strip()]
    return (pieces[-1] if pieces else "starting")[:70]


def _terminal_width() -> int:
    return shutil.get_terminal_size((120, 20)).columns


# ---------------------------------------------------------------------------------------------- the report
def write_report(plan: Plan, preset: Preset, args: argparse.Namespace, minutes: float) -> str:
    out, vset = plan.out, plan.video_set
    methods, selection = {}, {}
    fixed = args.finetune_steps is not None or len(preset.finetune_steps) == 1
    for method, ev in plan.evals.items():
        r = json.loads((ev / "results.json").read_text())
        methods[method] = {"success": r["overall"]["success"], "ci95": r["overall"]["ci95"],
                           "episodes": r["overall"]["episodes"], "successes": r["overall"].get("successes"),
                           "per_task": {t: v["success"] for t, v in r["tasks"].items()},
                           "per_task_successes": {t: v["successes"] for t, v in r["tasks"].items()},
                           "pretraining_videos": None if method == "scratch" else
                           ACTION_VIDEO_SET[args.setting] if method == "actionvla" else vset}
        chosen = None if fixed else _read_json(plan.finals[method] / "selection.json")
        methods[method]["finetune_steps"] = chosen["chosen_steps"] if chosen else args.finetune_steps or \
            preset.finetune_steps[0]
        selection[method] = chosen
    if args.setting == "cross-embodiment" and "actionvla" in methods:
        methods["actionvla"]["note"] = ("same-embodiment reference: pretrained on the true actions of robot videos "
                                        "of the same tasks, not on the hand videos the other methods see")
    stage_minutes = {}
    for stage in plan.stages.values():
        try:
            stage_minutes[stage.name] = json.loads(_marker(plan, stage).read_text())["seconds"] / 60
        except (OSError, ValueError, KeyError):
            pass
    results = {
        "command": " ".join(shlex.quote(a) for a in ["lapa", *sys.argv[1:]]) if sys.argv[1:2] == ["demo"]
        else " ".join(shlex.quote(a) for a in sys.argv),  # as invoked (sys.argv), never retyped
        "minutes": minutes,
        "preset": args.preset,
        "setting": args.setting,
        "pretraining_videos": vset,
        "seed": args.seed,
        "machine": machine_summary(),
        "tasks": list(preset.tasks),
        "pretrain_episodes_per_task": preset.pretrain_episodes,
        "finetune_episodes_per_task": preset.finetune_episodes,
        "finetune_episodes_trained_on": "all (validation from separate episodes: data/val)",
        "val_episodes_per_task": preset.val_episodes,
        "eval_episodes_per_task": preset.eval_episodes,
        "eval_seed": args.seed + EVAL_SEED_OFFSET,  # base seed of the evaluation layouts (lapa eval --seed)
        "finetune_step_rule": {
            "rule": f"fixed: {args.finetune_steps or preset.finetune_steps[0]} steps for every method" if fixed
            else SELECTION_RULE,
            "candidates": [] if fixed else list(preset.finetune_steps),
            "dev_seed": None if fixed else args.seed + DEV_SEED_OFFSET,
            "dev_episodes_per_task": None if fixed else preset.dev_episodes,
            "per_method": {m: c and {"chosen_steps": c["chosen_steps"], "dev_success": c["dev_success"]}
                           for m, c in selection.items()},
        },
        "methods": methods,
        "stage_minutes": stage_minutes,
    }
    # What the intermediate stages achieved (each stage's own held-out numbers).
    base = out / vset
    laq_eval = (_read_json(base / "laq" / "summary.json") or {}).get("eval", {})
    probe = (_read_json(base / "explain" / "laq_explain.json") or {}).get("probe", {})
    latent = _read_json(base / "pretrain_lapa" / "train_record.json") or {}
    results["laq"] = {k: laq_eval.get(k) for k in ("psnr_changed", "psnr_changed_copy_baseline",
                                                     "codes_used_fraction")}
    results["laq"]["probe_r2_xyz"] = probe.get("probe_r2_xyz")
    results["latent_pretraining"] = {"latent_token_accuracy": latent.get("metrics", {}).get("latent_token_accuracy"),
                                     "majority_baseline_accuracy": latent.get("majority_baseline_accuracy")}
    idm = _read_json(out / "vpt" / "idm" / "train_record.json") or {}
    results["vpt_idm"] = {k: idm.get("metrics", {}).get(k) for k in ("l1", "mean_baseline_l1", "pearson_per_dim")}
    vision = _read_json(base / "pretrain_vision" / "train_record.json") or {}
    results["vision_pretraining"] = {k: vision.get("metrics", {}).get(k) for k in ("val_mse", "copy_x_t_mse")}
    from lapa_learning.io import atomic_write_json

    stem = out / f"results_{args.setting}"
    atomic_write_json(stem.with_suffix(".json"), results)
    if args.results:
        atomic_write_json(Path(args.results), results)
    table = results_table(results)
    stem.with_suffix(".md").write_text(table + "\n")
    plot_results(results, stem.with_suffix(".png"))
    from lapa_learning.data.reader import EpisodeDataset

    sets = [out / "data/finetune", out / "data/val", *dict.fromkeys(out / m["pretraining_videos"] / "videos"
                                                                    for m in methods.values()
                                                                    if m["pretraining_videos"])]
    data = "\n".join(f"  {EpisodeDataset(p)}" for p in sets)
    return (f"\n{table}\n\ndata:\n{data}\n"
            f"wrote {stem}.json, {stem}.md, {stem}.png")


def results_table(results: dict) -> str:
    tasks = results["tasks"]
    head = "| method | success | 95% CI | episodes | finetune steps | " + " | ".join(tasks) + " |"
    rows = [head, "|" + "---|" * (5 + len(tasks))]
    for method, r in results["methods"].items():
        per_task = " | ".join(f"{100 * r['per_task'][t]:.0f}%" for t in tasks)
        name = METHOD_NAMES[method] + (" [same-embodiment reference]" if "note" in r else "")
        rows.append(f"| {name} | {100 * r['success']:.1f}% | [{100 * r['ci95'][0]:.1f}, "
                    f"{100 * r['ci95'][1]:.1f}] | {r['episodes']} | {r['finetune_steps']} | {per_task} |")
    return "\n".join(rows)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, lows, highs = [], [], [], []
    for method, r in results["methods"].items():
        labels.append(method.replace("lapa-shuffled", "LAPA\nshuffled").replace("lapa", "LAPA").replace(
            "actionvla", "ActionVLA").replace("vpt", "VPT").replace("scratch", "Scratch").replace("vision", "Vision"))
        values.append(100 * r["success"])
        lows.append(100 * (r["success"] - r["ci95"][0]))
        highs.append(100 * (r["ci95"][1] - r["success"]))
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 1.5, 3.2), dpi=120)
    ax.bar(labels, values, yerr=[lows, highs], capsize=6, color="#2b7bba")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"{results['setting']}: Meta-World {', '.join(t.replace('-v3', '') for t in results['tasks'])}\n"
                 f"{results['finetune_episodes_per_task']} labelled demos/task, 95% CI", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
