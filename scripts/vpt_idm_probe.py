"""How good are VPT's pseudo-actions on Meta-World? Train the IDM on the demo's small labelled set, pseudo-label
robot videos that do have true actions, and compare (L1, Pearson r per dimension, against predicting the mean).

    .venv/bin/python scripts/vpt_idm_probe.py                       # writes results/vpt_idm_probe.json
    .venv/bin/python scripts/vpt_idm_probe.py --embodiment hand --out results/vpt_idm_probe_hand.json

Data as in the default demo: 2 successful demos per task for training (seed 1), 2 for validation (seed 3), and
action-noise-0.1 videos (seed 0) with their true actions as the labelling target. With --embodiment, the IDM
labels the same episodes performed by that embodiment instead (same seeds, so the same physics and motion; the
videos are action-free) and is scored against the robot episodes' true actions: does it transfer?
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = "button-press-topdown-v3,plate-slide-v3,window-open-v3"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/vpt_idm_probe"))
    parser.add_argument("--videos-per-task", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--embodiment", help="label these episodes as performed by this embodiment (e.g. hand)")
    parser.add_argument("--out", type=Path, default=Path("results/vpt_idm_probe.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lapa_learning.cli import main as lapa
    from lapa_learning.cli_args import script_command
    from lapa_learning.io import atomic_write_json
    from lapa_learning.data.reader import EpisodeDataset
    from lapa_learning.vpt.pseudo_actions import PseudoActions

    started, w = time.time(), args.work
    for name, n, seed, extra in (("finetune", 2, 1, ["--only-success"]), ("val", 2, 3, ["--only-success"]),
                                 ("videos", args.videos_per_task, 0, ["--action-noise", "0.1"])):
        if not (w / name / "meta/info.json").is_file():
            assert lapa(["data", "generate", "--out", str(w / name), "--tasks", TASKS, "--episodes-per-task", str(n),
                         "--seed", str(seed), "--overwrite", *extra]) == 0
    labelled = w / "videos"
    if args.embodiment:
        labelled = w / f"videos_{args.embodiment}"
        if not (labelled / "meta/info.json").is_file():
            assert lapa(["data", "generate", "--out", str(labelled), "--tasks", TASKS, "--episodes-per-task",
                         str(args.videos_per_task), "--seed", "0", "--action-noise", "0.1", "--embodiment",
                         args.embodiment, "--overwrite"]) == 0
    if not (w / "idm" / "checkpoint").is_dir():
        assert lapa(["vpt", "train", "--data", str(w / "finetune"), "--val-data", str(w / "val"), "--out",
                     str(w / "idm"), "--max-steps", str(args.steps), "--seed", "0", "--no-progress"]) == 0
    assert lapa(["vpt", "label", "--checkpoint", str(w / "idm"), "--data", str(labelled), "--no-progress"]) == 0
    ds, labels = EpisodeDataset(w / "videos"), PseudoActions.load(labelled)
    pred = np.concatenate([labels.actions(e.index, e.length) for e in ds.episodes])
    true = np.concatenate([ds.actions(e.index) for e in ds.episodes])
    idm = json.loads((w / "idm" / "train_record.json").read_text())
    result = {
        "command": script_command(),
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, torch threads 1",
        "seeds": {"finetune_data": 1, "val_data": 3, "videos": 0, "idm": 0},
        "tasks": TASKS.split(","), "idm_steps": args.steps, "minutes": (time.time() - started) / 60,
        "labelled_videos": args.embodiment or "sawyer (the robot itself)",
        "idm_heldout": idm["metrics"],
        "videos": {"episodes": ds.num_episodes, "frames": int(len(true)), "action_names": list(labels.action_names),
                   "l1_per_dim": np.abs(pred - true).mean(0).round(4).tolist(),
                   "mean_baseline_l1_per_dim": np.abs(true.mean(0) - true).mean(0).round(4).tolist(),
                   "pearson_per_dim": [round(float(np.corrcoef(pred[:, d], true[:, d])[0, 1]), 4)
                                       for d in range(true.shape[1])]},
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result["videos"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
