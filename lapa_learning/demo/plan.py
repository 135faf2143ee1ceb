"""What the demo runs: methods, settings, presets, the stages of one run and their dependencies, and the
step-selection rule (lapa_learning/demo/__init__.py has the picture)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lapa_learning.errors import ConfigError
from lapa_learning.io import atomic_write_json
from lapa_learning.vla.configuration_vla import DEFAULT_VLA_CONFIG

METHODS = ("lapa", "vpt", "scratch", "actionvla", "lapa-shuffled", "vision")  # what `lapa demo` runs by default
# Asked for by name (--methods): lapa-vision = latent pretraining that starts from the vision control's tower
# (the paper's LAPA starts from a pretrained VLM; here the only pretrained tower is the one learnt on the videos);
# lapa-vision-frozen = the same with that tower frozen during latent pretraining (as the paper freezes its vision
# encoder), so the latent targets cannot undo what it learnt; finetuning trains it again, as in every method.
EXTRA_METHODS = ("lapa-vision", "lapa-vision-frozen")
METHOD_NAMES = {"lapa": "LAPA (latent pretraining)", "vpt": "VPT (IDM pseudo-actions)", "scratch": "Scratch",
                "actionvla": "ActionVLA (true actions)", "lapa-shuffled": "LAPA, shuffled latents (control)",
                "vision": "Vision-pretrained tower (control)",
                "lapa-vision": "LAPA on the vision-pretrained tower",
                "lapa-vision-frozen": "LAPA on the vision-pretrained tower, frozen in latent pretraining"}
# The methods that pretrain on the LAQ's latent labels (the demo then also probes that LAQ on the labelled set)
LATENT_LABEL_METHODS = ("lapa", "lapa-shuffled", "lapa-vision", "lapa-vision-frozen")
# Finetuning arguments beyond the shared ones: a tower frozen during pretraining is trained again, so that every
# method finetunes its whole model.
FINETUNE_EXTRA = {"lapa-vision-frozen": ("--train-vision",)}
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
# LAQ selection (--laq-seeds K > 1): the LAQ is trained with K seeds and the one whose latent tokens best explain
# the motion of the labelled demos (the same small set every method finetunes on; the probe is cross-validated over
# its episodes) labels the videos. Evaluation layouts play no part.
LAQ_SELECTION_RULE = ("train the LAQ with config seeds seed*K .. seed*K+K-1 on the pretraining videos, run `lapa laq "
                      "explain` of each on the labelled set, keep the highest probe_r2_xyz (the linear probe's "
                      "cross-validated R2 of the true xyz motion from the latent tokens; lowest seed on ties)")
SELECTION_RULE = ("per method, finetune once per candidate step budget, evaluate each on the development layouts "
                  "(base seed = seed + DEV_SEED_OFFSET), keep the highest success rate (fewest steps on ties), and "
                  "evaluate only that one on the fresh layouts (base seed = seed + EVAL_SEED_OFFSET)")


# Processes that roll out the pretraining videos: half the cores (the same dataset for any number), leaving the
# rest to the stages that run beside it (on 2 cores: one, as the two-at-a-time schedule was measured with)
GENERATE_WORKERS = max(1, (os.cpu_count() or 1) // 2)


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
    laq_seeds: int = 1  # LAQ candidates per video set; > 1: keep the one the labelled set's probe prefers
    # > 0: the LAQ also trains on the labelled set's frame pairs, this many times over (its held-out pairs stay the
    # videos'); 0 = the videos only, as in the paper
    laq_labelled_repeat: int = 0


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


@dataclass
class Stage:
    name: str
    args: list[str]  # arguments of `lapa` (for an in-process stage: what identifies its work)
    deps: tuple[str, ...] = ()
    outputs: tuple[Path, ...] = ()
    fresh: bool = False  # delete `outputs` before a re-run (stages that refuse to overwrite)
    resume_dir: Path | None = None  # a training run's directory: an interrupted attempt there is resumed (runner)
    # arguments that change how fast, not what (e.g. worker processes): passed when run, not part of what
    # identifies the stage, so a finished stage is reused on a machine with another number of cores
    speed: tuple[str, ...] = ()
    # an in-process stage (cheap bookkeeping) instead of a subprocess; what it returns goes to the stage's log (it
    # runs in a worker thread, so it must not print: sys.stdout is the whole process's)
    call: Callable[[], str | None] | None = None
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
    lock_fd: int | None = None  # while running: <out>/.lock, held by the runner and handed to every stage process

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


# The demo runs two stages at a time, so each evaluation stays in one process (8 environments, the fastest
# single-process setting in results/eval_speed.json) instead of `lapa eval`'s default of one process per core.
EVAL_PROCESS = ("--num-envs", "8", "--workers", "1")


def eval_stage(name: str, checkpoint: Path, out: Path, tasks: str, episodes: int, seed: int, preset: Preset,
               device: str, deps: tuple[str, ...], videos: bool = True) -> Stage:
    """Every closed-loop evaluation of the demo (development and final), built in one place.  videos=False: no
    rollout videos (development evaluations: nobody watches them, and a filmed episode draws every frame)."""
    return Stage(name, ["eval", str(checkpoint), "--tasks", tasks, "--episodes-per-task", str(episodes),
                        "--max-steps", str(preset.eval_max_steps), "--image-size", str(preset.image_size),
                        "--seed", str(seed), *EVAL_PROCESS, *(() if videos else ("--videos", "0")),
                        "--out", str(out), "--device", device], deps=deps)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS + EXTRA_METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown method(s) {unknown or '(none given)'}; expected some of "
                          f"{', '.join(METHODS + EXTRA_METHODS)}")
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
                       outputs=(videos,), fresh=True, speed=("--workers", str(GENERATE_WORKERS))))
        laq = laq_dir(base, preset)
        add_laq_stages(plan, preset, videos, base, finetune, s, seed, dev)
        plan.add(Stage("laq-label" + s, ["laq", "label", "--checkpoint", str(laq), "--data", str(videos), *dev],
                       deps=("laq-train" + s,)))
        plan.add(Stage("laq-explain" + s, ["laq", "explain", "--checkpoint", str(laq), "--data",
                                           str(finetune), "--out", str(base / "explain"), *dev],
                       deps=("laq-train" + s, "data-finetune")))
        steps = ["--max-steps", str(preset.pretrain_steps)]
        plan.add(Stage("pretrain-lapa" + s, ["vla", "pretrain", "--data", str(videos), "--targets", "latents",
                                             "--out", str(base / "pretrain_lapa"), *steps, *common],
                       deps=("laq-label" + s,), resume_dir=base / "pretrain_lapa"))
        plan.add(Stage("pretrain-lapa-shuffled" + s, ["vla", "pretrain", "--data", str(videos), "--targets",
                                                      "latents", "--shuffle-labels", "--out",
                                                      str(base / "pretrain_lapa-shuffled"), *steps, *common],
                       deps=("laq-label" + s,), resume_dir=base / "pretrain_lapa-shuffled"))
        plan.add(Stage("pretrain-vision" + s, ["vla", "pretrain-vision", "--data", str(videos), "--out",
                                               str(base / "pretrain_vision"), "--config", preset.vla_config,
                                               "--offset-frames", str(preset.laq_offset), *steps, "--batch-size",
                                               str(preset.batch_size), "--seed", str(seed), "--overwrite", *dev],
                       deps=("data-videos" + s,)))
        for method, freeze in (("lapa-vision", ()), ("lapa-vision-frozen", ("--freeze-vision",))):
            run = base / f"pretrain_{method}"
            plan.add(Stage(f"pretrain-{method}{s}", ["vla", "pretrain", "--data", str(videos), "--targets", "latents",
                                                     "--init", str(base / "pretrain_vision"), *freeze, "--out",
                                                     str(run), *steps, *common],
                           deps=("laq-label" + s, "pretrain-vision" + s), resume_dir=run))
        plan.add(Stage("vpt-label" + s, ["vpt", "label", "--checkpoint", str(out / "vpt/idm"), "--data", str(videos),
                                         *dev], deps=("vpt-train", "data-videos" + s)))
        plan.add(Stage("pretrain-vpt" + s, ["vla", "pretrain", "--data", str(videos), "--targets", "pseudo-actions",
                                            "--out", str(base / "pretrain_vpt"), *steps, *preset.action_head,
                                            *common], deps=("vpt-label" + s,), resume_dir=base / "pretrain_vpt"))
        if not extra:  # videos with their true actions
            plan.add(Stage("pretrain-actionvla" + s, ["vla", "pretrain", "--data", str(videos), "--targets",
                                                      "actions", "--out", str(base / "pretrain_actionvla"), *steps,
                                                      *preset.action_head, *common], deps=("data-videos" + s,),
                                 resume_dir=base / "pretrain_actionvla"))

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
                                "--out", str(run), "--max-steps", str(steps), *preset.action_head, *common, *init,
                                *FINETUNE_EXTRA.get(method, ())],
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
                                    deps=(f"finetune-{method}{s}-steps{steps}",), videos=False))
                dev_evals.append((steps, run, base / f"dev_eval/{method}_steps{steps}"))
            plan.add(Stage(f"finetune-{method}{s}", ["select-steps", str(final), *(str(r) for _, r, _ in dev_evals)],
                           deps=tuple(f"dev-eval-{method}{s}-steps{st}" for st in candidates),
                           call=lambda final=final, dev_evals=dev_evals: select_steps(final, dev_evals)))
        plan.add(eval_stage(f"eval-{method}{s}", final, base / f"eval/{method}", eval_tasks, preset.eval_episodes,
                            seed + EVAL_SEED_OFFSET, preset, device, deps=(f"finetune-{method}{s}",)))
        plan.evals[method], plan.finals[method] = base / f"eval/{method}", final
        wanted.append(f"eval-{method}{s}")
    plan.video_set = VIDEO_SET[setting]
    if set(LATENT_LABEL_METHODS) & set(methods):  # how well the latent labels they learn from explain the motion
        wanted.append(f"laq-explain-{plan.video_set}")
    plan.keep(wanted)
    return plan


def laq_dir(base: Path, preset: Preset) -> Path:
    """The LAQ that labels a video set's pretraining videos: <video set>/laq, or with LAQ selection the chosen
    candidate's copy in <video set>/laq_selected (another path, so that no stage's output is reused across modes)."""
    return base / ("laq" if preset.laq_seeds == 1 else "laq_selected")


def add_laq_stages(plan: Plan, preset: Preset, videos: Path, base: Path, finetune: Path, s: str, seed: int,
                   dev: list[str]) -> None:
    """Stage `laq-train<s>`: train the LAQ, or with preset.laq_seeds = K > 1 train K candidates (laq_candidates/
    seed<n>), explain each on the labelled set and copy the one LAQ_SELECTION_RULE keeps to laq_dir()."""
    mix = (("--extra-data", str(finetune), "--extra-repeat", str(preset.laq_labelled_repeat))
           if preset.laq_labelled_repeat else ())
    inputs = ("data-videos" + s,) + (("data-finetune",) if mix else ())

    def train(out: Path, *extra: str) -> list[str]:
        return ["laq", "train", "--data", str(videos), *mix, "--out", str(out), "--config", preset.laq_config,
                "--max-steps", str(preset.laq_steps), *preset.laq_extra, *extra, *dev]

    k = preset.laq_seeds
    if k == 1:  # the LAQ's config seed (0) in every run
        plan.add(Stage("laq-train" + s, train(base / "laq"), deps=inputs, resume_dir=base / "laq"))
        return
    candidates = []
    for n in range(seed * k, seed * k + k):
        run, explained = base / f"laq_candidates/seed{n}", base / f"laq_candidates/explain_seed{n}"
        plan.add(Stage(f"laq-train{s}-seed{n}", train(run, "--set", f"seed={n}"), deps=inputs,
                       resume_dir=run))
        plan.add(Stage(f"laq-explain{s}-seed{n}", ["laq", "explain", "--checkpoint", str(run), "--data",
                                                  str(finetune), "--out", str(explained), *dev],
                       deps=(f"laq-train{s}-seed{n}", "data-finetune")))
        candidates.append((n, run, explained))
    chosen = laq_dir(base, preset)
    plan.add(Stage("laq-train" + s, ["select-laq", str(chosen), *(str(r) for _, r, _ in candidates)],
                   deps=tuple(f"laq-explain{s}-seed{n}" for n, _, _ in candidates),
                   call=lambda: select_laq(chosen, candidates)))


def select_laq(chosen: Path, candidates: list[tuple[int, Path, Path]]) -> str:
    """LAQ_SELECTION_RULE: copy the LAQ run with the highest probe R² (xyz) on the labelled set to `chosen`;
    returns the line for the stage's log."""
    r2 = {}
    for n, run, explained in candidates:
        path = explained / "laq_explain.json"
        try:
            r2[n] = float(json.loads(path.read_text())["probe"]["probe_r2_xyz"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"LAQ selection: {path}: expected `lapa laq explain` output with probe.probe_r2_xyz "
                              f"(a labelled set with actions), got {type(err).__name__}: {err}") from None
    best = min(r2, key=lambda n: (-r2[n], n))
    run = next(r for n, r, _ in candidates if n == best)
    if chosen.exists():
        shutil.rmtree(chosen)
    shutil.copytree(run, chosen, ignore=shutil.ignore_patterns("tb"))
    atomic_write_json(chosen / "selection.json", {"rule": LAQ_SELECTION_RULE, "chosen_seed": best,
                                                  "probe_r2_xyz": {str(n): v for n, v in r2.items()},
                                                  "copied_from": str(run)})
    return f"LAQ chosen: seed {best}; probe R2 xyz per seed {json.dumps(r2)}"


def select_steps(final: Path, dev_evals: list[tuple[int, Path, Path]]) -> str:
    """The step rule: the candidate with the highest development success (fewest steps on ties) becomes `final`;
    returns the line for the stage's log."""
    rates = {}
    for steps, _, ev in dev_evals:
        overall = json.loads((ev / "results.json").read_text())["overall"]
        rates[steps] = {"success": overall["success"], "episodes": overall["episodes"]}
    chosen = min(rates, key=lambda st: (-rates[st]["success"], st))
    run = next(r for st, r, _ in dev_evals if st == chosen)
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(run / "checkpoint", final / "checkpoint")
    atomic_write_json(final / "selection.json", {"rule": SELECTION_RULE, "chosen_steps": chosen,
                                                 "dev_success": {str(k): v for k, v in rates.items()},
                                                 "copied_from": str(run)})
    return f"chosen: {chosen} steps; development success {json.dumps(rates)}"
