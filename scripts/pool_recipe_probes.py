"""Pool recipe probes (`scripts/recipe_probe.py` results) over training seeds: is a variant better than the first?

    python scripts/pool_recipe_probes.py --inputs results/recipe_probe_round3_*_seed*.json \\
        --out results/recipe_probe_round3_pooled.json

Per setting, variant and method: every finetuning candidate's development successes summed over the seeds (Wilson
95% interval), the same summed over all candidates, and in each seed the budget the step rule chose and its rate.
Then each method of each variant against each method of the first variant (LAPA of `tok9` against LAPA and Scratch
of `base`, ...): the difference at each seed's chosen budget, seed by seed, with its mean and 95% Student-t
interval over seeds, and the difference of the all-candidates rates. All of it is on development layouts: it
chooses a recipe, it is not a claim. A seed of a setting may appear once; a variant name must mean the same
overrides in every file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.errors import InputError  # noqa: E402
from lapa_learning.eval.stats import paired_differences, wilson_interval  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.machine import machine  # noqa: E402


def load(path: Path) -> dict:
    try:
        r = json.loads(path.read_text())
        r["seed"] = int(r["seed"])
        for name, v in r["variants"].items():
            for method, m in v["methods"].items():
                for steps, d in m["dev_success"].items():
                    int(steps), float(d["success"])
                    if int(d["episodes"]) < 1:
                        raise ValueError(f"{name}/{method} at {steps} steps has {d['episodes']} episodes")
                m["dev_success"][str(m["chosen_steps"])]
        str(r["setting"])
    except FileNotFoundError:
        raise InputError(f"{path}: no such recipe probe results file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not a recipe_probe.py results JSON (expected setting, seed and variants with "
                         f"each method's dev_success per budget; {type(err).__name__}: {err})") from None
    return r


def _rate(successes: int, episodes: int) -> dict:
    return {"successes": successes, "episodes": episodes, "success": successes / episodes,
            "ci95": list(wilson_interval(successes, episodes))}


def pool_method(runs: dict[int, dict]) -> dict:
    """runs: seed -> one method's record in one probe ({"chosen_steps", "dev_success"})."""
    per_candidate: dict[str, list[int]] = {}
    chosen, per_seed = {}, {}
    for seed, m in sorted(runs.items()):
        mine = per_seed[str(seed)] = [0, 0]
        for steps, d in m["dev_success"].items():
            wins, eps = round(float(d["success"]) * int(d["episodes"])), int(d["episodes"])
            for acc in (per_candidate.setdefault(steps, [0, 0]), mine):
                acc[0], acc[1] = acc[0] + wins, acc[1] + eps
        steps = str(m["chosen_steps"])
        chosen[str(seed)] = {"steps": m["chosen_steps"], "success": float(m["dev_success"][steps]["success"])}
    total = [sum(v[0] for v in per_candidate.values()), sum(v[1] for v in per_candidate.values())]
    return {"seeds": sorted(runs), "per_candidate": {k: _rate(*v) for k, v in sorted(per_candidate.items(),
                                                                                    key=lambda kv: int(kv[0]))},
            "all_candidates": _rate(*total), "all_candidates_per_seed": per_seed, "chosen": chosen,
            "chosen_mean": sum(c["success"] for c in chosen.values()) / len(chosen)}


def compare(a: dict, b: dict) -> dict:
    """a minus b over the seeds both have: at each seed's chosen budget (seed by seed, mean and t interval over
    seeds), and pooled over all candidates."""
    p = paired_differences(*({s: c["success"] for s, c in m["chosen"].items()} for m in (a, b)))
    seeds = list(p["per_seed"])
    return {"seeds": p["seeds"], "chosen_per_seed": p["per_seed"], "chosen_mean": p["mean"], "chosen_t95": p["t95"],
            "ahead_in_seeds": p["ahead_in_seeds"],
            "all_candidates": _pooled(a, seeds) - _pooled(b, seeds) if seeds else None}


def _pooled(m: dict, seeds: list[str]) -> float:
    wins, eps = (sum(m["all_candidates_per_seed"][s][i] for s in seeds) for i in (0, 1))
    return wins / eps


