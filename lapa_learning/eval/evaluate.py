"""`lapa eval`: closed-loop success rate of a Policy checkpoint in the built-in Meta-World simulator.

Initial layouts come from evaluation seeds, which never overlap the seeds used to generate training data
(lapa_learning/sim/seeds.py). Writes results JSON and, per task, a video of the first successful and the first
failed episode.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lapa_learning.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.sim.metaworld_env import DEFAULT_TASKS

    parser.add_argument("checkpoint", type=Path, help="finetuned policy checkpoint directory")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated tasks (default: %(default)s)")
    parser.add_argument("--episodes-per-task", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=150, help="step limit per episode (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="base evaluation seed (layouts unseen in training)")
    parser.add_argument("--camera", default="front", help="camera view; use the training data's (default: front)")
    parser.add_argument("--image-size", type=int, default=64, help="render size in pixels (default: 64)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    parser.add_argument("--replan-every", type=int, default=None,
                        help="with a chunked policy: re-plan every N steps (default: execute whole chunks)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <checkpoint>/eval)")
    parser.add_argument("--videos", type=int, default=1, help="videos to save per task and outcome (default: 1)")


def run(args: argparse.Namespace) -> int:
    from lapa_learning.data.generate import _task_list
    from lapa_learning.vla.policy import Policy

    if args.episodes_per_task < 1:
        raise ConfigError(f"--episodes-per-task must be at least 1, got {args.episodes_per_task}")
    policy = Policy.load(args.checkpoint, device=args.device, replan_every=args.replan_every)
    out = args.out or Path(args.checkpoint) / "eval"
    results = evaluate(policy, _task_list(args.tasks), args.episodes_per_task, max_steps=args.max_steps,
                       seed=args.seed, camera=args.camera, image_size=args.image_size, video_dir=out / "videos",
                       videos_per_outcome=args.videos)
    results["command"] = "lapa " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results["checkpoint"] = str(args.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"wrote {out / 'results.json'}")
    return 0


@dataclass
class TaskResult:
    successes: list[bool] = field(default_factory=list)
    steps_to_success: list[int] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)


def evaluate(policy, tasks: list[str], episodes_per_task: int, max_steps: int = 150, seed: int = 0,
             camera: str = "front", image_size: int = 64, video_dir: Path | None = None,
             videos_per_outcome: int = 1, progress: bool = True) -> dict:
    """Run `episodes_per_task` closed-loop episodes per task; returns per-task and overall success statistics."""
    from tqdm import tqdm

    from lapa_learning.data.video import write_video
    from lapa_learning.eval.stats import wilson_interval
    from lapa_learning.sim.instructions import instruction_for
    from lapa_learning.sim.metaworld_env import FPS, MetaWorldEnv
    from lapa_learning.sim.seeds import eval_seed

    started = time.time()
    per_task: dict[str, TaskResult] = {}
    bar = tqdm(total=len(tasks) * episodes_per_task, desc="evaluating", unit="ep", disable=not progress)
    for task in tasks:
        result = per_task[task] = TaskResult()
        instruction = instruction_for(task)
        saved = {True: 0, False: 0}
        with MetaWorldEnv(task, camera=camera, image_size=image_size, max_steps=max_steps) as env:
            for episode in range(episodes_per_task):
                obs = env.reset(eval_seed(seed, episode))
                policy.reset()
                # Frames are kept (every step rendered) until this task has its videos; after that a step is
                # rendered only when the policy will read it (a chunked Policy reads one image per chunk).
                keep = video_dir is not None and min(saved.values()) < videos_per_outcome
                frames, success, done = [obs.image], False, False
                while not done:
                    action = policy.act(obs.image, instruction)
                    render = keep or getattr(policy, "will_replan", True)
                    obs, success, done = env.step(np.asarray(action.values, dtype=np.float64), render=render)
                    if keep:
                        frames.append(obs.image)
                result.successes.append(success)
                if success:
                    result.steps_to_success.append(env.steps)
                if video_dir is not None and saved[success] < videos_per_outcome:
                    video_dir.mkdir(parents=True, exist_ok=True)
                    path = video_dir / f"{task}_{'success' if success else 'failure'}_{saved[success]}.mp4"
                    write_video(path, np.stack(frames), fps=int(FPS // 4) or 1)  # 4x slow motion for viewing
                    result.videos.append(str(path))
                    saved[success] += 1
                bar.update(1)
                bar.set_postfix_str(f"{task} {sum(result.successes)}/{len(result.successes)}")
    bar.close()

    def summary(successes: list[bool], steps: list[int]) -> dict:
        wins = int(sum(successes))
        lo, hi = wilson_interval(wins, len(successes))
        return {"success": wins / len(successes), "ci95": [lo, hi], "episodes": len(successes), "successes": wins,
                "mean_steps_to_success": float(np.mean(steps)) if steps else None}

    tasks_out = {t: {**summary(r.successes, r.steps_to_success), "videos": r.videos} for t, r in per_task.items()}
    every = [s for r in per_task.values() for s in r.successes]
    steps = [s for r in per_task.values() for s in r.steps_to_success]
    return {"overall": summary(every, steps), "tasks": tasks_out, "max_steps": max_steps, "seed": seed,
            "camera": camera, "image_size": image_size, "minutes": (time.time() - started) / 60}


def format_table(results: dict) -> str:
    rows = [("task", "success", "95% CI", "episodes", "steps to success")]
    for name, r in [*results["tasks"].items(), ("overall", results["overall"])]:
        steps = f"{r['mean_steps_to_success']:.0f}" if r["mean_steps_to_success"] is not None else "-"
        rows.append((name, f"{100 * r['success']:.0f}%", f"[{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]",
                     str(r["episodes"]), steps))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)
