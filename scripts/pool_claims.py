"""Pool the demo's per-seed results into the claims: results/demo_<setting>_seed<k>.json -> results/claims.json.

    python scripts/pool_claims.py                                   # every results/demo_*_seed*.json
    python scripts/pool_claims.py --inputs a.json b.json --out claims.json
    python scripts/pool_claims.py --inputs results/laq_selection/demo_*.json --out results/laq_selection/claims.json \
        --against results/claims.json        # a changed recipe, seed by seed against the claims of the old one

Per setting and method: pooled successes over episodes from every seed, the 95% Wilson interval of the pooled
rate, episodes, seeds, and per-task pooled rates. Per setting: whether LAPA's pooled rate and interval lie above
Scratch's and above VPT's (an interval "lies above" when its lower end exceeds the other's upper end), and the
fewest pooled episodes and seeds of LAPA, VPT, Scratch and ActionVLA (issue 9's bar: >= 900 episodes from >= 3
seeds); per method also its rate in each seed and the development evaluations that chose its finetuning budget,
pooled per candidate. Per setting, LAPA minus Scratch and minus VPT seed by seed with a Student-t interval over
seeds (`paired`); over all runs, the LAQ probe's R² next to LAPA's gains and their correlation, and whether two
criteria of the LAQ that need no actions follow either (`latent_quality`).
Also writes the table shaped like the paper's (rows: methods, columns: settings) and the other two next to the
JSON, as claims.md. `--against OTHER`: per setting and method in both, this recipe's success minus the other
claims' seed by seed (the same seeds share the labelled set and evaluation layouts), with the t interval over seeds
(`against`). Seeds of a setting must come from the same recipe (preset, tasks, pretraining tasks, LAQ seeds). A seed may appear in
several files only as one run asked for more methods (e.g. the same command again with an extra method, written
elsewhere): they are merged when they share the evaluation layouts and every method they both hold has the same
result, e.g.

    python scripts/pool_claims.py --inputs results/demo_cross-embodiment_seed*.json \
        results/frozen_tower/demo_cross-embodiment_seed*.json --out results/frozen_tower/claims.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.demo.plan import METHOD_NAMES, PRESETS, SETTINGS  # noqa: E402
from lapa_learning.errors import InputError  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.eval.stats import paired_differences, wilson_interval  # noqa: E402
from lapa_learning.machine import cpu_name  # noqa: E402

BAR_METHODS = ("lapa", "vpt", "scratch", "actionvla")  # the methods issue 9's episode and seed bar is about
# Seed-by-seed differences (`paired`, key "A - B"): LAPA against its baselines, and latent pretraining on the
# vision-pretrained tower against the tower alone and the two ways of doing it against each other.
PAIRS = (("lapa", "scratch"), ("lapa", "vpt"), ("lapa-vision", "vision"), ("lapa-vision-frozen", "vision"),
         ("lapa-vision-frozen", "lapa-vision"))
NAME = re.compile(r"demo_(?P<setting>[a-z-]+)_seed(?P<seed>\d+)\.json$")


def _load(path: Path) -> dict:
    try:
        r = json.loads(path.read_text())
        setting, seed, methods = r["setting"], int(r["seed"]), r["methods"]
        for name, m in methods.items():
            int(m["episodes"]), float(m["success"])
    except FileNotFoundError:
        raise InputError(f"{path}: no such results file") from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a demo results JSON (expected setting, seed and methods with success and "
                         f"episodes; {type(err).__name__}: {err})") from None
    match = NAME.search(path.name)
    if match and (match["setting"], int(match["seed"])) != (setting, seed):
        raise InputError(f"{path}: the name says {match['setting']} seed {match['seed']} but the file holds "
                         f"{setting} seed {seed}")
    return r


def _merge_seeds(setting: str, items: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """One entry per seed. Files of the same seed are one run asked for more methods: merged into the file with
    the most methods (its LAQ and stage records stay), if they share the evaluation layouts and every method they
    both hold has the same result; anything else is refused with both files named."""
    by_seed: dict[int, list[tuple[Path, dict]]] = {}
    for path, r in items:
        by_seed.setdefault(r["seed"], []).append((path, r))
    merged = []
    for seed, group in sorted(by_seed.items()):
        group = sorted(group, key=lambda it: -len(it[1]["methods"]))
        (base_path, base), rest = group[0], group[1:]
        r = {**base, "methods": dict(base["methods"]),
             "finetune_step_rule": {**(base.get("finetune_step_rule") or {}),
                                    "per_method": dict((base.get("finetune_step_rule") or {}).get("per_method", {}))},
             "_sources": [_source(base_path, base)]}
        for path, other in rest:
            for key in ("eval_seed", "eval_episodes_per_task"):
                if other.get(key) != base.get(key):
                    raise InputError(f"{setting}: seed {seed} appears in {base_path} and {path} with different "
                                     f"{key} ({base.get(key)} vs {other.get(key)}); one seed may appear in several "
                                     f"files only as one run")
            for name, m in other["methods"].items():
                mine = r["methods"].get(name)
                if mine is not None and (_wins(mine), int(mine["episodes"])) != (_wins(m), int(m["episodes"])):
                    raise InputError(f"{setting}: seed {seed} appears in {base_path} and {path} with different "
                                     f"results for {name} ({_wins(mine)}/{mine['episodes']} vs {_wins(m)}/"
                                     f"{m['episodes']}); one seed may appear in several files only as one run")
                r["methods"].setdefault(name, m)
                rule = (other.get("finetune_step_rule") or {}).get("per_method", {}).get(name)
                r["finetune_step_rule"]["per_method"].setdefault(name, rule)
            r["_sources"].append(_source(path, other))
        merged.append((base_path, r))
    return merged


def _source(path: Path, r: dict) -> dict:
    return {"file": str(path), "command": r.get("command"), "machine": r.get("machine"),
            "methods": sorted(r["methods"])}


def _wins(m: dict) -> int:
    return int(m["successes"]) if m.get("successes") is not None else round(float(m["success"]) * int(m["episodes"]))


def _development(method: str, items: list[tuple[Path, dict]]) -> dict:
    """The step rule's development evaluations of one method, pooled over seeds per candidate budget (these
    layouts chose the budget, so they are not the claim; they show how each method's success grows with steps)."""
    dev, chosen = {}, {}
    for _, r in items:
        rule = (r.get("finetune_step_rule") or {}).get("per_method", {}).get(method)
        if not rule:
            continue
        chosen[r["seed"]] = rule.get("chosen_steps")
        for steps, d in rule.get("dev_success", {}).items():
            w, e, seeds = dev.get(steps, (0, 0, []))
            wins = round(float(d["success"]) * int(d["episodes"]))
            dev[steps] = (w + wins, e + int(d["episodes"]), seeds + [r["seed"]])
    if not dev:
        return {}
    return {"dev_success": {st: {"success": w / e, "episodes": e, "seeds": sorted(sd)}
                            for st, (w, e, sd) in sorted(dev.items(), key=lambda kv: int(kv[0]))},
            "chosen_steps": {str(k): v for k, v in sorted(chosen.items())}}