def pool(paths: list[Path]) -> dict:
    by_setting: dict[str, dict[int, tuple[Path, dict]]] = {}
    for path in paths:
        r = load(path)
        seeds = by_setting.setdefault(r["setting"], {})
        if r["seed"] in seeds:
            raise InputError(f"{r['setting']} seed {r['seed']} appears in {seeds[r['seed']][0]} and {path}; "
                             f"pool one probe per seed")
        seeds[r["seed"]] = (path, r)
    settings = {}
    for setting, seeds in sorted(by_setting.items()):
        overrides: dict[str, tuple[Path, dict]] = {}  # variant -> (first file, overrides), in first-seen order
        records: dict[tuple[str, str], dict[int, dict]] = {}
        laq_r2: dict[str, dict[str, float]] = {}
        for seed, (path, r) in sorted(seeds.items()):
            for name, v in r["variants"].items():
                if name in overrides and overrides[name][1] != v.get("overrides"):
                    raise InputError(f"{setting}: variant {name!r} is {overrides[name][1]} in {overrides[name][0]} "
                                     f"but {v.get('overrides')} in {path}; one name must mean one recipe")
                overrides.setdefault(name, (path, v.get("overrides")))
                for method, m in v["methods"].items():
                    records.setdefault((name, method), {})[seed] = m
                r2 = (v.get("laq_probe") or {}).get("probe_r2_xyz")
                if r2 is not None:
                    laq_r2.setdefault(name, {})[str(seed)] = r2
        pooled = {key: pool_method(runs) for key, runs in records.items()}
        variants = {name: {"overrides": overrides[name][1], "laq_probe_r2_xyz": laq_r2.get(name, {}),
                           "methods": {m: pooled[(n, m)] for (n, m) in pooled if n == name}} for name in overrides}
        first = next(iter(overrides))
        comparisons = {}
        for n, m in pooled:  # every method of every later variant against each method of the first variant;
            for f, b in pooled:  # within the first variant, its LAPA against its yardsticks (Scratch, VPT)
                if f == first and (n != first or (m == "lapa" and b != "lapa")):
                    c = compare(pooled[(n, m)], pooled[(f, b)])
                    if c["seeds"]:  # no seed in common: nothing to compare
                        comparisons[f"{n} {m} - {first} {b}"] = c
        settings[setting] = {"seeds": sorted(seeds), "first_variant": first, "variants": variants,
                             "comparisons": comparisons,
                             "sources": [{"file": str(p), "seed": s, "command": r.get("command"),
                                          "machine": r.get("machine")} for s, (p, r) in sorted(seeds.items())]}
    return {"command": script_command(), "machine": machine(),
            "note": "development layouts only (base seed = training seed): this chooses a recipe, it is no claim",
            "settings": settings}


def table(result: dict) -> str:
    lines = []
    for setting, s in result["settings"].items():
        steps = sorted({k for v in s["variants"].values() for m in v["methods"].values() for k in m["per_candidate"]},
                       key=int)
        lines += [f"{setting}, seeds {s['seeds']} (development layouts)", "",
                  "| variant | method | " + " | ".join(steps) + " | all candidates | chosen per seed | "
                  "LAQ R² per seed |", "|---" * (len(steps) + 5) + "|"]
        for name, v in s["variants"].items():
            for method, m in v["methods"].items():
                cells = [f"{100 * m['per_candidate'][k]['success']:.1f}" if k in m["per_candidate"] else "-"
                         for k in steps]
                chosen = ", ".join(f"{c['steps']}: {100 * c['success']:.0f}" for c in m["chosen"].values())
                r2 = ", ".join(f"{x:.2f}" for x in v["laq_probe_r2_xyz"].values()) if method == "lapa" else "-"
                a = m["all_candidates"]
                lines.append(f"| {name} | {method} | " + " | ".join(cells) + f" | {100 * a['success']:.1f} "
                             f"[{100 * a['ci95'][0]:.1f}, {100 * a['ci95'][1]:.1f}] | {chosen} | {r2} |")
        lines += ["", "| comparison | chosen budget, per seed | mean [t95] | all candidates |", "|---|---|---|---|"]
        for key, c in s["comparisons"].items():
            per = ", ".join(f"{100 * d:+.1f}" for d in c["chosen_per_seed"].values())
            t = "" if c["chosen_t95"] is None else f" [{100 * c['chosen_t95'][0]:+.1f}, {100 * c['chosen_t95'][1]:+.1f}]"
            lines.append(f"| {key} | {per} | {100 * c['chosen_mean']:+.1f}{t} | {100 * c['all_candidates']:+.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", type=Path, required=True, help="recipe_probe.py results files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = pool(args.inputs)
    except InputError as err:
        print(f"pool_recipe_probes: error: {err}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, result)
    print(table(result) + f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
