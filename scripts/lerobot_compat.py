"""Open this project's datasets with the real LeRobot loader and compare them, frame by frame, with our reader.

    scripts/setup_lerobot.sh                 # once: .venv-lerobot with lerobot 0.3.3 (reads codebase v2.1)
    .venv/bin/python scripts/lerobot_compat.py [--out results/lerobot_compat.json]

Three datasets are written into --work: two by `lapa data generate` (with actions, and --action-free) and one by
the ROS nodes (sim_node + expert_teleop + recorder_node + episode_runner, as tests/test_ros_graph.py starts them).
Each is opened offline
(HF_HUB_OFFLINE=1) with `LeRobotDataset(repo_id, root=..., video_backend="pyav")` in the LeRobot venv, which reads
every frame of every episode into an .npz; this process reads the same episodes with `EpisodeDataset` and compares
actions, states, timestamps, indices, task strings, decoded pixels, counts, fps and LeRobot's aggregated action
statistics against meta/stats.json; and, for episode 0, what LeRobot's policies train with: frame pairs (t, t + 4)
and action chunks t .. t + 3 asked for with `delta_timestamps`. Exit code 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEROBOT_PYTHON = ROOT / ".venv-lerobot" / "bin" / "python"
IMAGE_TOLERANCE = 2  # uint8 levels: two decoders may convert the same YUV frame to RGB with rounding differences
PAIR_OFFSET, CHUNK = 4, 4  # delta_timestamps: frames (t, t + 4) and actions t .. t + 3, as a policy asks for them


# ---------------------------------------------------------------------------------------------- LeRobot side
def dump(root: Path, out: Path) -> None:
    """(Runs in the LeRobot venv.) Read every frame of every episode with LeRobotDataset; save them to `out`."""
    import importlib.metadata as md

    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    report = {"versions": {p: md.version(p) for p in ("lerobot", "torch", "torchvision", "datasets", "av")}}
    try:
        ds = LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav")
    except Exception as err:  # the finding itself: what LeRobot refuses
        report["error"] = f"LeRobotDataset({root}) raised {type(err).__name__}: {err}"
        out.with_suffix(".json").write_text(json.dumps(report))
        return
    def stacked(dataset, episode: int, prefix: str) -> list:
        start, end = int(dataset.episode_data_index["from"][episode]), int(dataset.episode_data_index["to"][episode])
        items = [dataset[i] for i in range(start, end)]  # every frame, decoded
        for key, value in items[0].items():
            if isinstance(value, torch.Tensor):
                x = torch.stack([item[key] for item in items])
                if key in dataset.meta.camera_keys:  # (..., C, H, W) float in [0, 1] -> (..., H, W, C) uint8
                    x = (x * 255).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)
                arrays[f"{prefix}{episode}/{key}"] = x.numpy()
        return [item["task"] for item in items]

    arrays, tasks = {}, {}
    for episode in range(ds.num_episodes):
        tasks[episode] = stacked(ds, episode, "")
    # What LeRobot's policies train with: frames and action chunks at time offsets (delta_timestamps), which it
    # looks up by timestamp in the parquet and the video; episode 0.
    deltas = {ds.meta.camera_keys[0]: [0.0, PAIR_OFFSET / ds.fps]}
    if "action" in ds.features:
        deltas["action"] = [k / ds.fps for k in range(CHUNK)]
    stacked(LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav", delta_timestamps=deltas), 0, "delta/")
    np.savez(out, **arrays)
    report.update({
        "num_frames": ds.num_frames, "num_episodes": ds.num_episodes, "fps": ds.fps, "camera_keys": ds.meta.camera_keys,
        "tasks": tasks, "features": sorted(ds.features),
        "action_stats": {k: np.asarray(v).tolist() for k, v in ds.meta.stats.get("action", {}).items()},
        "stats_keys": sorted(ds.meta.stats or {}),
        "image_stats_shape": {k: list(np.shape(ds.meta.stats[k]["mean"])) for k in ds.meta.camera_keys
                              if k in (ds.meta.stats or {})},
    })
    out.with_suffix(".json").write_text(json.dumps(report))


def read_with_lerobot(python: Path, root: Path, work: Path) -> tuple[dict, dict]:
    out = work / f"{root.name}_lerobot.npz"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(work / "hf_home"))
    env.pop("PYTHONPATH", None)  # the LeRobot venv sees nothing of this project
    result = subprocess.run([str(python), __file__, "--dump", str(root), "--npz", str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"lapa: error: the LeRobot reader crashed on {root}:\n{result.stderr[-3000:]}")
    report = json.loads(out.with_suffix(".json").read_text())
    arrays = dict(np.load(out)) if "error" not in report else {}
    return report, arrays


# ---------------------------------------------------------------------------------------------- datasets
def generate(root: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "lapa_learning.cli", "data", "generate", "--out", str(root), "--tasks",
                    "push-v3,sweep-into-v3", "--episodes-per-task", "1", "--max-steps", "60", "--seed", "0",
                    "--overwrite", *extra], check=True, cwd=root.parent)  # cwd: `-m` imports the installed code


def record(root: Path, work: Path, episodes: int = 2) -> None:
    """sim_node + expert_teleop + recorder_node, driven by episode_runner, as tests/test_ros_graph.py does."""
    config, root = ROOT / "config", root.resolve()
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(config / "fastdds_large_images.xml"),
               PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 20))

    def start(name, *files, **params):
        script = Path(sys.executable).parent / name
        args = [str(script)] if script.exists() else [sys.executable, "-m", f"lapa_ros.{name}"]
        args.append("--ros-args")
        for f in files:
            args += ["--params-file", str(config / f)]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        log = open(work / f"{name}.log", "w")
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)

    nodes = [start("sim_node", "sim.yaml", max_steps=60, reset_on_start="false"),
             start("expert_teleop", "sim.yaml"),
             start("recorder_node", "record.yaml", "sim.yaml", dataset_root=root, fps=20.0)]
    try:
        runner = start("episode_runner", episodes=episodes, record="true", use_sim_time="true")
        if runner.wait(timeout=300) != 0:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(work.glob("*.log")))
            raise SystemExit(f"lapa: error: episode_runner failed while recording {root}:\n{logs}")
    finally:
        for proc in nodes:
            proc.send_signal(signal.SIGINT)
        for proc in nodes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---------------------------------------------------------------------------------------------- comparison
def compare_episode(ds, episode: int, lerobot: dict, arrays: dict) -> tuple[dict, list[str]]:
    """Every per-frame field of one episode as LeRobot read it against EpisodeDataset."""
    fields, diffs = {}, []
    ours = {"action": ds.actions(episode) if ds.has_actions else None,
            "observation.state": ds.states(episode) if ds.state_names else None,
            "timestamp": ds.timestamps(episode)}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        ours[name] = ds._column(episode, name)
    for name, mine in ours.items():
        if mine is None:
            continue
        theirs = arrays.get(f"{episode}/{name}")
        if theirs is None:
            diffs.append(f"episode {episode} {name}: LeRobot returns no such key")
            continue
        mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64).reshape(mine.shape)
        err = float(np.abs(mine - theirs).max())
        fields[name] = {"max_abs_diff": err, "shape": list(mine.shape)}
        if err > (1e-6 if name == "timestamp" else 0.0):
            diffs.append(f"episode {episode} {name}: max abs difference {err:g}")
    instruction, theirs_tasks = ds.episode(episode).instruction, sorted(set(lerobot["tasks"][str(episode)]))
    fields["task"] = {"ours": instruction, "lerobot": theirs_tasks}
    if theirs_tasks != [instruction]:
        diffs.append(f"episode {episode} task: ours {instruction!r}, LeRobot {theirs_tasks}")
    frames, theirs = ds.frames(episode).astype(np.int16), arrays.get(f"{episode}/{ds.video_key}")
    if theirs is None or theirs.shape != frames.shape:
        diffs.append(f"episode {episode} {ds.video_key}: LeRobot frames "
                     f"{None if theirs is None else theirs.shape}, ours {frames.shape}")
    else:
        err = np.abs(frames - theirs.astype(np.int16))  # decoded pixels, 0..255
        fields[ds.video_key] = {"max_abs_diff": int(err.max()), "mean_abs_diff": float(err.mean()),
                                "fraction_of_values_differing": float((err > 0).mean()), "shape": list(frames.shape)}
        if err.max() > IMAGE_TOLERANCE:
            diffs.append(f"episode {episode} {ds.video_key}: decoded pixels differ by up to {int(err.max())} levels")
    return fields, diffs


def compare_offsets(ds, lerobot: dict, arrays: dict) -> tuple[dict, list[str]]:
    """Episode 0 through LeRobot's delta_timestamps against the same offsets taken from our reader (LeRobot repeats
    the last frame past the episode's end and flags it in `<key>_is_pad`)."""
    frames, t = ds.frames(0).astype(np.int16), ds.episode(0).length
    later = np.minimum(np.arange(t) + PAIR_OFFSET, t - 1)
    want = {ds.video_key: np.stack([frames, frames[later]], axis=1),
            f"{ds.video_key}_is_pad": np.stack([np.zeros(t, bool), np.arange(t) + PAIR_OFFSET > t - 1], axis=1)}
    if ds.has_actions:
        steps = np.arange(t)[:, None] + np.arange(CHUNK)[None, :]  # (T, CHUNK)
        want["action"] = ds.actions(0)[np.minimum(steps, t - 1)]
        want["action_is_pad"] = steps > t - 1
    fields, diffs = {}, []
    for key, mine in want.items():
        theirs = arrays.get(f"delta/0/{key}")
        if theirs is None or theirs.shape != mine.shape:
            shape = None if theirs is None else theirs.shape
            diffs.append(f"delta_timestamps {key}: LeRobot {shape}, ours {mine.shape}")
            continue
        err = float(np.abs(mine.astype(np.float64) - theirs.astype(np.float64)).max())
        fields[key] = {"max_abs_diff": err, "shape": list(mine.shape)}
        if err > (IMAGE_TOLERANCE if key == ds.video_key else 0.0):
            diffs.append(f"delta_timestamps {key}: max abs difference {err:g}")
    return fields, diffs


