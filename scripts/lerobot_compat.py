"""Open this project's datasets with the real LeRobot loader and compare one episode, frame by frame, with ours.

    scripts/setup_lerobot.sh                 # once: .venv-lerobot with lerobot 0.3.3 (reads codebase v2.1)
    .venv/bin/python scripts/lerobot_compat.py [--out results/lerobot_compat.json]

Two datasets are written into --work: one by `lapa data generate` and one by the ROS nodes (sim_node +
expert_teleop + recorder_node + episode_runner, as tests/test_ros_graph.py starts them). Each is opened offline
(HF_HUB_OFFLINE=1) with `LeRobotDataset(repo_id, root=..., video_backend="pyav")` in the LeRobot venv, which reads
every frame of episode 0 into an .npz; this process reads the same episode with `EpisodeDataset` and compares
actions, states, timestamps, indices, task strings and decoded pixels. Exit code 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


# ---------------------------------------------------------------------------------------------- LeRobot side
def dump(root: Path, episode: int, out: Path) -> None:
    """(Runs in the LeRobot venv.) Read every frame of `episode` with LeRobotDataset and save it to `out`."""
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
    start, end = int(ds.episode_data_index["from"][episode]), int(ds.episode_data_index["to"][episode])
    items = [ds[i] for i in range(start, end)]
    arrays = {}
    for key, value in items[0].items():
        if isinstance(value, torch.Tensor):
            stacked = torch.stack([item[key] for item in items])
            if key in ds.meta.camera_keys:  # (T, C, H, W) float in [0, 1] -> (T, H, W, C) uint8
                stacked = (stacked * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            arrays[key] = stacked.numpy()
    np.savez(out, **arrays)
    report.update({
        "num_frames": ds.num_frames, "num_episodes": ds.num_episodes, "fps": ds.fps, "camera_keys": ds.meta.camera_keys,
        "tasks": [item["task"] for item in items], "features": sorted(ds.features),
        "stats_keys": sorted(ds.meta.stats or {}),
        "image_stats_shape": {k: list(np.shape(ds.meta.stats[k]["mean"])) for k in ds.meta.camera_keys
                              if k in (ds.meta.stats or {})},
    })
    out.with_suffix(".json").write_text(json.dumps(report))


def read_with_lerobot(python: Path, root: Path, episode: int, work: Path) -> tuple[dict, dict]:
    out = work / f"{root.name}_lerobot.npz"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(work / "hf_home"))
    env.pop("PYTHONPATH", None)  # the LeRobot venv sees nothing of this project
    result = subprocess.run([str(python), __file__, "--dump", str(root), "--episode", str(episode), "--npz", str(out)],
                            env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"lapa: error: the LeRobot reader crashed on {root}:\n{result.stderr[-3000:]}")
    report = json.loads(out.with_suffix(".json").read_text())
    arrays = dict(np.load(out)) if "error" not in report else {}
    return report, arrays


# ---------------------------------------------------------------------------------------------- datasets
def generate(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "lapa_learning.cli", "data", "generate", "--out", str(root), "--tasks",
                    "push-v3", "--episodes-per-task", "2", "--max-steps", "60", "--seed", "0", "--overwrite"],
                   check=True)


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
def compare(root: Path, episode: int, lerobot: dict, arrays: dict) -> dict:
    """Every per-frame field of `episode` as LeRobot read it against EpisodeDataset; differences listed."""
    from lapa_learning.data import EpisodeDataset

    ds = EpisodeDataset(root)
    result = {"dataset": str(root.relative_to(ROOT) if root.is_relative_to(ROOT) else root),
              "episode": episode, "frames": ds.episode(episode).length, "differences": []}
    diffs = result["differences"]
    if "error" in lerobot:
        diffs.append(lerobot["error"])
        return result
    ours = {"action": ds.actions(episode) if ds.has_actions else None,
            "observation.state": ds.states(episode) if ds.state_names else None,
            "timestamp": ds.timestamps(episode)}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        ours[name] = ds._column(episode, name)
    fields = {}
    for name, mine in ours.items():
        if mine is None:
            continue
        theirs = arrays.get(name)
        if theirs is None:
            diffs.append(f"{name}: LeRobot returns no such key")
            continue
        mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64).reshape(mine.shape)
        err = float(np.abs(mine - theirs).max())
        fields[name] = {"max_abs_diff": err, "shape": list(mine.shape)}
        if err > (1e-6 if name == "timestamp" else 0.0):
            diffs.append(f"{name}: max abs difference {err:g}")
    instruction = ds.episode(episode).instruction
    fields["task"] = {"ours": instruction, "lerobot_distinct": sorted(set(lerobot["tasks"]))}
    if set(lerobot["tasks"]) != {instruction}:
        diffs.append(f"task: ours {instruction!r}, LeRobot {sorted(set(lerobot['tasks']))}")
    frames, theirs = ds.frames(episode).astype(np.int16), arrays.get(ds.video_key)
    if theirs is None or theirs.shape != frames.shape:
        diffs.append(f"{ds.video_key}: LeRobot frames {None if theirs is None else theirs.shape}, ours {frames.shape}")
    else:
        err = np.abs(frames - theirs.astype(np.int16))
        fields[ds.video_key] = {"max_abs_diff": int(err.max()), "mean_abs_diff": float(err.mean()),
                                "fraction_of_values_differing": float((err > 0).mean()), "shape": list(frames.shape)}
        if err.max() > IMAGE_TOLERANCE:
            diffs.append(f"{ds.video_key}: decoded pixels differ by up to {int(err.max())} levels")
    for name, mine, theirs in (("num_frames", ds.num_frames, lerobot["num_frames"]),
                               ("num_episodes", ds.num_episodes, lerobot["num_episodes"]),
                               ("fps", ds.fps, lerobot["fps"])):
        fields[name] = {"ours": mine, "lerobot": theirs}
        if mine != theirs:
            diffs.append(f"{name}: ours {mine}, LeRobot {theirs}")
    if ds.video_key not in lerobot["stats_keys"]:
        diffs.append(f"meta stats: LeRobot has no statistics for {ds.video_key} (its policies normalise images "
                     f"with them)")
    result["fields"] = fields
    result["lerobot_stats_keys"] = lerobot["stats_keys"]
    result["lerobot_image_stats_shape"] = lerobot["image_stats_shape"]
    return result


def machine() -> dict:
    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "lerobot_compat.json")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "lerobot_compat",
                        help="where the two datasets are written (replaced)")
    parser.add_argument("--lerobot-python", type=Path, default=LEROBOT_PYTHON,
                        help="Python of the LeRobot venv (scripts/setup_lerobot.sh)")
    parser.add_argument("--dataset", type=Path, action="append",
                        help="check this existing dataset instead of writing the two (repeatable)")
    parser.add_argument("--episode", type=int, default=0)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # internal: the LeRobot-venv side
    parser.add_argument("--npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        dump(args.dump, args.episode, args.npz)
        return 0
    if not args.lerobot_python.is_file():
        print(f"lapa: error: --lerobot-python {args.lerobot_python} does not exist (run scripts/setup_lerobot.sh)",
              file=sys.stderr)
        return 2
    from lapa_learning.data.format import atomic_write_json

    args.work.mkdir(parents=True, exist_ok=True)
    roots = args.dataset
    started = time.time()
    if not roots:
        roots = [args.work / "generated", args.work / "recorded"]
        generate(roots[0])
        import shutil

        shutil.rmtree(roots[1], ignore_errors=True)
        record(roots[1], args.work)
    results, versions = [], {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for root in roots:
            lerobot, arrays = read_with_lerobot(args.lerobot_python, root.resolve(), args.episode, Path(tmp))
            versions = lerobot["versions"]
            results.append(compare(root.resolve(), args.episode, lerobot, arrays))
    report = {
        "command": "python scripts/lerobot_compat.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "lerobot_versions": versions,
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
