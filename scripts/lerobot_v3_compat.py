"""Read datasets that LeRobot >= 0.4 itself writes (LeRobotDataset v3.0) with our reader, and compare with LeRobot's.

    scripts/setup_lerobot.sh --v3             # once: .venv-lerobot3 with lerobot 0.4.4 (writes and reads v3.0)
    .venv/bin/python scripts/lerobot_v3_compat.py [--out results/lerobot_v3_compat.json]

`lapa data generate` writes a small Meta-World dataset (the source). In the LeRobot venv, LeRobotDataset.create +
add_frame + save_episode + finalize copy it, frame by frame, into a v3.0 dataset with three cameras (two videos, the
second upside down, and one "image" feature, stored as PNG in the data files, inverted) and small file-size limits, so that data and video files hold several episodes and episodes
spread over several files and chunks; LeRobot then reopens it and decodes every frame of every episode. Here,
EpisodeDataset reads the same dataset (every camera) and the comparison covers episode count, lengths, instructions,
actions, states and timestamps (exact) and decoded pixels (within IMAGE_TOLERANCE levels: the video is LeRobot's
lossy AV1, decoded by each side). Exit code 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEROBOT_PYTHON = ROOT / ".venv-lerobot3" / "bin" / "python"
IMAGE_TOLERANCE = 2  # uint8 levels: two decoders may convert the same YUV frame to RGB with rounding differences
CAMERAS = ("observation.images.front", "observation.images.flipped", "observation.images.png")
IMAGE_CAMERA = CAMERAS[2]  # LeRobot's "image" dtype: PNG in the data files (the frames inverted), not video
# LeRobot's file size limits here (MB): two 64 px episodes per video file (about 30 KB each in AV1) and per data
# file (about 0.37 MB each with the PNG camera), two files per chunk, so that episodes start inside a video file and
# share data files, and files and chunks both vary
VIDEO_MB, DATA_MB, CHUNK_FILES = 0.07, 0.9, 2


# ---------------------------------------------------------------------------------------------- LeRobot side
def write_and_dump(source_npz: Path, root: Path, out: Path) -> None:
    """(Runs in the LeRobot venv.) Write the episodes of `source_npz` as a v3.0 dataset at `root` with LeRobot,
    reopen it and save every decoded frame, action and state to `out` (.npz) and a report to `out`.json."""
    import importlib.metadata as md

    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src = np.load(source_npz)
    meta = json.loads(str(src["meta"]))
    size = meta["image_size"]
    video = {"dtype": "video", "shape": (size, size, 3), "names": ["height", "width", "channels"]}  # tuples: LeRobot
    # compares shapes as tuples
    features = {CAMERAS[0]: video, CAMERAS[1]: dict(video), IMAGE_CAMERA: dict(video, dtype="image"),
                "action": {"dtype": "float32", "shape": (len(meta["action_names"]),), "names": meta["action_names"]},
                "observation.state": {"dtype": "float32", "shape": (len(meta["state_names"]),),
                                      "names": meta["state_names"]}}
    ds = LeRobotDataset.create(f"local/{root.name}", fps=meta["fps"], features=features, root=root,
                               robot_type="sawyer_metaworld")
    ds.meta.update_chunk_settings(chunks_size=CHUNK_FILES, data_files_size_in_mb=DATA_MB,
                                  video_files_size_in_mb=VIDEO_MB)
    for e, instruction in enumerate(meta["instructions"]):
        frames, actions, states = src[f"frames{e}"], src[f"actions{e}"], src[f"states{e}"]
        for t in range(len(frames)):
            ds.add_frame({CAMERAS[0]: frames[t], CAMERAS[1]: np.ascontiguousarray(frames[t, ::-1]),
                          IMAGE_CAMERA: 255 - frames[t],
                          "action": actions[t], "observation.state": states[t], "task": instruction})
        ds.save_episode()
    ds.finalize()

    report = {"versions": {p: md.version(p) for p in ("lerobot", "torch", "datasets", "av")}}
    back = LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav")
    arrays = {}
    report["episodes"] = []
    for e in range(back.meta.total_episodes):
        ep = back.meta.episodes[e]
        start, end = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
        items = [back[i] for i in range(start, end)]
        for key in (*CAMERAS, "action", "observation.state", "timestamp"):
            x = torch.stack([item[key] for item in items])
            if key in CAMERAS:  # (T, C, H, W) float in [0, 1] -> (T, H, W, C) uint8
                x = (x * 255).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)
            arrays[f"{key}/{e}"] = x.numpy()
        report["episodes"].append({"index": int(ep["episode_index"]), "length": end - start,
                                   "task": items[0]["task"],
                                   "files": {k: [int(ep[f"videos/{k}/chunk_index"]), int(ep[f"videos/{k}/file_index"])]
                                             for k in CAMERAS if k != IMAGE_CAMERA}
                                            | {"data": [int(ep["data/chunk_index"]), int(ep["data/file_index"])]}})
    np.savez(out, **arrays)
    out.with_suffix(".json").write_text(json.dumps(report))


# ---------------------------------------------------------------------------------------------- our side
def source_npz(source: Path, out: Path) -> None:
    from lapa_learning.data import EpisodeDataset

    ds = EpisodeDataset(source)
    arrays = {}
    for e, ep in enumerate(ds.episodes):
        arrays[f"frames{e}"] = ds.frames(ep.index)
        arrays[f"actions{e}"] = ds.actions(ep.index)
        arrays[f"states{e}"] = ds.states(ep.index)
    meta = {"fps": int(round(ds.fps)), "image_size": ds.image_size[0], "action_names": list(ds.action_names),
            "state_names": list(ds.state_names), "instructions": [ep.instruction for ep in ds.episodes]}
    np.savez(out, meta=json.dumps(meta), **arrays)


def compare(root: Path, lerobot: dict, arrays: dict) -> tuple[dict, list[str]]:
    from lapa_learning.data import EpisodeDataset

    diffs, per_episode = [], []
    readers = {key: EpisodeDataset(root, video_key=key) for key in CAMERAS}
    ds = readers[CAMERAS[0]]
    if ds.layout != "v3.0":
        diffs.append(f"layout {ds.layout}, expected v3.0")
    if [ep.index for ep in ds.episodes] != [e["index"] for e in lerobot["episodes"]]:
        diffs.append(f"episodes {[ep.index for ep in ds.episodes]} vs LeRobot's {lerobot['episodes']}")
        return {"differences": diffs}, diffs
    for ep, theirs in zip(ds.episodes, lerobot["episodes"]):
        e = ep.index
        row = {"episode": e, "length": ep.length, "files": theirs["files"],
               "video_start_s": {k: reader._files[e].start_s for k, reader in readers.items() if k != IMAGE_CAMERA}}
        if ep.length != theirs["length"] or ep.instruction != theirs["task"]:
            diffs.append(f"episode {e}: length/instruction {ep.length}/{ep.instruction!r} vs "
                         f"{theirs['length']}/{theirs['task']!r}")
        for name, ours in (("action", ds.actions(e)), ("observation.state", ds.states(e)),
                           ("timestamp", ds.timestamps(e))):
            theirs_arr = arrays[f"{name}/{e}"].reshape(ours.shape)
            if not np.allclose(ours, theirs_arr, atol=1e-6):
                diffs.append(f"episode {e}: {name} differs (max {np.abs(ours - theirs_arr).max():.2e})")
        for key, reader in readers.items():
            ours = reader.frames(e).astype(int)
            theirs_px = arrays[f"{key}/{e}"].astype(int)
            if ours.shape != theirs_px.shape:
                diffs.append(f"episode {e} {key}: frames {ours.shape} vs LeRobot's {theirs_px.shape}")
                continue
            err = int(np.abs(ours - theirs_px).max())
            row[f"max_pixel_difference/{key}"] = err
            if err > IMAGE_TOLERANCE:
                diffs.append(f"episode {e} {key}: pixels differ by up to {err} levels")
        per_episode.append(row)
    files = {key: len({tuple(r["files"][key]) for r in per_episode}) for key in (*CAMERAS[:2], "data")}
    return {"episodes": per_episode, "files": files, "differences": diffs}, diffs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "lerobot_v3_compat.json")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "lerobot_v3_compat",
                        help="where the source and the v3.0 dataset are written (replaced)")
    parser.add_argument("--lerobot-python", type=Path, default=LEROBOT_PYTHON,
                        help="Python of the LeRobot >= 0.4 venv (scripts/setup_lerobot.sh --v3)")
    parser.add_argument("--episodes-per-task", type=int, default=3)
    parser.add_argument("--write-and-dump", nargs=3, type=Path, help=argparse.SUPPRESS)  # the LeRobot-venv side
    args = parser.parse_args(argv)
    if args.write_and_dump:
        write_and_dump(*args.write_and_dump)
        return 0
    if not args.lerobot_python.is_file():
        print(f"lapa: error: --lerobot-python {args.lerobot_python} does not exist (run scripts/setup_lerobot.sh "
              f"--v3)", file=sys.stderr)
        return 2
    import shutil

    from lapa_learning.cli_args import script_command
    from lapa_learning.io import atomic_write_json
    from lapa_learning.machine import machine

    started = time.time()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source, v3 = work / "source", work / "lerobot_v3"
    subprocess.run([sys.executable, "-m", "lapa_learning.cli", "data", "generate", "--out", str(source), "--tasks",
                    "push-v3,sweep-into-v3", "--episodes-per-task", str(args.episodes_per_task), "--max-steps", "60",
                    "--seed", "0"], check=True, cwd=work)
    source_npz(source, work / "source.npz")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(work / "hf_home"))
    env.pop("PYTHONPATH", None)  # the LeRobot venv sees nothing of this project
    result = subprocess.run([str(args.lerobot_python), __file__, "--write-and-dump", str(work / "source.npz"),
                             str(v3), str(work / "lerobot.npz")], env=env, capture_output=True, text=True,
                            timeout=1200)
    if result.returncode != 0:
        print(f"lapa: error: the LeRobot side failed:\n{result.stderr[-3000:]}", file=sys.stderr)
        return 1
    lerobot = json.loads((work / "lerobot.json").read_text())
    found, diffs = compare(v3, lerobot, dict(np.load(work / "lerobot.npz")))
    report = {"command": script_command(), "lerobot_versions": lerobot["versions"], "machine": machine(),
              "seeds": {"generate": 0}, "cameras": list(CAMERAS),
              "file_limits": {"video_mb": VIDEO_MB, "data_mb": DATA_MB, "files_per_chunk": CHUNK_FILES},
              "image_tolerance_levels": IMAGE_TOLERANCE, "seconds": round(time.time() - started, 1),
              **found, "identical": not diffs}
    atomic_write_json(args.out, report)
    print(f"{len(found.get('episodes', []))} episodes in {found.get('files')} files: "
          + ("; ".join(diffs) if diffs else "identical (pixels within the tolerance)"))
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
