"""`lapa eval`: closed-loop success rate of a Policy checkpoint in the built-in Meta-World simulator.

Initial layouts come from evaluation seeds, which never overlap the seeds used to generate training data
(lapa_learning/sim/seeds.py). Writes results JSON and, per task, a video of the first successful and the first
failed episode.

`--num-envs N` steps N environments together and the policy plans all of them that need a new chunk in one
forward pass (`Policy.act_batch(..., envs=...)`, a chunk queue per environment); `--workers W` runs W processes,
this one and W - 1 spawned ones, each with its own copy of the policy and N environments, that claim episodes
from one shared pool as their slots free up (the only messages are an episode counter per task and the finished
episodes: per-step messages between processes cost more than a step on a busy CPU). Either way the
episodes, seeds and videos are the sequential evaluator's, and so are the actions wherever a row's result does not
depend on what else is in the batch (discrete heads: tested equal; continuous heads can differ in the last float
bits, since a batched matrix product may round differently).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lapa_learning.errors import ConfigError

# The fastest on the 2-core CPU (bench/eval_speed.py, results/eval_speed.json): 4 environments in each of 2
# processes (8 x 2 was as fast; one process with 8: 0.62x of that).  One process per core, at most 2 (measured).
DEFAULT_NUM_ENVS, DEFAULT_WORKERS = 4, min(2, os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lapa_learning.sim.metaworld_env import DEFAULT_TASKS

    parser.add_argument("checkpoint", type=Path, help="finetuned policy checkpoint directory")
    parser.add_argument("--tasks", help="comma-separated tasks (default: the simulator tasks of the policy's "
                                        f"finetuning data when it is on this machine, else {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--episodes-per-task", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=150, help="step limit per episode (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="base evaluation seed (layouts unseen in training)")
    parser.add_argument("--camera", default=None,
                        help="camera view (default: the one the policy was finetuned on, as its training record "
                             "says; else front)")
    parser.add_argument("--image-size", type=int, default=64, help="render size in pixels (default: 64)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    parser.add_argument("--replan-every", type=int, default=None,
                        help="with a chunked policy: re-plan every N steps (default: execute whole chunks; "
                             "with --chunk-blend: 1)")
    parser.add_argument("--chunk-blend", choices=("off", "switch", "ensemble"), default="off",
                        help="with a chunked policy: off = execute each plan's first --replan-every actions; "
                             "switch = the newest chunk's action; ensemble = a weighted mean of every chunk "
                             "covering the step (temporal ensembling) (default: %(default)s)")
    parser.add_argument("--chunk-decay", type=float, default=None,
                        help="ensemble weight exp(-decay * age of the chunk in steps) (default: 0.5)")
    parser.add_argument("--preview", action="store_true",
                        help="videos show each frame next to the LAQ decoder's picture of frame t+H for the predicted "
                             "latent tokens (needs a latent head and the LAQ the checkpoint records)")
    parser.add_argument("--preview-laq", type=Path, default=None,
                        help="with --preview: the LAQ checkpoint (default: the one the checkpoint records)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <checkpoint>/eval)")
    parser.add_argument("--videos", type=int, default=1,
                        help="videos to save per task and outcome; 0: none, and only the frames the policy reads are "
                             "drawn (default: 1)")
    parser.add_argument("--num-envs", type=int, default=DEFAULT_NUM_ENVS,
                        help="environments stepped together, planned by one batched forward pass per step "
                             "(1 = one episode after another; default: %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="processes (this one included) that share the episodes, each with its own policy copy "
                             "and --num-envs environments (default: %(default)s)")


def check_sim_options(max_steps: int, image_size: int, seed: int) -> None:
    """ConfigError naming the flag for values the simulator (or the video writer) cannot take, before any episode
    runs: --max-steps in [1, MAX_EPISODE_STEPS], --image-size an even number of pixels in [16, 1024], --seed >= 0."""
    from lapa_learning.sim.metaworld_env import check_max_steps

    check_max_steps(max_steps)
    if not 16 <= image_size <= 1024 or image_size % 2:
        raise ConfigError(f"--image-size {image_size}: expected an even number of pixels in [16, 1024] (the "
                          f"videos are H.264, which needs even sizes)")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: expected an integer >= 0 (the base of the evaluation seeds)")


def check_metaworld_actions(policy, checkpoint) -> None:
    """lapa eval steps Meta-World, whose actions are (dx, dy, dz, gripper): a policy of another robot is refused
    here, not deep in the simulator."""
    from lapa_learning.sim.metaworld_env import ACTION_NAMES

    names = tuple(getattr(policy, "action_names", ()) or ())
    if len(names) != len(ACTION_NAMES):
        raise ConfigError(f"{checkpoint}: the policy outputs {len(names)} action dims ({', '.join(names)}), but "
                          f"`lapa eval` runs Meta-World policies, with {len(ACTION_NAMES)} "
                          f"({', '.join(ACTION_NAMES)}); for a policy of another robot measure its open-loop error "
                          f"on held-out episodes: python -m lapa_learning.vla.offline_eval --checkpoint "
                          f"{checkpoint} --data DATASET")


def run(args: argparse.Namespace) -> int:
    from lapa_learning.io import atomic_write_json
    from lapa_learning.sim.metaworld_env import parse_task_list, simulator_camera
    from lapa_learning.vla.policy import Policy

    check_sim_options(args.max_steps, args.image_size, args.seed)
    args.camera = simulator_camera(args.camera)
    tasks = parse_task_list(args.tasks) if args.tasks else None
    if args.episodes_per_task < 1:
        raise ConfigError(f"--episodes-per-task must be at least 1, got {args.episodes_per_task}")
    if args.videos < 0:
        raise ConfigError(f"--videos must be 0 (none) or more per task and outcome, got {args.videos}")
    if args.num_envs < 1 or args.workers < 1:
        raise ConfigError(f"--num-envs and --workers must be at least 1, got {args.num_envs} and {args.workers}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; name a folder for results.json and the videos")
    if args.preview_laq is not None and not args.preview:
        warnings.warn("--preview-laq is used only with --preview; ignored", stacklevel=2)
    if args.chunk_decay is not None and args.chunk_blend != "ensemble":
        warnings.warn(f"--chunk-decay weighs the chunks of --chunk-blend ensemble; ignored with --chunk-blend "
                      f"{args.chunk_blend}", stacklevel=2)
    args.chunk_decay = 0.5 if args.chunk_decay is None else args.chunk_decay
    blend = args.chunk_blend != "off"
    if args.replan_every is not None and args.replan_every < 1:
        raise ConfigError(f"--replan-every {args.replan_every}: expected >= 1 step")
    policy = Policy.load(args.checkpoint, device=args.device, replan_every=None if blend else args.replan_every)
    check_metaworld_actions(policy, args.checkpoint)
    preview = None
    if args.preview:
        from lapa_learning.vla.preview import LatentPreview

        if policy.num_latent_tokens is None:
            raise ConfigError(f"--preview: {args.checkpoint} has no latent head (no latent tokens to preview)")
        preview = LatentPreview.load(policy, laq=args.preview_laq)
    if blend:
        from lapa_learning.vla.chunking import BlendedPolicy

        if policy.chunk_size < 2:
            raise ConfigError(f"--chunk-blend {args.chunk_blend}: the checkpoint predicts one action per step "
                              f"(chunk_size 1); use --chunk-blend off")
        policy = BlendedPolicy(policy, args.chunk_blend, args.chunk_decay, args.replan_every or 1)
    out = args.out or Path(args.checkpoint) / "eval"
    camera = camera_to_evaluate(policy.record, args.camera)
    tasks = tasks_to_evaluate(policy.record, tasks)
    about = {"command": "lapa " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "checkpoint": str(args.checkpoint),
             "chunk_blend": dict(blend=args.chunk_blend, decay=args.chunk_decay if blend else None,
                                 replan_every=getattr(policy, "replan_every", None))}

    def save(results: dict) -> None:  # first before the videos are written (the results are safe), then after
        results.update(about)
        atomic_write_json(out / "results.json", results)

    results = evaluate(policy, tasks, args.episodes_per_task, max_steps=args.max_steps,
                       seed=args.seed, camera=camera, image_size=args.image_size, video_dir=out / "videos",
                       videos_per_outcome=args.videos, num_envs=args.num_envs,
                       workers=args.workers, preview=preview, on_results=save)
    save(results)
    print(format_table(results))
    print(f"wrote {out / 'results.json'}")
    return 0


def camera_to_evaluate(record: dict | None, camera: str | None) -> str:
    """The simulator camera to evaluate with: `camera` (--camera), else the one the policy's finetuning data was
    filmed with (its training record), else front.  Warns when --camera is not the one the policy was finetuned
    on: such a run is legitimate (a transfer test) but easy to start by mistake, and its low success would
    otherwise look like a bad policy."""
    from lapa_learning.sim.metaworld_env import camera_names
    from lapa_learning.vla.checkpoint import training_cameras

    trained = sorted({key.rsplit(".", 1)[-1] for key in training_cameras(record)})
    if camera is not None:
        if trained and camera not in trained:
            warnings.warn(f"--camera {camera}: the policy was finetuned on camera {', '.join(trained)}", stacklevel=2)
        return camera
    camera = trained[0] if len(trained) == 1 else "front"
    if camera not in camera_names():  # finetuned on a real camera (a rosbag's, say): no such view here
        warnings.warn(f"the policy was finetuned on camera {camera}, which the simulator does not have; "
                      f"evaluating with front (choose with --camera)", stacklevel=2)
        return "front"
    return camera


def tasks_to_evaluate(record: dict | None, tasks: list[str] | None) -> list[str]:
    """--tasks, checked against the policy's finetuning tasks (a warning for any it never saw); without --tasks,
    the finetuning tasks, or the simulator's default tasks when the finetuning data names none here."""
    from lapa_learning.sim.metaworld_env import DEFAULT_TASKS

    trained = finetuned_tasks(record)
    if tasks is None:
        tasks = trained or list(DEFAULT_TASKS)
        where = "the finetuning data's" if trained else "the default; the finetuning data names none here"
        print(f"tasks: {', '.join(tasks)} ({where})")
    elif trained:
        warn_unseen_tasks(trained, tasks)
    return tasks