def _paired(a: dict, b: dict) -> dict:
    """a minus b seed by seed (both evaluated on the same layouts within a seed); the interval counts seeds, so it
    carries the seed-to-seed spread the pooled Wilson intervals leave out."""
    return paired_differences(a["per_seed"], b["per_seed"])


ACTION_FREE = ("laq_gain_db", "codes_used_fraction")  # LAQ criteria that need no actions at all


EXACT_UP_TO = 8  # runs: Spearman's p over all n! pairings up to here (40320), else over PERMUTATIONS random ones
PERMUTATIONS = 20000


def _spearman(x, y) -> dict:
    """Spearman's rho with a two-sided permutation p-value: the share of pairings of the runs whose |rho| is at
    least the observed one. scipy's spearmanr p comes from a t approximation that is far off for a few runs (three
    runs in the same order gave p = 0.00; the exact p is 2/6 = 0.33)."""
    from scipy import stats

    rx, ry = stats.rankdata(x), stats.rankdata(y)
    cy = ry - ry.mean()

    def rho(rank_x, axis=-1):  # Pearson's r of the ranks, vectorized over permutations
        cx = rank_x - rank_x.mean(axis=axis, keepdims=True)
        return (cx * cy).sum(axis=axis) / np.sqrt((cx ** 2).sum(axis=axis) * (cy ** 2).sum())

    exact = len(rx) <= EXACT_UP_TO
    res = stats.permutation_test((rx,), rho, permutation_type="pairings", vectorized=True,
                                 n_resamples=np.inf if exact else PERMUTATIONS, alternative="two-sided",
                                 random_state=0)
    return {"rho": float(res.statistic), "p": float(res.pvalue),
            "p_from": "all pairings" if exact else f"{PERMUTATIONS} random pairings (seed 0)"}