def compare(root: Path, lerobot: dict, arrays: dict) -> dict:
    """Every episode, frame by frame, plus the dataset-wide facts; differences listed."""
    from lapa_learning.data import EpisodeDataset

    ds = EpisodeDataset(root)
    result = {"dataset": str(root.relative_to(ROOT) if root.is_relative_to(ROOT) else root),
              "episodes": ds.num_episodes, "frames": ds.num_frames, "differences": []}
    diffs = result["differences"]
    if "error" in lerobot:
        diffs.append(lerobot["error"])
        return result
    result["per_episode"] = {}
    for ep in ds.episodes:
        result["per_episode"][ep.index], found = compare_episode(ds, ep.index, lerobot, arrays)
        diffs.extend(found)
    result["delta_timestamps_episode_0"], found = compare_offsets(ds, lerobot, arrays)
    diffs.extend(found)
    facts = {}
    for name, mine, theirs in (("num_frames", ds.num_frames, lerobot["num_frames"]),
                               ("num_episodes", ds.num_episodes, lerobot["num_episodes"]),
                               ("fps", ds.fps, lerobot["fps"])):
        facts[name] = {"ours": mine, "lerobot": theirs}
        if mine != theirs:
            diffs.append(f"{name}: ours {mine}, LeRobot {theirs}")
    if ds.has_actions:  # LeRobot's statistics, aggregated from meta/episodes_stats.jsonl, against ours
        ours = ds.action_stats()
        for key in ("min", "max", "mean", "std"):
            err = float(np.abs(np.asarray(ours[key]) - np.asarray(lerobot["action_stats"][key])).max())
            facts[f"action_stats_{key}"] = {"max_abs_diff": err}
            if err > 1e-5:
                diffs.append(f"action stats {key}: LeRobot's differ from meta/stats.json by {err:g}")
    if ds.video_key not in lerobot["stats_keys"]:
        diffs.append(f"meta stats: LeRobot has no statistics for {ds.video_key} (its policies normalise images "
                     f"with them)")
    result["dataset_facts"] = facts
    result["lerobot_stats_keys"] = lerobot["stats_keys"]
    result["lerobot_image_stats_shape"] = lerobot["image_stats_shape"]
    return result