def finetuned_tasks(record: dict | None) -> list[str] | None:
    """The simulator tasks of the policy's finetuning data, when that data is still on this machine and names a
    task for every episode (a rosbag or another LeRobot dataset does not); else None."""
    from lapa_learning.data.reader import EpisodeDataset
    from lapa_learning.errors import DatasetError

    datasets = (record or {}).get("datasets") or []
    if not datasets:
        return None
    seen: set[str | None] = set()
    for d in datasets:
        try:
            seen.update(ep.task for ep in EpisodeDataset(d["root"]).episodes)
        except (DatasetError, KeyError, OSError):
            return None  # not here (or no longer readable): nothing to compare the tasks with
    if not seen or None in seen:
        return None
    from lapa_learning.sim.metaworld_env import parse_task_list

    try:
        return parse_task_list(",".join(sorted(seen)))  # task names the simulator does not have: none to run
    except ConfigError:
        return None


def warn_unseen_tasks(trained: list[str], tasks: list[str]) -> None:
    unseen = [t for t in tasks if t not in trained]
    if unseen:
        warnings.warn(f"--tasks: the policy was never finetuned on {', '.join(unseen)} (its finetuning data has "
                      f"{', '.join(trained)})", stacklevel=2)


@dataclass
class Episode:
    task: str
    index: int  # episode number within its task
    seed: int  # environment seed (the initial layout)
    image: np.ndarray | None = None  # the newest observation
    frames: list | None = None  # every frame, while this episode may become one of the task's videos
    tokens: list | None = None  # with a preview: the latent tokens (K,) of the plan acting on each kept frame
    success: bool = False
    steps: int = 0
    final_state: list | None = None


