"""What the demo reports: the results JSON (every number, with the command and the machine), the Markdown table
and the bar plot."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from lapa_learning.demo.plan import (ACTION_VIDEO_SET, DEV_SEED_OFFSET, EVAL_SEED_OFFSET, METHOD_NAMES,
                                     SELECTION_RULE, Plan, Preset, laq_dir)
from lapa_learning.demo.runner import marker
from lapa_learning.io import atomic_write_json
from lapa_learning.machine import summary as machine_summary
from lapa_learning.sim.metaworld_env import SIMULATOR_VERSION


def write_report(plan: Plan, preset: Preset, args: argparse.Namespace, minutes: float) -> str:
    out, vset = plan.out, plan.video_set
    methods, selection = {}, {}
    fixed = args.finetune_steps is not None or len(preset.finetune_steps) == 1
    for method, ev in plan.evals.items():
        r = json.loads((ev / "results.json").read_text())
        methods[method] = {"success": r["overall"]["success"], "ci95": r["overall"]["ci95"],
                           "episodes": r["overall"]["episodes"], "successes": r["overall"].get("successes"),
                           "per_task": {t: v["success"] for t, v in r["tasks"].items()},
                           "per_task_successes": {t: v["successes"] for t, v in r["tasks"].items()},
                           "pretraining_videos": None if method == "scratch" else
                           ACTION_VIDEO_SET[args.setting] if method == "actionvla" else vset}
        chosen = None if fixed else read_optional_json(plan.finals[method] / "selection.json")
        methods[method]["finetune_steps"] = chosen["chosen_steps"] if chosen else args.finetune_steps or \
            preset.finetune_steps[0]
        selection[method] = chosen
    if args.setting == "cross-embodiment" and "actionvla" in methods:
        methods["actionvla"]["note"] = ("same-embodiment reference: pretrained on the true actions of robot videos "
                                        "of the same tasks, not on the hand videos the other methods see")
    stage_minutes = {}  # None (and a warning) for a stage whose time was not recorded
    for stage in plan.stages.values():
        try:
            stage_minutes[stage.name] = json.loads(marker(plan, stage).read_text())["seconds"] / 60
        except (OSError, ValueError, KeyError) as err:
            stage_minutes[stage.name] = None
            print(f"warning: stage {stage.name}: no recorded time in {marker(plan, stage)} "
                  f"({type(err).__name__}: {err})", file=sys.stderr)
    results = {
        "command": " ".join(shlex.quote(a) for a in ["lapa", *sys.argv[1:]]) if sys.argv[1:2] == ["demo"]
        else " ".join(shlex.quote(a) for a in sys.argv),  # as invoked (sys.argv), never retyped
        "minutes": minutes,  # this invocation's wall time; the stages in stages_reused ran before it
        "stages_reused": [s.name for s in plan.stages.values() if s.status == "reused"],
        "preset": args.preset,
        "laq_seeds": preset.laq_seeds,  # > 1: LAQ selection (laq.selection below has the rule and each seed's R²)
        "setting": args.setting,
        "pretraining_videos": vset,
        "seed": args.seed,
        "machine": machine_summary(),
        "simulator_version": SIMULATOR_VERSION,  # runs of different versions are never pooled (pool_claims)
        "tasks": list(preset.tasks),
        "pretraining_tasks": list(preset.other_tasks if vset == "other-tasks" else preset.tasks),
        "pretrain_episodes_per_task": preset.pretrain_episodes,
        "finetune_episodes_per_task": preset.finetune_episodes,
        "finetune_episodes_trained_on": "all (validation from separate episodes: data/val)",
        "val_episodes_per_task": preset.val_episodes,
        "eval_episodes_per_task": preset.eval_episodes,
        "eval_seed": args.seed + EVAL_SEED_OFFSET,  # base seed of the evaluation layouts (lapa eval --seed)
        "finetune_step_rule": {
            "rule": f"fixed: {args.finetune_steps or preset.finetune_steps[0]} steps for every method" if fixed
            else SELECTION_RULE,
            "candidates": [] if fixed else list(preset.finetune_steps),
            "dev_seed": None if fixed else args.seed + DEV_SEED_OFFSET,
            "dev_episodes_per_task": None if fixed else preset.dev_episodes,
            "per_method": {m: c and {"chosen_steps": c["chosen_steps"], "dev_success": c["dev_success"]}
                           for m, c in selection.items()},
        },
        "methods": methods,
        "stage_minutes": stage_minutes,
    }
    # What the intermediate stages achieved (each stage's own held-out numbers), only of stages in this plan: a
    # directory an earlier run left in the same --out (another method set, another --laq-seeds) says nothing here.
    base = out / vset

    def recorded(stage: str, path: Path) -> dict:
        return (read_optional_json(path) or {}) if stage in plan.stages else {}

    laq = laq_dir(base, preset)
    laq_eval = recorded(f"laq-train-{vset}", laq / "summary.json").get("eval", {})
    probe = recorded(f"laq-explain-{vset}", base / "explain" / "laq_explain.json").get("probe", {})
    latent = recorded(f"pretrain-lapa-{vset}", base / "pretrain_lapa" / "train_record.json")
    results["laq"] = {k: laq_eval.get(k) for k in ("psnr_changed", "psnr_changed_copy_baseline",
                                                     "codes_used_fraction")}
    results["laq"]["probe_r2_xyz"] = probe.get("probe_r2_xyz")
    results["laq"]["selection"] = (recorded(f"laq-train-{vset}", laq / "selection.json") or None
                                   if preset.laq_seeds > 1 else None)
    results["latent_pretraining"] = {"latent_token_accuracy": latent.get("metrics", {}).get("latent_token_accuracy"),
                                     "majority_baseline_accuracy": latent.get("majority_baseline_accuracy")}
    idm = recorded("vpt-train", out / "vpt" / "idm" / "train_record.json")
    results["vpt_idm"] = {k: idm.get("metrics", {}).get(k) for k in ("l1", "mean_baseline_l1", "pearson_per_dim")}
    vision = recorded(f"pretrain-vision-{vset}", base / "pretrain_vision" / "train_record.json")
    results["vision_pretraining"] = {k: vision.get("metrics", {}).get(k) for k in ("val_mse", "copy_x_t_mse")}
    stem = out / f"results_{args.setting}"
    atomic_write_json(stem.with_suffix(".json"), results)
    if args.results:
        atomic_write_json(Path(args.results), results)
    table = results_table(results)
    stem.with_suffix(".md").write_text(results_header(results) + table + "\n")
    plot_results(results, stem.with_suffix(".png"))
    from lapa_learning.data.reader import EpisodeDataset

    sets = [out / "data/finetune", out / "data/val", *dict.fromkeys(out / m["pretraining_videos"] / "videos"
                                                                    for m in methods.values()
                                                                    if m["pretraining_videos"])]
    data = "\n".join(f"  {EpisodeDataset(p)}" for p in sets)
    return (f"\n{table}\n\ndata:\n{data}\n"
            f"wrote {stem}.json, {stem}.md, {stem}.png")


def results_header(results: dict) -> str:
    """What ran, above the table, so that a copied results_<setting>.md still says it (the JSON has the rest)."""
    quick = " (quick: the code path only, its numbers mean nothing)" if results.get("preset") == "quick" else ""
    return (f"Setting {results['setting']} (pretraining videos: {results['pretraining_videos']}, tasks "
            f"{', '.join(results['pretraining_tasks'])}), seed {results['seed']}, preset {results['preset']}{quick}; "
            f"evaluated on {', '.join(results['tasks'])}.\nCommand: `{results['command']}`; machine: "
            f"{results['machine']}.\n\n")


def results_table(results: dict) -> str:
    tasks = results["tasks"]
    head = "| method | success | 95% CI | episodes | finetune steps | " + " | ".join(tasks) + " |"
    rows = [head, "|" + "---|" * (5 + len(tasks))]
    for method, r in results["methods"].items():
        per_task = " | ".join(f"{100 * r['per_task'][t]:.0f}%" for t in tasks)
        name = METHOD_NAMES[method] + (" [same-embodiment reference]" if "note" in r else "")
        rows.append(f"| {name} | {100 * r['success']:.1f}% | [{100 * r['ci95'][0]:.1f}, "
                    f"{100 * r['ci95'][1]:.1f}] | {r['episodes']} | {r['finetune_steps']} | {per_task} |")
    return "\n".join(rows)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, lows, highs = [], [], [], []
    for method, r in results["methods"].items():
        labels.append(method.replace("lapa-shuffled", "LAPA\nshuffled").replace("lapa", "LAPA").replace(
            "actionvla", "ActionVLA").replace("vpt", "VPT").replace("scratch", "Scratch").replace("vision", "Vision"))
        values.append(100 * r["success"])
        lows.append(100 * (r["success"] - r["ci95"][0]))
        highs.append(100 * (r["ci95"][1] - r["success"]))
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 1.5, 3.2), dpi=120)
    ax.bar(labels, values, yerr=[lows, highs], capsize=6, color="#2b7bba")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"{results['setting']}: Meta-World {', '.join(t.replace('-v3', '') for t in results['tasks'])}\n"
                 f"{results['finetune_episodes_per_task']} labelled demos/task, 95% CI", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def read_optional_json(path: Path):
    """The JSON at `path`, or None when it is missing or unreadable (a stage's optional record)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def video_set_record(base: Path, laq_run: Path | None = None) -> dict:
    """What the stages of one video set (<out>/<video set>) recorded: LAQ reconstruction, the linear probe from
    latent tokens to true actions, code usage per token position, latent-pretraining accuracy and baselines.
    laq_run: the LAQ that labelled the videos (default <video set>/laq; plan.laq_dir() with LAQ selection)."""
    import numpy as np

    laq = (read_optional_json((laq_run or base / "laq") / "summary.json") or {}).get("eval", {})
    explain = read_optional_json(base / "explain/laq_explain.json") or {}
    probe = explain.get("probe", {})
    counts = np.asarray(probe.get("code_counts") or [[0]], dtype=float)  # (K positions, codebook)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    latent = read_optional_json(base / "pretrain_lapa/train_record.json") or {}
    return {
        "laq_eval": {k: laq.get(k) for k in ("psnr_changed", "psnr_changed_copy_baseline", "codes_used_fraction")},
        "probe_target": probe.get("target"), "probe_evaluation": probe.get("evaluation"),
        "probe_r2_per_action_dim": dict(zip(probe.get("action_names", []), probe.get("r2_action", []))),
        "probe_r2_xyz": probe.get("probe_r2_xyz"),
        "codes_with_at_least_5pct_of_pairs_per_token": [int((row >= 0.05).sum()) for row in share],
        "codebook_size": explain.get("codebook_size"),
        "latent_token_accuracy": latent.get("metrics", {}).get("latent_token_accuracy"),
        "majority_baseline_accuracy": latent.get("majority_baseline_accuracy"),
        "instruction_majority_baseline_accuracy": latent.get("instruction_majority_baseline_accuracy"),
    }