def _correlation(pts: list[tuple[float, float]]) -> tuple[dict | None, dict | None]:
    """Pearson (p from the t test) and Spearman (p from permutations, _spearman) over (x, y) points; None for
    both below three points or with a constant side."""
    from scipy import stats

    x, y = zip(*pts) if pts else ((), ())
    if len(pts) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    p = stats.pearsonr(x, y)
    return {"r": float(p[0]), "p": float(p[1])}, _spearman(x, y)


def latent_quality(runs: dict[str, list[tuple[Path, dict]]]) -> dict:
    """Does LAPA's gain follow how well its latent actions explain the robot's motion? One row per run (setting,
    seed): the LAQ probe's R² of the true xyz motion from the latent tokens on the labelled episodes, and LAPA's
    success minus Scratch's and minus its shuffled-latent control's (the same pretraining without the latents'
    information); their Pearson and Spearman correlations over the runs (None below three runs).

    And could a LAQ be chosen without any actions? Each row also holds two criteria of the LAQ alone, from its
    held-out video pairs: how much better it predicts the changed pixels of the next frame than copying the
    current one (`laq_gain_db`, PSNR in dB), and the fraction of its codebook in use; with their Spearman
    correlations against the probe's R² and against LAPA - Scratch."""
    rows = []
    for setting, items in sorted(runs.items()):
        for _, r in sorted(items, key=lambda it: it[1]["seed"]):
            m, laq = r["methods"], r.get("laq") or {}
            r2 = laq.get("probe_r2_xyz")
            if r2 is None or "lapa" not in m:
                continue
            diff = {o: m["lapa"]["success"] - m[o]["success"] if o in m else None for o in ("scratch", "lapa-shuffled")}
            gain = (laq["psnr_changed"] - laq["psnr_changed_copy_baseline"]
                    if {"psnr_changed", "psnr_changed_copy_baseline"} <= laq.keys() else None)
            rows.append({"setting": setting, "seed": r["seed"], "probe_r2_xyz": r2,
                         "lapa_minus_scratch": diff["scratch"], "lapa_minus_shuffled": diff["lapa-shuffled"],
                         "laq_gain_db": gain, "codes_used_fraction": laq.get("codes_used_fraction")})
    out = {"runs": rows}
    for key in ("lapa_minus_scratch", "lapa_minus_shuffled"):
        pts = [(row["probe_r2_xyz"], row[key]) for row in rows if row[key] is not None]
        out[f"pearson_r2_vs_{key}"], out[f"spearman_r2_vs_{key}"] = _correlation(pts)
        out[f"runs_{key}"] = len(pts)
    out["action_free"] = {}
    for crit in ACTION_FREE:
        for key in ("probe_r2_xyz", "lapa_minus_scratch"):
            pts = [(row[crit], row[key]) for row in rows if row[crit] is not None and row[key] is not None]
            out["action_free"][f"spearman_{crit}_vs_{key}"] = _correlation(pts)[1]
            out["action_free"][f"runs_{crit}_vs_{key}"] = len(pts)
    return out


def _pretraining_tasks(r: dict) -> tuple:
    """The tasks of a run's pretraining videos; files written before `lapa demo --other-tasks` existed used the
    preset's (other tasks in cross-task, the evaluated tasks elsewhere)."""
    if "pretraining_tasks" in r:
        return tuple(r["pretraining_tasks"])
    preset = PRESETS.get(r.get("preset"))
    if r.get("setting") == "cross-task":
        return preset.other_tasks if preset else ()
    return tuple(r.get("tasks", ()))