def evaluate(policy, tasks: list[str], episodes_per_task: int, max_steps: int = 150, seed: int = 0,
             camera: str = "front", image_size: int = 64, video_dir: Path | None = None,
             videos_per_outcome: int = 1, progress: bool = True, num_envs: int = 1, workers: int = 1,
             preview=None, on_results=None) -> dict:
    """Run `episodes_per_task` closed-loop episodes per task; returns per-task and overall success statistics.

    num_envs > 1: that many environments at once, the policy batched (`act_batch(..., envs=)`).  workers > 1:
    this process and workers - 1 spawned ones (each with its own copy of the policy, loaded from
    `policy.checkpoint_dir`, and `num_envs` environments) claim the episodes from one shared pool.  preview: a
    lapa_learning.vla.preview.LatentPreview; each video frame becomes the strip (frame | decoded frame t+H).
    on_results: called with the results (their video lists still empty) before the videos are written."""
    from tqdm import tqdm

    from lapa_learning.sim.seeds import eval_seed

    if num_envs < 1 or workers < 1:
        raise ConfigError(f"num_envs {num_envs}, workers {workers}: expected integers >= 1")
    started = time.time()
    queue = [Episode(task, e, eval_seed(seed, e)) for task in tasks for e in range(episodes_per_task)]
    finished: dict[tuple[str, int], Episode] = {}
    keep_frames = _keep_frames_rule(finished, videos_per_outcome if video_dir is not None else None)
    bar = tqdm(total=len(queue), desc="evaluating", unit="ep", disable=not progress)

    def end(ep: Episode) -> None:
        finished[(ep.task, ep.index)] = ep
        bar.update(1)
        wins = [finished[k].success for k in finished if k[0] == ep.task]
        bar.set_postfix_str(f"{ep.task} {sum(wins)}/{len(wins)}")

    # without a preview nothing here reads the predicted latent tokens: skip decoding them (no change to actions)
    report_latents = getattr(policy, "report_latents", None)
    if report_latents is not None and preview is None:
        policy.report_latents = False
    workers = min(workers, -(-len(queue) // num_envs))  # no process without a slot's worth of episodes
    try:
        if workers > 1:
            _run_workers(policy, queue, num_envs, workers, keep_frames,
                         videos_per_outcome if video_dir is not None else None, end, camera, image_size, max_steps)
        elif num_envs > 1:
            _run_batched(policy, EpisodePool(queue), num_envs, keep_frames, end, camera, image_size, max_steps)
        else:
            _run_sequential(policy, queue, keep_frames, end, camera, image_size, max_steps)
    finally:
        if report_latents is not None:
            policy.report_latents = report_latents
    bar.close()
    return _results(tasks, [finished[(e.task, e.index)] for e in queue], video_dir, videos_per_outcome, preview,
                    dict(max_steps=max_steps, seed=seed, camera=camera, image_size=image_size, num_envs=num_envs,
                         workers=workers, minutes=(time.time() - started) / 60), on_results)


def _keep_frames_rule(finished: dict, videos_per_outcome: int | None):
    """-> keep(episode): whether to keep every frame of an episode that starts now.  Frames are kept while the
    episode can still be one of the first `videos_per_outcome` successes or failures of its task, judged from
    the earlier episodes known to have ended; so every video the sequential order saves has its frames, also
    when episodes overlap or are split over processes.  None: no videos."""
    def keep(ep: Episode) -> bool:
        if videos_per_outcome is None:
            return False
        earlier = [finished[(ep.task, i)].success for i in range(ep.index) if (ep.task, i) in finished]
        return sum(earlier) < videos_per_outcome or len(earlier) - sum(earlier) < videos_per_outcome

    return keep


class EpisodePool:
    """The episodes still to run, per task, claimed one at a time.  Built with `counters` (task -> a
    multiprocessing Value), it is shared by processes: every process that frees a slot claims the next episode
    from the one pool, so none idles while another still has a backlog."""

    def __init__(self, queue: list[Episode], counters: dict | None = None):
        self.lists: dict[str, list[Episode]] = {}
        for ep in queue:
            self.lists.setdefault(ep.task, []).append(ep)
        self.counters = counters if counters is not None else {t: _LocalCounter() for t in self.lists}

    def left(self, task: str) -> int:
        return len(self.lists[task]) - self.counters[task].value

    def claim(self, task: str) -> Episode | None:
        counter = self.counters[task]
        with counter.get_lock():
            i = counter.value
            if i >= len(self.lists[task]):
                return None
            counter.value = i + 1
        return self.lists[task][i]

    def claim_for(self, task: str | None) -> Episode | None:
        """The next episode of `task` while it has any (a new env costs ~0.5 s), else of the task with the most
        left.  The order changes no episode, only when and where it runs."""
        order = ([task] if task in self.lists else []) + sorted(self.lists, key=self.left, reverse=True)
        for t in order:
            ep = self.claim(t)
            if ep is not None:
                return ep
        return None


class _LocalCounter:
    """A multiprocessing Value's interface (value, get_lock) for a pool used by one process only."""

    def __init__(self):
        self.value = 0

    def get_lock(self):
        return contextlib.nullcontext()


def _run_workers(policy, queue, num_envs, workers, keep_frames, videos_per_outcome, end, camera, image_size,
                 max_steps) -> None:
    """This process and `workers - 1` spawned ones, each with its own policy copy and `num_envs` environments,
    claim episodes from one shared pool (EpisodePool); the workers send each finished episode back."""
    import multiprocessing as mp
    import queue as queue_module

    if not hasattr(policy, "checkpoint_dir"):
        raise ConfigError(f"workers {workers}: the policy ({type(policy).__name__}) cannot be loaded in a worker "
                          f"process (no checkpoint_dir); use workers 1")
    args = dict(checkpoint_dir=policy.checkpoint_dir, device=policy.device, replan_every=policy.replan_every,
                precision=policy.precision, report_latents=policy.report_latents)
    if hasattr(policy, "blend"):  # a BlendedPolicy: each worker wraps its own copy the same way
        args.update(replan_every=None, blend=dict(blend=policy.blend, decay=policy.decay,
                                                  replan_every=policy.replan_every))
    # "spawn": a fresh interpreter (no inherited torch threads or OpenGL state); scripts need a __main__ guard
    ctx = mp.get_context("spawn")
    source = EpisodePool(queue, {task: ctx.Value("i", 0) for task in dict.fromkeys(e.task for e in queue)})
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, daemon=True, args=(dict(args), source, results, num_envs,
                                                              videos_per_outcome, camera, image_size, max_steps))
             for _ in range(workers - 1)]
    for proc in procs:
        proc.start()
    ended = 0

    def count_end(ep: Episode) -> None:
        nonlocal ended
        ended += 1
        end(ep)

    def take(item) -> None:
        kind, value = item
        if kind == "error":
            raise RuntimeError(f"an evaluation worker process failed: {value}")
        count_end(value)

    def poll() -> None:  # the workers' finished episodes, as they come (progress bar, keep_frames)
        while True:
            try:
                take(results.get_nowait())
            except queue_module.Empty:
                return

    try:
        _run_batched(policy, source, num_envs, keep_frames, count_end, camera, image_size, max_steps, poll=poll)
        while ended < len(queue):
            try:
                take(results.get(timeout=0.5))
            except queue_module.Empty:
                dead = [p.exitcode for p in procs if p.exitcode is not None]
                if len(dead) == len(procs) or any(code != 0 for code in dead):
                    poll()
                    if ended < len(queue):
                        raise RuntimeError(f"evaluation worker processes ended (exit codes {dead}) with "
                                           f"{len(queue) - ended} episodes not run") from None
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()


