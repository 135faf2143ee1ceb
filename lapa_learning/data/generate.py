"""`lapa data generate`: roll out Meta-World's scripted experts into an episode dataset."""

from __future__ import annotations

import argparse
import math
import numbers
import time
from collections import Counter
from pathlib import Path

from lapa_learning.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.sim.embodiment import embodiment_names
    from lapa_learning.sim.metaworld_env import DEFAULT_TASKS

    parser.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                        help="comma-separated Meta-World v3 task names (default: %(default)s)")
    parser.add_argument("--episodes-per-task", type=int, default=10, help="episodes per task (default: %(default)s)")
    parser.add_argument("--camera", default="front", help="camera view (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=64, help="square image size in pixels (default: 64)")
    parser.add_argument("--max-steps", type=int, default=200, help="step limit per episode (default: %(default)s)")
    parser.add_argument("--action-noise", type=float, default=0.0,
                        help="std of Gaussian noise on the expert's actions, for diversity (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; layouts never overlap evaluation's")
    parser.add_argument("--action-free", action="store_true",
                        help="write videos and instructions only (a pretraining set without action labels)")
    parser.add_argument("--embodiment", default="sawyer",
                        help=f"what performs the tasks on camera: {', '.join(embodiment_names())} "
                             "(default: %(default)s); "
                             "any but sawyer writes an action-free set, like a video of someone else doing the task")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that roll out episodes ahead of the writer; the dataset is the same for any "
                             "number (default: %(default)s)")
    parser.add_argument("--only-success", action="store_true",
                        help="keep only successful episodes (failed ones are replaced by the next seed)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    mode.add_argument("--append", action="store_true", help="add episodes to an existing dataset at --out")


def run(args: argparse.Namespace) -> int:
    from lapa_learning.sim.metaworld_env import parse_task_list

    summary = generate(out=args.out, tasks=parse_task_list(args.tasks), episodes_per_task=args.episodes_per_task,
                       camera=args.camera, image_size=args.image_size, max_steps=args.max_steps,
                       action_noise=args.action_noise, seed=args.seed, action_free=args.action_free,
                       only_success=args.only_success, embodiment=args.embodiment, workers=args.workers,
                       mode="overwrite" if args.overwrite else "append" if args.append else "create")
    print(summary)
    return 0


def generate(out: Path, tasks: list[str], episodes_per_task: int, camera: str = "front", image_size: int = 64,
             max_steps: int = 200, action_noise: float = 0.0, seed: int = 0, action_free: bool = False,
             only_success: bool = False, mode: str = "create", progress: bool = True,
             embodiment: str = "sawyer", workers: int = 1) -> str:
    """Write the dataset and return a human-readable summary of it.

    A non-default embodiment (lapa_learning.sim.embodiment) implies action_free: the actions belong to the
    hidden Sawyer arm, not to what the video shows. meta/info.json's robot_type records the embodiment.
    workers > 1: episodes are rolled out in that many processes, in order and with the same seeds, so the dataset
    is the same as with one."""
    from tqdm import tqdm

    from lapa_learning.data.reader import EpisodeDataset
    from lapa_learning.data.writer import EpisodeWriter
    from lapa_learning.sim.embodiment import get_embodiment
    from lapa_learning.sim.metaworld_env import ACTION_NAMES, FPS, STATE_NAMES, check_max_steps, simulator_camera
    from lapa_learning.sim.seeds import train_seed

    if episodes_per_task < 1:
        raise ConfigError(f"--episodes-per-task must be at least 1, got {episodes_per_task}")
    camera = simulator_camera(camera)  # the video key (observation.images.front) too, as other commands take it
    if not 16 <= image_size <= 512 or image_size % 2:
        raise ConfigError(f"--image-size must be an even number of pixels in [16, 512], got {image_size}")
    check_max_steps(max_steps)
    if not (action_noise >= 0 and math.isfinite(action_noise)):
        raise ConfigError(f"--action-noise must be a finite standard deviation >= 0, got {action_noise}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive number of processes, got {workers!r}")
    try:
        get_embodiment(embodiment)
    except ConfigError as err:
        raise ConfigError(f"--embodiment: {err}") from None
    action_free = action_free or embodiment != "sawyer"
    robot_type = f"{embodiment}_metaworld"
    if mode == "append" and (Path(out) / "meta/info.json").is_file():
        have = EpisodeDataset(out).info.get("robot_type")
        if have != robot_type:
            raise ConfigError(f"--append: {out} holds embodiment robot_type {have!r}, not {robot_type!r} "
                              f"(--embodiment {embodiment}); write this embodiment to another --out")
    started = time.time()
    writer = EpisodeWriter(out, fps=FPS, image_size=(image_size, image_size),
                           video_key=f"observation.images.{camera}", action_names=ACTION_NAMES,
                           state_names=STATE_NAMES, with_actions=not action_free, robot_type=robot_type, mode=mode)
    first_episode = writer.num_episodes  # when appending, continue the seed sequence
    bar = tqdm(total=len(tasks) * episodes_per_task, desc="generating", unit="ep", disable=not progress)
    successes = Counter()
    env_kwargs = dict(camera=camera, image_size=image_size, max_steps=max_steps, embodiment=embodiment)
    cap = 3 * episodes_per_task + 10  # attempts per task before --only-success gives up
    with writer, Rollouts(workers, env_kwargs, action_noise) as rollouts:  # the writer lets go even on an error
        for task in tasks:
            bar.set_postfix_str(task)
            kept, attempt = 0, 0
            episodes = rollouts.episodes(task, [train_seed(seed, first_episode + a) for a in range(cap)])
            for ep in episodes:
                attempt += 1
                if only_success and not ep.success:
                    continue
                writer.add_episode(ep.frames, ep.instruction, actions=None if action_free else ep.actions,
                                   states=None if action_free else ep.states, success=ep.success, task=task)
                successes[task] += ep.success
                kept += 1
                bar.update(1)
                if kept == episodes_per_task:
                    break
            episodes.close()  # a pool drops the episodes it rolled out ahead
            if kept < episodes_per_task:
                raise ConfigError(f"{task}: the scripted expert succeeded in only {kept} of {attempt} episodes "
                                  f"within {max_steps} steps; raise --max-steps or drop --only-success")
    bar.close()
    dataset = EpisodeDataset(out)
    minutes = (time.time() - started) / 60
    size_mb = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / 1e6
    lines = [f"wrote {dataset} (embodiment {embodiment})",
             f"  on disk: {size_mb:.1f} MB in {Path(out).resolve()}  ({minutes:.1f} min)"]
    for task in tasks:
        lines.append(f"  {task}: {episodes_per_task} episodes, expert success {successes[task]}/{episodes_per_task}")
    return "\n".join(lines)


class Rollouts:
    """Scripted-expert episodes of one task after another, in seed order: in this process (workers = 1), or rolled
    out ahead by `workers` spawned processes (each keeps one environment per task) and handed over in order."""

    def __init__(self, workers: int, env_kwargs: dict, action_noise: float):
        self.workers, self.env_kwargs, self.action_noise = workers, env_kwargs, action_noise
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # "spawn": a fresh interpreter (no inherited OpenGL state)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def episodes(self, task: str, seeds: list[int]):
        """A generator of the episodes of `seeds`, in order; close it to stop early."""
        from collections import deque

        from lapa_learning.sim.metaworld_env import MetaWorldEnv
        from lapa_learning.sim.rollout import expert_episode

        if self.pool is None:
            with MetaWorldEnv(task, **self.env_kwargs) as env:
                for s in seeds:
                    yield expert_episode(env, s, action_noise=self.action_noise)
            return
        queue = deque(seeds)
        ahead = deque()
        try:
            while queue or ahead:
                while queue and len(ahead) < 2 * self.workers:
                    ahead.append(self.pool.submit(_episode, task, self.env_kwargs, queue.popleft(),
                                                  self.action_noise))
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


_ENVS: dict = {}  # a worker process's environments, one per (task, settings)


def _episode(task: str, env_kwargs: dict, seed: int, action_noise: float):
    from lapa_learning.sim.metaworld_env import MetaWorldEnv
    from lapa_learning.sim.rollout import expert_episode

    key = (task, tuple(sorted(env_kwargs.items())))
    if key not in _ENVS:
        _ENVS[key] = MetaWorldEnv(task, **env_kwargs)
    return expert_episode(_ENVS[key], seed, action_noise=action_noise)
