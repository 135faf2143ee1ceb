"""`lapa demo`: the whole LAPA experiment on built-in simulated data, in one command.

    generate pretraining videos ──> train LAQ ──> label ──> latent pretraining ──> finetune ──> eval   (LAPA)
                          └──────────────────────────────> action pretraining ──> finetune ──> eval   (ActionVLA)
    generate small labelled set ─────────────────────────────────────────────────> finetune ──> eval   (Scratch)

Every stage is one `lapa ...` command, run as a subprocess with its output in <out>/logs/<stage>.log; two stages
run at a time when they do not depend on each other (the CPU default is a 2-core machine). A stage whose command
finished before with the same arguments is reused, so re-running the demo with the same --out continues where it
stopped. The pretraining set is generated with its true actions, which only the ActionVLA baseline reads: LAQ and
latent pretraining see frames and instructions only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from lapa_learning.errors import ConfigError
from lapa_learning.eval.evaluate import DEFAULT_NUM_ENVS

METHODS = ("lapa", "scratch", "actionvla")
SETTINGS = ("in-domain", "cross-task", "cross-view")
# Evaluation layouts: always unseen in training (odd env seeds, training uses even ones), and offset from the
# base seeds whose evaluations were looked at while the demo was developed: base seed 0 (task, model and recipe
# choices) and 1000 (full runs before evaluation became fast enough for 150 episodes per task). docs/demo.md.
EVAL_SEED_OFFSET = 2000


@dataclass(frozen=True)
class Preset:
    tasks: tuple[str, ...]  # evaluated (and finetuned) tasks
    other_tasks: tuple[str, ...]  # pretraining tasks of the cross-task setting
    pretrain_episodes: int  # per pretraining task
    finetune_episodes: int  # labelled episodes per task
    image_size: int
    laq_steps: int  # a step budget, not minutes: results must not depend on how busy the machine is
    pretrain_steps: int
    finetune_steps: int
    eval_episodes: int  # per task and method
    eval_max_steps: int
    vla_config: str = "tiny"
    laq_config: str = "tiny"
    batch_size: int = 32
    laq_extra: tuple[str, ...] = ()
    vla_extra: tuple[str, ...] = ()
    # The action head of every action-predicting stage. The discrete 256-bin head decoded by argmax collapsed to
    # the extreme bins on small data (clipped actions pile up at exactly +-1), so the demo uses L1 chunks.
    action_head: tuple[str, ...] = ("--action-head", "continuous", "--chunk-size", "4")


PRESETS: dict[str, Preset] = {
    # The CPU default (2 cores): ~17 minutes. Tasks where the arm must find a randomly placed object (a demo's
    # actions replayed blind on other layouts succeed 20%, 27% and 47% of the time: scripts/task_replay_probe.py),
    # two labelled demos per task, a small ResNet tower (a ViT from scratch learned object positions too slowly)
    # and short finetuning (longer finetuning let Scratch catch up by memorising the demos). See docs/demo.md.
    "default": Preset(tasks=("button-press-topdown-v3", "plate-slide-v3", "window-open-v3"),
                      other_tasks=("drawer-open-v3", "door-lock-v3", "coffee-push-v3"),
                      pretrain_episodes=60, finetune_episodes=2, image_size=64, laq_steps=800,
                      pretrain_steps=1500, finetune_steps=400, eval_episodes=150, eval_max_steps=150,
                      vla_config="tiny-resnet"),
    # CI: the same code path in a few minutes; the numbers mean nothing.
    "quick": Preset(tasks=("push-v3",), other_tasks=("drawer-open-v3",), pretrain_episodes=3, finetune_episodes=2,
                    image_size=64, laq_steps=20, pretrain_steps=10, finetune_steps=10,
                    eval_episodes=2, eval_max_steps=10, batch_size=8, vla_config="tiny-resnet"),
    # A GPU machine: more data, longer training, more evaluation episodes.
    "gpu": Preset(tasks=("push-v3", "pick-place-v3", "sweep-into-v3", "peg-insert-side-v3"),
                  other_tasks=("drawer-open-v3", "button-press-topdown-v3", "door-open-v3", "window-open-v3"),
                  pretrain_episodes=400, finetune_episodes=10, image_size=128, laq_steps=50000,
                  pretrain_steps=20000, finetune_steps=5000, eval_episodes=50, eval_max_steps=150,
                  laq_config="base", batch_size=64),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory (default: %(default)s)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: the CPU experiment; quick: a few minutes, no claims (CI); gpu: more data and steps")
    parser.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    parser.add_argument("--setting", choices=SETTINGS, default="in-domain",
                        help="pretraining videos of the same tasks (in-domain), of other tasks (cross-task), or of "
                             "the same tasks from another camera (cross-view)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data generation and training")
    parser.add_argument("--jobs", type=int, default=2, help="stages run at the same time (default: 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--results", type=Path, default=None,
                        help="also write the results JSON here (e.g. results/demo.json)")


@dataclass
class Stage:
    name: str
    args: list[str]  # arguments of `lapa`
    deps: tuple[str, ...] = ()
    outputs: tuple[Path, ...] = ()
    fresh: bool = False  # delete `outputs` before a re-run (stages that refuse to overwrite)
    status: str = "waiting"
    started: float = 0.0
    seconds: float = 0.0
    process: subprocess.Popen | None = None


@dataclass
class Plan:
    out: Path
    stages: dict[str, Stage] = field(default_factory=dict)

    def add(self, stage: Stage) -> None:
        self.stages[stage.name] = stage


def build_plan(out: Path, preset: Preset, setting: str, seed: int, device: str) -> Plan:
    out = Path(out)
    data = out / "data"
    plan = Plan(out)
    eval_tasks = ",".join(preset.tasks)
    pre_tasks = ",".join(preset.other_tasks if setting == "cross-task" else preset.tasks)
    pre_camera = "front_left" if setting == "cross-view" else "front"
    size = str(preset.image_size)
    dev = ["--device", device]

    plan.add(Stage("data-pretrain", ["data", "generate", "--out", str(data / "pretrain"), "--tasks", pre_tasks,
                                     "--episodes-per-task", str(preset.pretrain_episodes), "--camera", pre_camera,
                                     "--image-size", size, "--action-noise", "0.1", "--seed", str(seed)],
                   outputs=(data / "pretrain",), fresh=True))
    plan.add(Stage("data-finetune", ["data", "generate", "--out", str(data / "finetune"), "--tasks", eval_tasks,
                                     "--episodes-per-task", str(preset.finetune_episodes), "--image-size", size,
                                     "--only-success", "--seed", str(seed + 1)],
                   outputs=(data / "finetune",), fresh=True))
    laq = out / "laq"
    plan.add(Stage("laq-train", ["laq", "train", "--data", str(data / "pretrain"), "--out", str(laq),
                                 "--config", preset.laq_config, "--max-steps", str(preset.laq_steps),
                                 *preset.laq_extra, *dev],
                   deps=("data-pretrain",)))
    plan.add(Stage("laq-label", ["laq", "label", "--checkpoint", str(laq), "--data", str(data / "pretrain"), *dev],
                   deps=("laq-train",)))
    plan.add(Stage("laq-explain", ["laq", "explain", "--checkpoint", str(laq), "--data", str(data / "finetune"),
                                   "--out", str(out / "explain"), *dev], deps=("laq-train", "data-finetune")))
    common = ["--config", preset.vla_config, "--batch-size", str(preset.batch_size), "--seed", str(seed),
              *preset.vla_extra, *dev]
    plan.add(Stage("pretrain-latent", ["vla", "pretrain", "--data", str(data / "pretrain"), "--targets", "latents",
                                       "--out", str(out / "vla/pretrain_latent"),
                                       "--max-steps", str(preset.pretrain_steps), *common], deps=("laq-label",)))
    plan.add(Stage("pretrain-actions", ["vla", "pretrain", "--data", str(data / "pretrain"), "--targets", "actions",
                                        "--out", str(out / "vla/pretrain_actions"),
                                        "--max-steps", str(preset.pretrain_steps), *preset.action_head, *common],
                   deps=("data-pretrain",)))
    inits = {"lapa": out / "vla/pretrain_latent", "actionvla": out / "vla/pretrain_actions", "scratch": None}
    for method, init in inits.items():
        deps = ("data-finetune",) + (("pretrain-latent",) if method == "lapa" else
                                     ("pretrain-actions",) if method == "actionvla" else ())
        plan.add(Stage(f"finetune-{method}", ["vla", "finetune", "--data", str(data / "finetune"),
                                              "--out", str(out / f"vla/finetune_{method}"),
                                              "--max-steps", str(preset.finetune_steps), *preset.action_head,
                                              *common,
                                              *(["--init", str(init)] if init else [])], deps=deps))
        plan.add(Stage(f"eval-{method}", ["eval", str(out / f"vla/finetune_{method}"), "--tasks", eval_tasks,
                                          "--episodes-per-task", str(preset.eval_episodes),
                                          "--max-steps", str(preset.eval_max_steps), "--image-size", size,
                                          "--seed", str(seed + EVAL_SEED_OFFSET),
                                          "--num-envs", str(DEFAULT_NUM_ENVS),
                                          "--out", str(out / f"eval/{method}"), *dev],
                       deps=(f"finetune-{method}",)))
    return plan


def run(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    started = time.time()
    plan = build_plan(args.out, preset, args.setting, args.seed, args.device)
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
    for stage in plan.stages.values():
        if _is_done(plan, stage):
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
    import shutil

    if stage.fresh:
        for path in stage.outputs:
            if path.exists():
                shutil.rmtree(path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    log = plan.out / "logs" / f"{stage.name}.log"
    with open(log, "w") as f:
        f.write("$ lapa " + " ".join(shlex.quote(a) for a in stage.args) + "\n")
        f.flush()
        stage.process = subprocess.Popen(_command(stage), stdout=f, stderr=subprocess.STDOUT, env=env)
        code = stage.process.wait()
    if code == 0:
        from lapa_learning.data.format import atomic_write_json

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
    import shutil

    return shutil.get_terminal_size((120, 20)).columns


# ---------------------------------------------------------------------------------------------- the report
def write_report(plan: Plan, preset: Preset, args: argparse.Namespace, minutes: float) -> str:
    out = plan.out
    methods = {}
    for method in METHODS:
        r = json.loads((out / f"eval/{method}/results.json").read_text())
        methods[method] = {"success": r["overall"]["success"], "ci95": r["overall"]["ci95"],
                           "episodes": r["overall"]["episodes"],
                           "per_task": {t: v["success"] for t, v in r["tasks"].items()}}
    stage_minutes = {}
    for stage in plan.stages.values():
        try:
            stage_minutes[stage.name] = json.loads(_marker(plan, stage).read_text())["seconds"] / 60
        except (OSError, ValueError, KeyError):
            pass
    command = "lapa " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["demo"] else "lapa demo"
    results = {
        "command": command,
        "minutes": minutes,
        "preset": args.preset,
        "setting": args.setting,
        "seed": args.seed,
        "machine": _machine(),
        "tasks": list(preset.tasks),
        "pretrain_episodes_per_task": preset.pretrain_episodes,
        "finetune_episodes_per_task": preset.finetune_episodes,
        "eval_episodes_per_task": preset.eval_episodes,
        "eval_seed": args.seed + EVAL_SEED_OFFSET,  # base seed of the evaluation layouts (lapa eval --seed)
        "methods": methods,
        "stage_minutes": stage_minutes,
    }
    # What the intermediate stages achieved (each stage's own held-out numbers).
    laq_eval = (_read_json(out / "laq" / "summary.json") or {}).get("eval", {})
    probe = (_read_json(out / "explain" / "laq_explain.json") or {}).get("probe", {})
    latent = _read_json(out / "vla" / "pretrain_latent" / "train_record.json") or {}
    results["laq"] = {k: laq_eval.get(k) for k in ("psnr_changed", "psnr_changed_copy_baseline",
                                                     "codes_used_fraction")}
    results["laq"]["probe_r2_xyz"] = probe.get("probe_r2_xyz")
    results["latent_pretraining"] = {"latent_token_accuracy": latent.get("metrics", {}).get("latent_token_accuracy"),
                                     "majority_baseline_accuracy": latent.get("majority_baseline_accuracy")}
    from lapa_learning.data.format import atomic_write_json

    atomic_write_json(out / "results.json", results)
    if args.results:
        atomic_write_json(Path(args.results), results)
    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    plot_results(results, out / "results.png")
    from lapa_learning.data.reader import EpisodeDataset

    data = "\n".join(f"  {EpisodeDataset(out / 'data' / name)}" for name in ("pretrain", "finetune"))
    return (f"\n{table}\n\ndata:\n{data}\n"
            f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")


def results_table(results: dict) -> str:
    names = {"lapa": "LAPA (latent pretraining)", "scratch": "Scratch", "actionvla": "ActionVLA (true actions)"}
    tasks = results["tasks"]
    head = "| method | success | 95% CI | episodes | " + " | ".join(tasks) + " |"
    rows = [head, "|" + "---|" * (4 + len(tasks))]
    for method, r in results["methods"].items():
        per_task = " | ".join(f"{100 * r['per_task'][t]:.0f}%" for t in tasks)
        rows.append(f"| {names[method]} | {100 * r['success']:.1f}% | [{100 * r['ci95'][0]:.1f}, "
                    f"{100 * r['ci95'][1]:.1f}] | {r['episodes']} | {per_task} |")
    return "\n".join(rows)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, lows, highs = [], [], [], []
    for method, r in results["methods"].items():
        labels.append({"lapa": "LAPA", "scratch": "Scratch", "actionvla": "ActionVLA"}[method])
        values.append(100 * r["success"])
        lows.append(100 * (r["success"] - r["ci95"][0]))
        highs.append(100 * (r["ci95"][1] - r["success"]))
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.bar(labels, values, yerr=[lows, highs], capsize=6, color=["#2b7bba", "#999999", "#6aa84f"])
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Meta-World {', '.join(t.replace('-v3', '') for t in results['tasks'])}\n"
                 f"{results['finetune_episodes_per_task']} labelled demos/task, 95% CI", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _machine() -> str:
    import platform

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover
        gpu = "unknown GPU"
    return f"{platform.machine()} {os.cpu_count()}-core CPU, {gpu}, torch threads per process: " \
           f"{os.environ.get('OMP_NUM_THREADS', 'default')}"
