"""Choose a change of the demo's recipe on development layouts, before any run that reports results.

    python scripts/recipe_probe.py --out /root/lapa_runs/recipe_probe --seed 0 \\
        --variant base --variant laq2400:laq_steps=2400 --variant pretrain3000:pretrain_steps=3000

Each variant is the default preset with some fields replaced (`NAME:field=value,field=value`; `base` = no change;
`laq.model.KEY=VALUE` items are LAQ config overrides, e.g. `cb16:laq.model.codebook_size=16`).
For each variant the demo's own stages (`build_plan`, so the very recipe `lapa demo` runs) are run up to the
development evaluations of every finetuning candidate, never the evaluation layouts; stages whose arguments do
not change between variants (the data, and e.g. the LAQ when only pretraining changes) run once and are copied.
The first variant also runs `--base-methods` (default: scratch) as the yardstick. Stage records and logs are in
<out>/stages and <out>/logs, so an interrupted probe resumes. Writes results/recipe_probe_<setting>_seed<k>.json:
per variant and method the development success of each candidate and the one the step rule picks, and what the
stages measured (LAQ probe R2 per action dimension, codes used, latent-token accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lapa_learning.cli_args import script_command  # noqa: E402
from lapa_learning.data.latent_labels import labels_path  # noqa: E402
from lapa_learning.demo.plan import (DEV_SEED_OFFSET, PRESETS, VIDEO_SET, Plan, Preset, Stage, build_plan,  # noqa: E402
                                     laq_dir, parse_methods)
from lapa_learning.errors import ConfigError  # noqa: E402
from lapa_learning.demo.report import read_optional_json, video_set_record  # noqa: E402
from lapa_learning.demo.runner import execute, marker  # noqa: E402
from lapa_learning.io import atomic_write_json  # noqa: E402
from lapa_learning.machine import machine  # noqa: E402


def parse_variant(text: str, preset) -> tuple[str, dict]:
    """'NAME:field=value,...' -> (NAME, {field: value}) with values of the field's own type. An item
    'laq.model.KEY=VALUE' or 'laq.KEY=VALUE' (a train key) is a `lapa laq train --set` override instead: it is
    appended to the preset's laq_extra (e.g. laq.model.codebook_size=16, laq.model.num_tokens=9)."""
    from lapa_learning.laq.configuration_laq import apply_overrides, load_train_config, parse_overrides

    name, _, assignments = text.partition(":")
    fields = {f.name: f for f in dataclasses.fields(preset)}
    overrides, laq_sets = {}, []
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if key.startswith("laq.") and sep:
            laq_sets.append(item[len("laq."):])
            continue
        current = getattr(preset, key, None) if key in fields else None
        if not sep or key not in fields or not isinstance(current, (int, float)) or isinstance(current, bool):
            numeric = [k for k, v in fields.items() if isinstance(getattr(preset, k), (int, float))]
            raise SystemExit(f"recipe_probe: error: --variant {text!r}: expected NAME:field=value with a numeric "
                             f"Preset field ({', '.join(numeric)}) or laq.model.KEY=VALUE / laq.KEY=VALUE (an "
                             f"LAQ config override), got {item!r}")
        overrides[key] = type(current)(value)
    if not name or "/" in name or "." in name:
        raise SystemExit(f"recipe_probe: error: --variant {text!r}: the name must be non-empty, without '/' or '.'")
    if laq_sets:
        try:  # a wrong key or value fails here, before any stage runs
            apply_overrides(load_train_config(preset.laq_config), parse_overrides(laq_sets))
        except ConfigError as err:
            raise SystemExit(f"recipe_probe: error: --variant {text!r}: {err}") from None
        overrides["laq_extra"] = (*preset.laq_extra, *(a for item in laq_sets for a in ("--set", item)))
    return name, overrides


def stage_output(stage: Stage) -> Path | None:
    """What a stage writes: its --out, or for `laq label` the labels file inside its --data."""
    args = stage.args
    if args[:2] == ["laq", "label"]:
        return labels_path(args[args.index("--data") + 1])
    return Path(args[args.index("--out") + 1]) if "--out" in args else None


