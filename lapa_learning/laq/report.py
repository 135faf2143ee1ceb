"""Collect one LAQ run's held-out metrics and probe into a small results JSON (e.g. results/laq_tiny.json).

    python -m lapa_learning.laq.report --run outputs/laq_tiny --explain results/laq_tiny_explain.json \
        --out results/laq_tiny.json --machine "2-core x86-64 CPU, no GPU, 1 torch thread" --command "..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lapa_learning.errors import LapaError
from lapa_learning.io import atomic_write_json
from lapa_learning.laq import checkpoint as ckpt


def build_report(run: Path, explain_json: Path, machine: str, commands: list[str]) -> dict:
    step_dir = ckpt.resolve_checkpoint(run)
    config = ckpt.read_config(step_dir)
    metrics_path = step_dir / ckpt.METRICS
    if not metrics_path.is_file():
        raise LapaError(f"{metrics_path} is missing: the run has no held-out evaluation at its last checkpoint")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    summary_path = Path(run) / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    explain = json.loads(Path(explain_json).read_text(encoding="utf-8"))
    probe = explain.get("probe") or {}
    keys = ("psnr", "psnr_copy_baseline", "psnr_changed", "psnr_changed_copy_baseline", "mse", "mse_copy_baseline",
            "mse_changed", "mse_changed_copy_baseline", "changed_fraction", "change_threshold",
            "codes_used_fraction", "codes_used_any_position", "codes_used_per_position", "perplexity_per_position", "distinct_actions", "pairs")
    return {
        **{k: metrics[k] for k in keys if k in metrics},
        "probe_r2_xyz": probe.get("probe_r2_xyz"),
        "probe_r2_per_action": dict(zip(probe.get("action_names", []), probe.get("r2_action", []))),
        "probe_r2_xyz_lookup": probe.get("probe_r2_xyz_lookup"),
        "probe_r2_ee_displacement_xyz": probe.get("probe_r2_ee_displacement_xyz"),
        "probe_target": probe.get("target"),
        "probe_evaluation": probe.get("evaluation"),
        "probe_pairs": probe.get("pairs"),
        "train_minutes": summary.get("train_minutes"),
        "steps": config.get("step"),
        "offset_frames": config.get("offset"),
        "fps": config.get("fps"),
        "train_pairs": config.get("train_pairs"),
        "train_episodes": config.get("train_episodes"),
        "val_episodes": config.get("val_episodes"),
        "num_params": config.get("num_params"),
        "model": config.get("model"),
        "train": config.get("train"),
        "machine": machine,
        "command": commands,
        "notes": "held-out metrics: episodes of the pretraining set never trained on (episode-level split); probe: "
                 "a separate action-labelled dataset of the same tasks with disjoint seeds; train_minutes is the "
                 "wall time of the training command, including video decoding and the final evaluation",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--explain", required=True, type=Path, help="the <prefix>_explain.json of lapa laq explain")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--machine", required=True)
    parser.add_argument("--command", action="append", default=[], help="a command that reproduces it (repeatable)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.run, args.explain, args.machine, args.command)
    except LapaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("psnr_changed", "psnr_changed_copy_baseline", "codes_used_fraction",
                                             "probe_r2_xyz", "train_minutes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