def git_commit() -> str | None:
    import lapa_learning

    result = subprocess.run(["git", "-C", str(Path(lapa_learning.__file__).parent), "rev-parse", "HEAD"],
                            capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(Path(lapa_learning.__file__).parent), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return (result.stdout.strip() + ("+uncommitted changes" if dirty else "")) if result.returncode == 0 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "lerobot_compat.json")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "lerobot_compat",
                        help="where the two datasets are written (replaced)")
    parser.add_argument("--lerobot-python", type=Path, default=LEROBOT_PYTHON,
                        help="Python of the LeRobot venv (scripts/setup_lerobot.sh)")
    parser.add_argument("--dataset", type=Path, action="append",
                        help="check this existing dataset instead of writing the two (repeatable)")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # internal: the LeRobot-venv side
    parser.add_argument("--npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        dump(args.dump, args.npz)
        return 0
    if not args.lerobot_python.is_file():
        print(f"lapa: error: --lerobot-python {args.lerobot_python} does not exist (run scripts/setup_lerobot.sh)",
              file=sys.stderr)
        return 2
    import lapa_learning
    from lapa_learning.io import atomic_write_json
    from lapa_learning.machine import machine

    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    roots = args.dataset
    started = time.time()
    if not roots:
        roots = [args.work / "generated", args.work / "generated_action_free", args.work / "recorded"]
        generate(roots[0])
        generate(roots[1], "--action-free")
        import shutil

        shutil.rmtree(roots[2], ignore_errors=True)
        record(roots[2], args.work)
    results, versions = [], {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for root in roots:
            lerobot, arrays = read_with_lerobot(args.lerobot_python, root.resolve(), Path(tmp))
            versions = lerobot["versions"]
            results.append(compare(root.resolve(), lerobot, arrays))
    report = {
        "command": " ".join(["python scripts/lerobot_compat.py", *(argv if argv is not None else sys.argv[1:])]),
        "lerobot_versions": versions,
        "project_code": {"lapa_learning": str(Path(lapa_learning.__file__).parent), "git_commit": git_commit()},
        "machine": machine(),
        "seeds": {"generate": 0, "sim_node": "config/sim.yaml seed (1000)", "expert_teleop": 0},
        "image_tolerance_levels": IMAGE_TOLERANCE,
        "seconds": round(time.time() - started, 1),
        "datasets": results,
        "identical": not any(r["differences"] for r in results),
    }
    atomic_write_json(args.out, report)
    for r in results:
        print(f"{r['dataset']}: " + ("; ".join(r["differences"]) if r["differences"] else "identical"))
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