def copy_output(src: Path, dst: Path) -> None:
    if dst.is_dir():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def merged_plan(root: Path, variants: list[tuple[str, dict]], setting: str, seed: int, methods: list[str],
                base_methods: list[str], base_preset: Preset) -> tuple[Plan, dict[str, Plan]]:
    """One plan of every variant's stages up to the development evaluations, stages named '<variant>.<stage>';
    a stage whose arguments (with the variant's directory written as the first one's) and dependencies equal an
    earlier variant's becomes an in-process copy of that stage's output."""
    merged, plans = Plan(root), {}
    seen, alias = {}, {}  # seen: (normalised args, canonical deps) -> merged stage; alias: merged -> canonical
    for k, (name, overrides) in enumerate(variants):
        preset = dataclasses.replace(base_preset, **overrides)
        wanted = methods + (base_methods if k == 0 else [])
        plan = plans[name] = build_plan(root / name, preset, setting, seed, "auto", methods=wanted)
        # up to each method's step selection (it writes selection.json from the development evaluations), never
        # the evaluation on fresh layouts
        plan.keep([s for s, st in plan.stages.items() if s.startswith("laq-explain-") or st.args[:1] == ["select-steps"]])
        here = str(root / name)
        for stage in plan.stages.values():  # in dependency order
            own, deps = f"{name}.{stage.name}", tuple(f"{name}.{d}" for d in stage.deps)
            key = (tuple(a.replace(here, "<variant>") for a in stage.args), tuple(alias[d] for d in deps))
            if key in seen and stage.call is None and stage_output(stage) is not None:
                source = merged.stages[seen[key]]
                src, dst = stage_output(source), stage_output(stage)
                merged.add(Stage(own, ["copy", str(src), str(dst)], deps=(source.name, *deps),
                                 call=lambda src=src, dst=dst: copy_output(src, dst)))
                alias[own] = seen[key]
            else:
                merged.add(dataclasses.replace(stage, name=own, deps=deps))
                seen.setdefault(key, own)
                alias[own] = own
    return merged, plans


def variant_report(plan: Plan, preset: Preset, overrides: dict, setting: str) -> dict:
    record = video_set_record(plan.out / VIDEO_SET[setting], laq_dir(plan.out / VIDEO_SET[setting], preset))
    methods = {}
    for method, final in plan.finals.items():
        selection = read_optional_json(final / "selection.json") or {}
        methods[method] = {"chosen_steps": selection.get("chosen_steps"), "dev_success": selection.get("dev_success")}
    return {"overrides": overrides, "methods": methods,
            "laq_probe": {"probe_r2_xyz": record["probe_r2_xyz"],
                          "r2_per_action_dim": record["probe_r2_per_action_dim"],
                          "codes_with_at_least_5pct_of_pairs_per_token":
                              record["codes_with_at_least_5pct_of_pairs_per_token"]},
            "latent_pretraining": {k: record[k] for k in ("latent_token_accuracy", "majority_baseline_accuracy")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="working directory (resumable)")
    parser.add_argument("--setting", default="in-domain", choices=sorted(VIDEO_SET))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", required=True, help="NAME[:field=value,...], repeatable")
    parser.add_argument("--methods", default="lapa", help="methods run in every variant (default: lapa)")
    parser.add_argument("--base-methods", default="scratch", help="methods run in the first variant only")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="the recipe the variants change (default: %(default)s; quick: a smoke run)")
    parser.add_argument("--dev-episodes", type=int, default=None,
                        help="development episodes per task and candidate, for every variant (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    base = PRESETS[args.preset]
    if args.dev_episodes is not None:
        if args.dev_episodes < 1:
            raise SystemExit(f"recipe_probe: error: --dev-episodes must be at least 1, got {args.dev_episodes}")
        base = dataclasses.replace(base, dev_episodes=args.dev_episodes)
    variants = [parse_variant(v, base) for v in args.variant]
    if len({n for n, _ in variants}) != len(variants):
        raise SystemExit("recipe_probe: error: --variant names must differ")
    try:
        methods = parse_methods(args.methods)
        base_methods = parse_methods(args.base_methods) if args.base_methods.strip() else []
    except ConfigError as err:
        raise SystemExit(f"recipe_probe: error: {err}") from None
    started = time.time()
    merged, plans = merged_plan(args.out.resolve(), variants, args.setting, args.seed, methods, base_methods, base)
    print(f"recipe probe: {len(variants)} variants, {len(merged.stages)} stages in {args.out}", flush=True)
    failed = execute(merged, jobs=args.jobs)
    if failed:
        print(f"recipe_probe: stage {failed} failed; see {merged.out / 'logs' / (failed + '.log')}", file=sys.stderr)
        return 1
    report = {n: variant_report(plans[n], dataclasses.replace(base, **o), o, args.setting) for n, o in variants}
    stage_seconds = [(read_optional_json(marker(merged, stage)) or {}).get("seconds", 0.0)
                     for stage in merged.stages.values()]
    result = {"command": script_command(), "machine": machine(), "setting": args.setting,
              "stage_minutes_total": sum(stage_seconds) / 60,  # CPU-bound stages, `--jobs` at a time
              "seed": args.seed, "dev_seed": args.seed + DEV_SEED_OFFSET,
              "preset": args.preset, "dev_episodes_per_task": base.dev_episodes,
              "finetune_step_candidates": list(base.finetune_steps),
              "minutes": (time.time() - started) / 60,  # this invocation (stages finished before are reused)
              "variants": report}
    path = args.results or ROOT / f"results/recipe_probe_{args.setting}_seed{args.seed}.json"
    atomic_write_json(path, result)
    print("\n| variant | method | " + " | ".join(map(str, base.finetune_steps)) + " | chosen | LAQ R2 xyz |")
    for name, rep in report.items():
        for method, row in rep["methods"].items():
            rates = row["dev_success"] or {}
            print(f"| {name} | {method} | " + " | ".join(f"{100 * v['success']:.0f}%" for v in rates.values())
                  + f" | {row['chosen_steps']} | {rep['laq_probe'].get('probe_r2_xyz')} |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