def pool(paths: list[Path]) -> dict:
    runs: dict[str, list[tuple[Path, dict]]] = {}
    for path in paths:
        r = _load(Path(path))
        runs.setdefault(r["setting"], []).append((Path(path), r))
    if not runs:
        raise InputError("no results files to pool (expected results/demo_<setting>_seed<k>.json)")
    settings = {}
    for setting, items in sorted(runs.items()):
        recipes = {(r.get("preset"), tuple(r.get("tasks", ())), _pretraining_tasks(r), r.get("laq_seeds", 1),
                    r.get("simulator_version", 1)) for _, r in items}
        if len(recipes) > 1:
            raise InputError(f"{setting}: files from different recipes (preset, task set, pretraining tasks, LAQ "
                             f"seeds, simulator version) cannot be pooled: {sorted(recipes, key=str)}")
        items = runs[setting] = _merge_seeds(setting, items)
        seeds = [r["seed"] for _, r in items]
        methods = {}
        for name in dict.fromkeys(n for _, r in items for n in r["methods"]):
            have = [(r["seed"], r["methods"][name]) for _, r in items if name in r["methods"]]
            wins, n = sum(_wins(m) for _, m in have), sum(int(m["episodes"]) for _, m in have)
            per_task = {}
            for _, m in have:
                for task, rate in m.get("per_task", {}).items():
                    k = m.get("per_task_successes", {}).get(task)
                    eps = int(m["episodes"]) // max(1, len(m["per_task"]))
                    w, e = per_task.get(task, (0, 0))
                    per_task[task] = (w + (int(k) if k is not None else round(rate * eps)), e + eps)
            methods[name] = {"success": wins / n if n else 0.0, "ci95": list(wilson_interval(wins, n)),
                             "successes": wins, "episodes": n, "seeds": sorted(s for s, _ in have),
                             "per_seed": {str(s): float(m["success"]) for s, m in sorted(have, key=lambda x: x[0])},
                             "per_task": {t: w / e for t, (w, e) in per_task.items() if e},
                             **_development(name, items),
                             **({"note": have[0][1]["note"]} if "note" in have[0][1] else {})}
        claims = {}
        lapa = methods.get("lapa")
        for other in ("scratch", "vpt"):
            o = methods.get(other)
            claims[f"lapa_above_{other}"] = None if not (lapa and o) else lapa["success"] > o["success"]
            claims[f"lapa_interval_above_{other}"] = None if not (lapa and o) else lapa["ci95"][0] > o["ci95"][1]
        paired = {f"{a} - {b}": _paired(methods[a], methods[b]) for a, b in PAIRS if a in methods and b in methods}
        bar = [m for name, m in methods.items() if name in BAR_METHODS]  # an extra method run once does not count
        claims["min_pooled_episodes"] = min(m["episodes"] for m in bar) if bar else 0
        claims["min_seeds"] = min(len(m["seeds"]) for m in bar) if bar else 0
        settings[setting] = {"methods": methods, "claims": claims, "paired": paired, "seeds": sorted(seeds),
                             "eval_seeds": sorted(r.get("eval_seed") for _, r in items),
                             "eval_episodes_per_task": sorted({r.get("eval_episodes_per_task") for _, r in items},
                                                              key=str),
                             "preset": items[0][1].get("preset"), "tasks": items[0][1].get("tasks"),
                             "laq_seeds": items[0][1].get("laq_seeds", 1),
                             "sources": [s for _, r in items for s in r["_sources"]]}
    return {"command": script_command(), "latent_quality": latent_quality(runs),
            "machine": f"{cpu_name()}, {platform.machine()} {os.cpu_count()}-core (pooling only; each source "
                       f"records the machine that ran it)",
            "interval": "95% Wilson score interval of the pooled success rate", "settings": settings}


METHOD_ORDER = ("scratch", "actionvla", "vpt", "lapa", "lapa-shuffled", "vision")
METHOD_LABELS = {**METHOD_NAMES, "lapa": "LAPA"}  # the demo's names; the paper's table says just "LAPA"


def _ordered_settings(claims: dict) -> list[str]:
    """The pooled settings in the paper's column order, any other after them."""
    return [s for s in SETTINGS if s in claims["settings"]] + [s for s in claims["settings"] if s not in SETTINGS]


def against(claims: dict, other: dict, path: Path) -> dict:
    """This recipe minus another claims file's, per setting and method present in both, seed by seed."""
    out = {}
    for setting, s in claims["settings"].items():
        theirs = other.get("settings", {}).get(setting, {}).get("methods", {})
        rows = {m: _paired(v, theirs[m]) for m, v in s["methods"].items() if m in theirs}
        out[setting] = {m: p for m, p in rows.items() if p["seeds"]}
    return {"file": str(path), "settings": out}