def _run_sequential(policy, queue: list[Episode], keep_frames, end, camera, image_size, max_steps) -> None:
    from lapa_learning.sim.instructions import instruction_for
    from lapa_learning.sim.metaworld_env import MetaWorldEnv

    for task in dict.fromkeys(e.task for e in queue):
        instruction = instruction_for(task)
        with MetaWorldEnv(task, camera=camera, image_size=image_size, max_steps=max_steps) as env:
            for ep in (e for e in queue if e.task == task):
                obs = env.reset(ep.seed)
                policy.reset()
                # after this task has its videos, a step is rendered only when the policy will read it (a chunked
                # Policy reads one image per chunk)
                ep.frames, ep.tokens = ([obs.image], []) if keep_frames(ep) else (None, None)
                done = False
                while not done:
                    action = policy.act(obs.image, instruction)
                    if ep.frames is not None:
                        ep.tokens.append(getattr(action, "latent_tokens", None))
                    render = ep.frames is not None or getattr(policy, "will_replan", True)
                    obs, ep.success, done = env.step(np.asarray(action.values, dtype=np.float64), render=render)
                    if ep.frames is not None:
                        ep.frames.append(obs.image)
                ep.steps, ep.final_state = env.steps, obs.state.tolist()
                end(ep)


def _run_batched(policy, source: EpisodePool, num_envs: int, keep_frames, end, camera, image_size,
                 max_steps, poll=None) -> None:
    """`num_envs` environments in this process at once: every step the policy plans all environments whose chunk
    ran out in one forward pass (`act_batch(..., envs=)`), and a slot claims a new episode when its own ends.
    poll: called once per step (the worker pool collects other processes' episodes there)."""
    from lapa_learning.sim.instructions import instruction_for
    from lapa_learning.sim.metaworld_env import MetaWorldEnv

    if not hasattr(policy, "act_batch") or not hasattr(policy, "will_replan_for"):
        raise ConfigError(f"num_envs {num_envs}: the policy ({type(policy).__name__}) has no batched act_batch(..., "
                          f"envs=); use num_envs 1")
    instructions = {t: instruction_for(t) for t in source.lists}
    envs: dict[int, MetaWorldEnv] = {}  # slot -> the env of its current task
    opened = []  # closed at the end (each env draws through its own GL context: MetaWorldEnv.render)
    active: dict[int, Episode] = {}  # slot -> its episode

    def start(slot: int) -> None:
        ep = source.claim_for(envs[slot].task if slot in envs else None)
        if ep is None:
            return
        active[slot] = ep
        if slot not in envs or envs[slot].task != ep.task:
            envs[slot] = MetaWorldEnv(ep.task, camera=camera, image_size=image_size, max_steps=max_steps)
            opened.append(envs[slot])
        policy.reset(slot)
        ep.image = envs[slot].reset(ep.seed).image
        ep.frames, ep.tokens = ([ep.image], []) if keep_frames(ep) else (None, None)

    try:
        for slot in range(num_envs):
            start(slot)
        while active:
            if poll is not None:
                poll()
            slots = sorted(active)
            actions = policy.act_batch([active[s].image for s in slots], [instructions[active[s].task] for s in slots],
                                       envs=slots)
            for s, a in zip(slots, actions):
                ep, env = active[s], envs[s]
                if ep.frames is not None:
                    ep.tokens.append(getattr(a, "latent_tokens", None))
                obs, ep.success, done = env.step(np.asarray(a.values, dtype=np.float64),
                                                 render=ep.frames is not None or policy.will_replan_for(s))
                ep.image = obs.image
                if ep.frames is not None:
                    ep.frames.append(obs.image)
                if done:
                    ep.steps, ep.final_state, ep.image = env.steps, obs.state.tolist(), None
                    del active[s]
                    end(ep)
                    start(s)
    finally:
        for env in opened:
            env.close()


def _worker(policy_args: dict, source: EpisodePool, results, num_envs: int, videos_per_outcome, camera,
            image_size, max_steps) -> None:
    """One worker process: its own copy of the policy claims episodes from `source`, `num_envs` at a time, and
    puts ("episode", Episode) on `results` for each (or ("error", message) once, if it fails)."""
    try:
        import torch

        from lapa_learning.vla.policy import Policy

        torch.set_num_threads(1)
        report_latents, blend = policy_args.pop("report_latents"), policy_args.pop("blend", None)
        policy = Policy.load(**policy_args)
        if blend is not None:
            from lapa_learning.vla.chunking import BlendedPolicy

            policy = BlendedPolicy(policy, **blend)
        policy.report_latents = report_latents
        done: dict[tuple[str, int], Episode] = {}

        def end(ep: Episode) -> None:
            done[(ep.task, ep.index)] = ep
            results.put(("episode", ep))

        # this process knows only its own finished episodes: it keeps frames whenever its own earlier ones leave
        # a video open, more often than needed, never less
        _run_batched(policy, source, num_envs, _keep_frames_rule(done, videos_per_outcome), end, camera,
                     image_size, max_steps)
    except BaseException as err:  # the parent raises it with this message
        results.put(("error", f"{type(err).__name__}: {err}"))
        raise