def _paired_text(p: dict) -> tuple[str, str]:
    """A `_paired` result in points: ('+2.0, -4.0', '+0.0 [-8.6, +8.6]'): the per-seed differences, and their
    mean with the t interval over seeds (none below two seeds)."""
    ci = "" if p["t95"] is None else f" [{100 * p['t95'][0]:+.1f}, {100 * p['t95'][1]:+.1f}]"
    return ", ".join(f"{100 * d:+.1f}" for d in p["per_seed"].values()), f"{100 * p['mean']:+.1f}{ci}"


def against_table(a: dict) -> str:
    rows = [f"This recipe minus `{a['file']}`, in points, seed by seed; mean [95% t interval over seeds]:", "",
            "| setting | method | per seed | mean |", "|---|---|---|---|"]
    for setting, methods in a["settings"].items():
        for m, p in methods.items():
            per_seed, mean = _paired_text(p)
            rows.append(f"| {setting} | {METHOD_LABELS.get(m, m)} | {per_seed} | {mean} |")
    return "\n".join(rows)


def paper_table(claims: dict) -> str:
    """The pooled results shaped like the paper's table: rows are methods, columns settings; each cell is
    'success% [95% CI] (seeds)'. A method missing from a setting shows '-'."""
    settings = _ordered_settings(claims)
    names = [m for m in METHOD_ORDER if any(m in claims["settings"][s]["methods"] for s in settings)]
    names += dict.fromkeys(m for s in settings for m in claims["settings"][s]["methods"] if m not in names)
    rows = ["| method | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for m in names:
        cells = []
        for s in settings:
            v = claims["settings"][s]["methods"].get(m)
            ref = " ‡" if v is not None and "note" in v else ""
            cells.append("-" if v is None else f"{100 * v['success']:.1f} [{100 * v['ci95'][0]:.1f}, "
                         f"{100 * v['ci95'][1]:.1f}] ({len(v['seeds'])}){ref}")
        rows.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    for key, label in (("lapa_interval_above_scratch", "LAPA's interval above Scratch's"),
                       ("lapa_interval_above_vpt", "LAPA's interval above VPT's")):
        cells = [{True: "yes", False: "no", None: "-"}[claims["settings"][s]["claims"].get(key)] for s in settings]
        rows.append(f"| *{label}* | " + " | ".join(cells) + " |")
    rows.append(f"| *pooled episodes per method (fewest)* | " +
                " | ".join(str(claims["settings"][s]["claims"]["min_pooled_episodes"]) for s in settings) + " |")
    return "\n".join(rows)


def paired_table(claims: dict) -> str:
    """Each pair of PAIRS that some setting holds (LAPA minus Scratch, minus VPT, ...): per setting the per-seed
    differences in points, then their mean with the 95% t interval over seeds, and in how many seeds the first
    method was ahead."""
    settings = _ordered_settings(claims)
    short = {**METHOD_LABELS, "vpt": "VPT", "vision": "vision tower", "lapa-vision": "LAPA on the tower",
             "lapa-vision-frozen": "LAPA on the frozen tower"}
    rows = ["| difference | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for a, b in PAIRS:
        key = f"{a} - {b}"
        if not any(claims["settings"][s].get("paired", {}).get(key) for s in settings):
            continue
        cells = []
        for s in settings:
            p = claims["settings"][s].get("paired", {}).get(key)
            if not p or not p["seeds"]:
                cells.append("-")
                continue
            per_seed, mean = _paired_text(p)
            cells.append(f"{per_seed}; mean {mean}; ahead {p['ahead_in_seeds']}/{len(p['seeds'])}")
        rows.append(f"| {short.get(a, a)} - {short.get(b, b)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def quality_table(q: dict) -> str:
    """Per run: the LAQ probe's R² and the two action-free LAQ criteria next to LAPA's gains, and their
    correlations over the runs."""
    def pts(v):
        return "-" if v is None else f"{100 * v:+.1f}"

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = ["Does LAPA's gain follow the quality of its latent actions? Per run: R² of the true xyz motion from "
            "the latent tokens (LAQ probe on the labelled episodes), two criteria of the LAQ that need no actions "
            "(its PSNR gain over copying the frame on the changed pixels of held-out video pairs, in dB, and the "
            "fraction of its codebook in use), and LAPA's success minus Scratch's and minus its shuffled-latent "
            "control's, in points.", "",
            "| setting | seed | probe R² xyz | LAQ gain dB | codes used | LAPA - Scratch | LAPA - shuffled |",
            "|---|---|---|---|---|---|---|"]
    rows += [f"| {r['setting']} | {r['seed']} | {r['probe_r2_xyz']:.2f} | {num(r.get('laq_gain_db'), '.2f')} | "
             f"{num(r.get('codes_used_fraction'), '.2f')} | {pts(r['lapa_minus_scratch'])} | "
             f"{pts(r['lapa_minus_shuffled'])} |" for r in q["runs"]]
    for key, label in (("lapa_minus_scratch", "LAPA - Scratch"), ("lapa_minus_shuffled", "LAPA - shuffled")):
        p, s = q[f"pearson_r2_vs_{key}"], q[f"spearman_r2_vs_{key}"]
        rows += ["", f"R² vs {label} over {q[f'runs_{key}']} runs: " + (
            "too few runs" if p is None else
            f"Pearson r = {p['r']:.2f} (p = {p['p']:.2f}), Spearman rho = {s['rho']:.2f} (p = {s['p']:.2f})")]
    for crit, label in (("laq_gain_db", "LAQ gain"), ("codes_used_fraction", "codes used")):
        cells = []
        for key, versus in (("probe_r2_xyz", "probe R²"), ("lapa_minus_scratch", "LAPA - Scratch")):
            s, n = q["action_free"][f"spearman_{crit}_vs_{key}"], q["action_free"][f"runs_{crit}_vs_{key}"]
            cells.append(f"vs {versus} " + ("too few runs" if s is None else
                                              f"rho = {s['rho']:.2f} (p = {s['p']:.2f}, {n} runs)"))
        rows += ["", f"{label} (no actions needed), Spearman: " + "; ".join(cells)]
    return "\n".join(rows)

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", type=Path, help="results files (default: results/demo_*_seed*.json)")
    parser.add_argument("--out", type=Path, default=Path("results/claims.json"))
    parser.add_argument("--against", type=Path, default=None,
                        help="another claims.json (e.g. the recipe before a change): seed-by-seed differences")
    args = parser.parse_args(argv)
    paths = args.inputs or sorted(p for p in Path("results").glob("demo_*_seed*.json") if NAME.search(p.name))
    try:
        claims = pool(paths)
        if args.against is not None:
            try:
                other = json.loads(args.against.read_text())
            except (OSError, ValueError) as err:
                raise InputError(f"--against {args.against}: expected a claims.json written by this script "
                                 f"({type(err).__name__}: {err})") from None
            claims["against"] = against(claims, other, args.against)
    except InputError as err:
        print(f"pool_claims: error: {err}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, claims)
    table, paired = paper_table(claims), paired_table(claims)
    args.out.with_suffix(".md").write_text(
        f"<!-- written by {claims['command']} from {args.out.name}; do not edit -->\n"
        "Success rate (%) pooled over training seeds, [95% Wilson interval], (seeds). "
        "‡ same-embodiment reference (robot videos with true actions, not the hand videos).\n\n" + table + "\n\n"
        "Seed by seed (each seed's methods share its labelled set and evaluation layouts): one method's success "
        "minus another's, in points, per seed; their mean with its 95% Student-t interval over seeds (it counts "
        "seeds, not episodes, so it carries the seed-to-seed spread the pooled interval leaves out); and in how "
        "many seeds the first was ahead.\n\n" + paired + "\n\n" + quality_table(claims["latent_quality"]) + "\n"
        + (f"\n{against_table(claims['against'])}\n" if "against" in claims else ""))
    for setting, s in claims["settings"].items():
        row = ", ".join(f"{m} {100 * v['success']:.1f}% [{100 * v['ci95'][0]:.1f}, {100 * v['ci95'][1]:.1f}] "
                        f"n={v['episodes']}" for m, v in s["methods"].items())
        print(f"{setting} (seeds {s['seeds']}): {row}; claims {s['claims']}")
    print(f"\n{table}\n\n{paired}\n\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