def _results(tasks, episodes: list[Episode], video_dir, videos_per_outcome: int, preview, extra: dict,
             on_results=None) -> dict:
    from lapa_learning.data.video import write_video
    from lapa_learning.eval.stats import wilson_interval
    from lapa_learning.sim.metaworld_env import FPS

    def summary(eps: list[Episode]) -> dict:
        wins = sum(e.success for e in eps)
        lo, hi = wilson_interval(wins, len(eps))
        steps = [e.steps for e in eps if e.success]
        return {"success": wins / len(eps), "ci95": [lo, hi], "episodes": len(eps), "successes": wins,
                "mean_steps_to_success": float(np.mean(steps)) if steps else None}

    videos: dict[str, list[str]] = {t: [] for t in tasks}  # filled as the videos are written
    tasks_out = {t: {**summary([e for e in episodes if e.task == t]), "videos": videos[t]} for t in tasks}
    results = {"overall": summary(episodes), "tasks": tasks_out, **extra,
               "episodes": [{"task": e.task, "episode": e.index, "seed": e.seed, "success": e.success,
                             "steps": e.steps, "final_state": e.final_state} for e in episodes]}
    if on_results is not None:
        on_results(results)
    for task in tasks:
        saved = {True: 0, False: 0}
        for ep in (e for e in episodes if e.task == task):
            if video_dir is not None and saved[ep.success] < videos_per_outcome:
                video_dir.mkdir(parents=True, exist_ok=True)
                path = video_dir / f"{task}_{'success' if ep.success else 'failure'}_{saved[ep.success]}.mp4"
                frames = ep.frames
                if preview is not None:  # the last frame (after the last action) keeps the last plan's tokens
                    frames = [preview.render(f, tok) for f, tok in zip(frames, ep.tokens + ep.tokens[-1:])]
                write_video(path, np.stack(frames), fps=int(FPS // 4) or 1)  # 4x slow motion for viewing
                videos[task].append(str(path))
                saved[ep.success] += 1
            ep.frames = ep.image = ep.tokens = None
    return results


def format_table(results: dict) -> str:
    rows = [("task", "success", "95% CI", "episodes", "steps to success")]
    for name, r in [*results["tasks"].items(), ("overall", results["overall"])]:
        steps = f"{r['mean_steps_to_success']:.0f}" if r["mean_steps_to_success"] is not None else "-"
        rows.append((name, f"{100 * r['success']:.0f}%", f"[{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]",
                     str(r["episodes"]), steps))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)
