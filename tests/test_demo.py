"""`lapa demo`: the plan of every setting and method, the step rule, the stage scheduler, pooling seeds into
claims, and the whole pipeline end to end with the quick preset."""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lapa_learning.demo import (DEV_SEED_OFFSET, EVAL_SEED_OFFSET, METHODS, PRESETS, Plan, Stage, build_plan,
                                execute, parse_methods, select_steps)
from lapa_learning.demo.runner import _attempt, _started
from lapa_learning.errors import ConfigError
from lapa_learning.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def _arg(stage, flag):
    return stage.args[stage.args.index(flag) + 1]


def test_plan_wires_every_method_and_the_step_rule():
    preset = PRESETS["default"]
    plan = build_plan(Path("/tmp/x"), preset, "in-domain", seed=0, device="cpu")
    st = plan.stages
    assert {m for m in METHODS} == set(plan.evals)
    # the small labelled set is trained on whole; validation comes from separate episodes
    ft = st["finetune-scratch-steps400"]
    assert _arg(ft, "--data") == "/tmp/x/data/finetune" and _arg(ft, "--val-data") == "/tmp/x/data/val"
    assert "--init" not in ft.args and "--val-fraction" not in ft.args
    assert _arg(st["data-val"], "--seed") != _arg(st["data-finetune"], "--seed")
    assert _arg(st["finetune-lapa-robot-steps200"], "--init") == "/tmp/x/robot/pretrain_lapa"
    assert st["finetune-lapa-robot-steps200"].deps == ("data-finetune", "data-val", "pretrain-lapa-robot")
    # VPT: the IDM learns from the labelled set, labels the videos, the VLA pretrains on the pseudo-actions
    assert _arg(st["vpt-train"], "--data") == "/tmp/x/data/finetune"
    assert st["vpt-label-robot"].deps == ("vpt-train", "data-videos-robot")
    assert _arg(st["pretrain-vpt-robot"], "--targets") == "pseudo-actions"
    assert "--shuffle-labels" in st["pretrain-lapa-shuffled-robot"].args
    assert st["pretrain-vision-robot"].args[:2] == ["vla", "pretrain-vision"]
    # every candidate budget is evaluated on development layouts, only the chosen one on fresh layouts
    for steps in preset.finetune_steps:
        dev = st[f"dev-eval-vpt-robot-steps{steps}"]
        assert _arg(dev, "--seed") == str(DEV_SEED_OFFSET) and _arg(dev, "--episodes-per-task") == "20"
    assert st["finetune-vpt-robot"].call is not None
    ev = st["eval-vpt-robot"]
    assert _arg(ev, "--seed") == str(EVAL_SEED_OFFSET) and ev.args[1] == "/tmp/x/robot/finetune_vpt"
    fixed = build_plan(Path("/tmp/x"), preset, "in-domain", seed=0, device="cpu", finetune_steps=300,
                       methods=["scratch"])
    assert _arg(fixed.stages["finetune-scratch"], "--max-steps") == "300"
    # a run replaces its directory whole: no selection.json of an earlier step choice survives in it
    assert fixed.stages["finetune-scratch"].fresh and fixed.stages["finetune-scratch"].outputs == (
        Path("/tmp/x/finetune_scratch"),)
    assert not any(n.startswith(("dev-eval", "laq", "pretrain")) for n in fixed.stages)
    assert not any("lapa-vision" in n for n in plan.stages)  # asked for by name only


def test_lapa_vision_pretrains_latents_on_the_vision_controls_tower():
    plan = build_plan(Path("/tmp/x"), PRESETS["default"], "cross-embodiment", seed=0, device="cpu",
                      methods=parse_methods("lapa-vision,vision"))
    pre = plan.stages["pretrain-lapa-vision-hand"]
    assert pre.args[:2] == ["vla", "pretrain"] and _arg(pre, "--targets") == "latents"
    assert _arg(pre, "--init") == "/tmp/x/hand/pretrain_vision" and _arg(pre, "--data") == "/tmp/x/hand/videos"
    assert set(pre.deps) == {"laq-label-hand", "pretrain-vision-hand"}
    assert _arg(plan.stages["finetune-lapa-vision-hand-steps400"], "--init") == "/tmp/x/hand/pretrain_lapa-vision"
    assert set(plan.evals) == {"lapa-vision", "vision"}
    with pytest.raises(ConfigError, match="lapa-vision"):
        parse_methods("lapa-visoin")  # the message lists every known method


def test_lapa_vision_frozen_freezes_the_tower_in_latent_pretraining_only():
    plan = build_plan(Path("/tmp/x"), PRESETS["default"], "cross-embodiment", seed=0, device="cpu",
                      methods=parse_methods("lapa-vision-frozen,lapa-vision"))
    frozen, free = plan.stages["pretrain-lapa-vision-frozen-hand"], plan.stages["pretrain-lapa-vision-hand"]
    assert "--freeze-vision" in frozen.args and "--freeze-vision" not in free.args
    # otherwise the same stage: same labels, same tower to start from, same steps and seed
    assert [a for a in frozen.args if a != "--freeze-vision"] == [
        a.replace("pretrain_lapa-vision", "pretrain_lapa-vision-frozen") for a in free.args]
    assert frozen.deps == free.deps
    for steps in PRESETS["default"].finetune_steps:  # finetuning trains the tower again, as for every method
        ft = plan.stages[f"finetune-lapa-vision-frozen-hand-steps{steps}"]
        assert "--train-vision" in ft.args and _arg(ft, "--init") == "/tmp/x/hand/pretrain_lapa-vision-frozen"
        assert "--train-vision" not in plan.stages[f"finetune-lapa-vision-hand-steps{steps}"].args


def test_settings_choose_the_pretraining_videos():
    preset = PRESETS["default"]
    cross = build_plan(Path("/tmp/x"), preset, "cross-task", seed=0, device="cpu")
    tasks = _arg(cross.stages["data-videos-other-tasks"], "--tasks")
    assert not set(tasks.split(",")) & set(preset.tasks)
    assert _arg(cross.stages["pretrain-actionvla-other-tasks"], "--data") == "/tmp/x/other-tasks/videos"
    view = build_plan(Path("/tmp/x"), preset, "cross-view", seed=0, device="cpu")
    assert _arg(view.stages["data-videos-other-view"], "--camera") == "front_left"
    hand = build_plan(Path("/tmp/x"), preset, "cross-embodiment", seed=0, device="cpu")
    videos = hand.stages["data-videos-hand"]
    assert _arg(videos, "--embodiment") == "hand" and "--action-free" in videos.args
    assert _arg(videos, "--tasks") == ",".join(preset.tasks)
    for method in ("lapa", "vpt", "lapa-shuffled", "vision"):
        assert str(hand.evals[method]).startswith("/tmp/x/hand/")
    # ActionVLA stays the same-embodiment reference: robot videos with true actions, the stages of in-domain
    assert _arg(hand.stages["pretrain-actionvla-robot"], "--data") == "/tmp/x/robot/videos"
    assert not any(n.endswith("-robot") and n.startswith(("laq", "pretrain-lapa")) for n in hand.stages)
    indomain = build_plan(Path("/tmp/x"), preset, "in-domain", seed=0, device="cpu")
    shared = [n for n in hand.stages if n in indomain.stages]
    assert {"data-finetune", "data-val", "vpt-train", "eval-scratch", "eval-actionvla-robot"} <= set(shared)
    for name in shared:  # the same work, so a second setting in the same --out reuses it
        assert hand.stages[name].args == indomain.stages[name].args


def test_tasks_and_other_tasks_replace_the_presets_task_sets():
    from lapa_learning.demo import with_tasks

    preset = with_tasks(PRESETS["default"], "cross-task", "reach-v3, door-open-v3", "drawer-close-v3")
    assert preset.tasks == ("reach-v3", "door-open-v3") and preset.other_tasks == ("drawer-close-v3",)
    plan = build_plan(Path("/tmp/x"), preset, "cross-task", seed=0, device="cpu")
    assert _arg(plan.stages["data-videos-other-tasks"], "--tasks") == "drawer-close-v3"
    for name in ("data-finetune", "data-val", "eval-lapa-other-tasks", "eval-scratch"):
        assert _arg(plan.stages[name], "--tasks") == "reach-v3,door-open-v3"
    same = with_tasks(PRESETS["default"], "in-domain", "reach-v3", None)
    assert same.other_tasks == PRESETS["default"].other_tasks
    hand = build_plan(Path("/tmp/x"), same, "cross-embodiment", seed=0, device="cpu")
    assert _arg(hand.stages["data-videos-hand"], "--tasks") == "reach-v3"
    assert with_tasks(PRESETS["quick"], "cross-task", None, None) == PRESETS["quick"]


@pytest.mark.parametrize("setting, tasks, other, message", [
    ("in-domain", "reach-v3,bogus-v3", None, "--tasks: unknown Meta-World task(s) ['bogus-v3']"),
    ("in-domain", "reach-v3,reach-v3", None, "--tasks: task(s) ['reach-v3'] given more than once"),
    ("in-domain", " , ", None, "--tasks: unknown Meta-World task(s) (none given)"),
    ("cross-task", None, "drawer-open-v3,nope", "--other-tasks: unknown Meta-World task(s) ['nope']"),
    ("in-domain", None, "drawer-open-v3", "--other-tasks: only the cross-task setting"),
    ("cross-task", "drawer-open-v3,reach-v3", None, "--other-tasks: ['drawer-open-v3'] also in --tasks"),
    ("cross-task", "reach-v3", "reach-v3", "--other-tasks: ['reach-v3'] also in --tasks"),
])
def test_bad_task_sets_are_refused_with_the_flag_named(setting, tasks, other, message):
    from lapa_learning.demo import with_tasks

    with pytest.raises(ConfigError) as err:
        with_tasks(PRESETS["default"], setting, tasks, other)
    assert message in str(err.value)


def test_laq_can_also_train_on_the_labelled_set():
    preset = dataclasses.replace(PRESETS["default"], laq_labelled_repeat=10)
    plan = build_plan(Path("/tmp/x"), preset, "cross-embodiment", seed=0, device="cpu")
    laq = plan.stages["laq-train-hand"]
    assert _arg(laq, "--data") == "/tmp/x/hand/videos" and _arg(laq, "--extra-data") == "/tmp/x/data/finetune"
    assert _arg(laq, "--extra-repeat") == "10" and "data-finetune" in laq.deps
    selection = build_plan(Path("/tmp/x"), dataclasses.replace(preset, laq_seeds=2), "cross-embodiment", 0, "cpu")
    assert _arg(selection.stages["laq-train-hand-seed1"], "--extra-data") == "/tmp/x/data/finetune"
    default = build_plan(Path("/tmp/x"), PRESETS["default"], "cross-embodiment", seed=0, device="cpu")
    assert "--extra-data" not in default.stages["laq-train-hand"].args  # the recipe: videos only


def test_laq_selection_trains_candidates_and_labels_with_the_chosen_one():
    one = build_plan(Path("/tmp/x"), PRESETS["default"], "cross-view", seed=1, device="cpu")
    train = one.stages["laq-train-other-view"]
    assert train.args[:2] == ["laq", "train"] and _arg(train, "--out") == "/tmp/x/other-view/laq"
    assert "--set" not in train.args  # one LAQ, its config seed: the runs before LAQ selection, unchanged
    preset = dataclasses.replace(PRESETS["default"], laq_seeds=3)
    sel = build_plan(Path("/tmp/x"), preset, "cross-view", seed=1, device="cpu")
    st = sel.stages
    for n in (3, 4, 5):  # seed * K + i: no two training seeds share a candidate
        cand = st[f"laq-train-other-view-seed{n}"]
        assert _arg(cand, "--set") == f"seed={n}" and _arg(cand, "--out") == f"/tmp/x/other-view/laq_candidates/seed{n}"
        probe = st[f"laq-explain-other-view-seed{n}"]
        assert _arg(probe, "--data") == "/tmp/x/data/finetune" and cand.name in probe.deps  # the labelled set
    chosen = st["laq-train-other-view"]
    assert chosen.call is not None and chosen.args[:2] == ["select-laq", "/tmp/x/other-view/laq_selected"]
    assert set(chosen.deps) == {f"laq-explain-other-view-seed{n}" for n in (3, 4, 5)}
    # everything downstream reads the chosen copy; the paths differ from one LAQ's, so neither mode's outputs are
    # ever reused by the other
    assert _arg(st["laq-label-other-view"], "--checkpoint") == "/tmp/x/other-view/laq_selected"
    assert _arg(st["laq-explain-other-view"], "--checkpoint") == "/tmp/x/other-view/laq_selected"
    assert st["laq-label-other-view"].args != one.stages["laq-label-other-view"].args
    assert st["pretrain-lapa-other-view"].args == one.stages["pretrain-lapa-other-view"].args
    assert st["eval-scratch"].args == one.stages["eval-scratch"].args


def test_select_laq_copies_the_candidate_with_the_best_probe_r2(tmp_path):
    from lapa_learning.demo.plan import select_laq

    candidates = []
    for n, r2 in ((6, 0.1), (7, 0.4), (8, 0.4)):
        run, explained = tmp_path / f"seed{n}", tmp_path / f"explain{n}"
        (run / "tb").mkdir(parents=True)
        (run / "latest.json").write_text(json.dumps({"checkpoint": "step_0000800", "seed": n}))
        explained.mkdir()
        (explained / "laq_explain.json").write_text(json.dumps({"probe": {"probe_r2_xyz": r2}}))
        candidates.append((n, run, explained))
    chosen = tmp_path / "laq_selected"
    chosen.mkdir()
    (chosen / "stale").write_text("from an earlier selection")
    select_laq(chosen, candidates)
    assert json.loads((chosen / "latest.json").read_text())["seed"] == 7  # the lowest seed of the tie at 0.4
    assert not (chosen / "tb").exists() and not (chosen / "stale").exists()
    record = json.loads((chosen / "selection.json").read_text())
    assert record["chosen_seed"] == 7 and record["probe_r2_xyz"] == {"6": 0.1, "7": 0.4, "8": 0.4}
    (tmp_path / "explain8" / "laq_explain.json").write_text(json.dumps({"probe": {}}))  # explained without actions
    with pytest.raises(ConfigError, match=r"explain8/laq_explain.json: expected .*probe_r2_xyz"):
        select_laq(chosen, candidates)


def test_step_rule_picks_the_best_development_success_and_fewest_steps_on_ties(tmp_path):
    dev = []
    for steps, wins in ((200, 3), (400, 5), (800, 5)):
        run, ev = tmp_path / f"ft{steps}", tmp_path / f"dev{steps}"
        (run / "checkpoint").mkdir(parents=True)
        (run / "checkpoint" / "weights").write_text(str(steps))
        ev.mkdir()
        (ev / "results.json").write_text(json.dumps({"overall": {"success": wins / 10, "episodes": 10}}))
        dev.append((steps, run, ev))
    select_steps(tmp_path / "final", dev)
    assert (tmp_path / "final/checkpoint/weights").read_text() == "400"
    chosen = json.loads((tmp_path / "final/selection.json").read_text())
    assert chosen["chosen_steps"] == 400 and chosen["dev_success"]["800"]["success"] == 0.5


def test_a_failing_stage_stops_its_dependants_and_siblings(tmp_path):
    plan = Plan(tmp_path)
    plan.add(Stage("slow", ["data", "generate", "--out", str(tmp_path / "d"), "--tasks", "push-v3",
                            "--episodes-per-task", "50"]))
    plan.add(Stage("bad", ["data", "info", str(tmp_path / "missing")]))
    plan.add(Stage("after", ["data", "info", str(tmp_path)], deps=("bad",)))
    started = time.time()
    assert execute(plan, jobs=2) == "bad"
    assert plan.stages["after"].status == "waiting"
    assert plan.stages["slow"].status == "stopped" and time.time() - started < 30
    assert "does not exist" in (tmp_path / "logs/bad.log").read_text()


def test_in_process_stages_side_by_side_log_their_lines_and_leave_stdout_alone(tmp_path):
    """Two in-process stages at once (recipe_probe's copies, two methods' step rules): each one's line goes to its
    own log, and the process's sys.stdout is untouched (redirect_stdout in two worker threads once left it a closed
    log file, and the runner's next print failed)."""
    import threading

    both = threading.Barrier(2, timeout=10)

    def step(name):
        both.wait()  # the two calls overlap
        return f"{name} chosen"

    plan = Plan(tmp_path)
    for name in ("one", "two"):
        plan.add(Stage(name, ["select-steps", name], call=lambda name=name: step(name)))
    before = sys.stdout
    assert execute(plan, jobs=2) is None
    assert sys.stdout is before and not sys.stdout.closed
    for name in ("one", "two"):
        assert (tmp_path / f"logs/{name}.log").read_text().splitlines()[-1] == f"{name} chosen"


def _results(path, setting, seed, rates, episodes=300, probe_r2=None, laq_gain=None):
    methods = {m: {"success": k / episodes, "successes": k, "episodes": episodes, "ci95": [0, 1],
                   "per_task": {"a": k / episodes, "b": k / episodes},
                   "per_task_successes": {"a": k // 2, "b": k - k // 2}} for m, k in rates.items()}
    rule = {"per_method": {m: {"chosen_steps": 400, "dev_success": {"200": {"success": 0.25, "episodes": 60},
                                                                   "400": {"success": (seed + 1) / 60, "episodes": 60}}}
                           for m in rates}}
    path.write_text(json.dumps({"setting": setting, "seed": seed, "preset": "default", "tasks": ["a", "b"],
                                "eval_seed": seed + 2000, "eval_episodes_per_task": episodes // 2,
                                "command": "lapa demo", "machine": "test", "methods": methods,
                                "finetune_step_rule": rule,
                                "laq": {"probe_r2_xyz": probe_r2, "codes_used_fraction": 0.5,
                                        **({} if laq_gain is None else {"psnr_changed": 12.0 + laq_gain,
                                                                         "psnr_changed_copy_baseline": 12.0})}}))
    return path


def _script(name: str):
    """scripts/<name>.py imported as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_p_values_come_from_permutations():
    pool = _script("pool_claims")
    # 4 runs, ranks (1, 2, 3, 4) against (1, 2, 4, 3): rho = 0.8. Of the 24 pairings, rho >= 0.8 for the observed
    # one and its 3 adjacent swaps (sum of squared rank differences 0 or 2), rho <= -0.8 for their mirrors: p = 8/24
    got = pool._spearman([1, 2, 3, 4], [1, 2, 4, 3])
    assert got["rho"] == pytest.approx(0.8) and got["p"] == pytest.approx(8 / 24) and got["p_from"] == "all pairings"
    # beyond EXACT_UP_TO runs: seeded random pairings, the same p every time, and close to the exact tail
    x = np.arange(12.0)
    y = x + np.random.default_rng(0).normal(0, 3, 12)
    a, b = pool._spearman(x, y), pool._spearman(x, y)
    assert a == b and a["p_from"].startswith(f"{pool.PERMUTATIONS} random")
    from scipy import stats

    assert a["rho"] == pytest.approx(stats.spearmanr(x, y)[0]) and 0 < a["p"] < 0.05


def test_pool_claims_on_synthetic_results(tmp_path):
    files = [_results(tmp_path / f"demo_in-domain_seed{k}.json", "in-domain", k,
                      {"lapa": 150 + k, "scratch": 90, "vpt": 140, "lapa-shuffled": 160 - k}, probe_r2=k / 10,
                      laq_gain=(3.0, 1.0, 2.0)[k])
             for k in range(3)]
    files.append(_results(tmp_path / "demo_cross-embodiment_seed0.json", "cross-embodiment", 0,
                          {"lapa": 100, "scratch": 99}))
    files.append(_results(tmp_path / "demo_in-domain_seed3.json", "in-domain", 3, {"lapa-vision": 10}))
    files.append(_results(tmp_path / "demo_cross-embodiment_seed1.json", "cross-embodiment", 1, {"lapa-vision": 20}))
    out = tmp_path / "claims.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", *map(str, files),
                          "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    claims = json.loads(out.read_text())
    indomain = claims["settings"]["in-domain"]
    lapa = indomain["methods"]["lapa"]
    assert lapa["successes"] == 453 and lapa["episodes"] == 900 and lapa["seeds"] == [0, 1, 2]
    assert lapa["ci95"][0] < 453 / 900 < lapa["ci95"][1] and lapa["per_task"]["a"] == (75 + 75 + 76) / 450
    # the development evaluations that chose each budget, pooled per candidate
    assert lapa["dev_success"]["400"] == {"success": (1 + 2 + 3) / 180, "episodes": 180, "seeds": [0, 1, 2]}
    assert lapa["dev_success"]["200"]["success"] == 0.25 and lapa["chosen_steps"] == {"0": 400, "1": 400, "2": 400}
    assert indomain["claims"] == {"lapa_above_scratch": True, "lapa_interval_above_scratch": True,
                                  "lapa_above_vpt": True, "lapa_interval_above_vpt": False,
                                  "min_pooled_episodes": 900, "min_seeds": 3}  # lapa-vision's one seed aside
    # seed by seed: LAPA minus Scratch is (60 + k) / 300 in seed k; the t interval is over the three seeds
    assert lapa["per_seed"] == {str(k): (150 + k) / 300 for k in range(3)}
    paired = indomain["paired"]["lapa - scratch"]
    assert paired["seeds"] == [0, 1, 2] and paired["ahead_in_seeds"] == 3
    assert paired["per_seed"]["2"] == pytest.approx(62 / 300) and paired["mean"] == pytest.approx(61 / 300)
    half = 4.302653 * (1 / 300) / 3 ** 0.5  # t(0.975, 2 df) * sd / sqrt(n), sd of 60, 61, 62 over 300 = 1/300
    assert paired["t95"] == pytest.approx([61 / 300 - half, 61 / 300 + half], abs=1e-6)
    assert claims["settings"]["cross-embodiment"]["paired"]["lapa - scratch"]["t95"] is None  # one seed: no interval
    # LAPA's gains against the LAQ probe's R², one row per run with a probe (the three in-domain seeds)
    quality = claims["latent_quality"]
    assert [(r["setting"], r["seed"]) for r in quality["runs"]] == [("in-domain", k) for k in range(3)]
    assert quality["runs"][2]["lapa_minus_shuffled"] == pytest.approx(-6 / 300)  # 152 - 158
    assert quality["pearson_r2_vs_lapa_minus_scratch"]["r"] == pytest.approx(1.0)  # both grow with the seed
    assert quality["spearman_r2_vs_lapa_minus_shuffled"]["rho"] == pytest.approx(1.0)
    # three runs in the same order: 2 of the 3! pairings reach |rho| = 1, so p = 1/3 (not a t approximation's 0)
    assert quality["spearman_r2_vs_lapa_minus_shuffled"]["p"] == pytest.approx(1 / 3)
    assert quality["spearman_r2_vs_lapa_minus_shuffled"]["p_from"] == "all pairings"
    # the action-free LAQ criteria: the PSNR gain ranks 3, 1, 2 against R² 0, 0.1, 0.2 (rho -0.5); every run used
    # half its codebook, a constant, so that criterion has no correlation
    assert quality["runs"][0]["laq_gain_db"] == pytest.approx(3.0)
    free = quality["action_free"]
    assert free["spearman_laq_gain_db_vs_probe_r2_xyz"]["rho"] == pytest.approx(-0.5)
    assert free["runs_laq_gain_db_vs_lapa_minus_scratch"] == 3
    assert free["spearman_codes_used_fraction_vs_probe_r2_xyz"] is None
    hand = claims["settings"]["cross-embodiment"]["claims"]
    assert hand["lapa_above_scratch"] and not hand["lapa_interval_above_scratch"] and hand["lapa_above_vpt"] is None
    assert "pool_claims.py" in claims["command"]
    table = (tmp_path / "claims.md").read_text()  # rows: methods, columns: settings, in the paper's order
    assert "| method | in-domain | cross-embodiment |" in table
    assert f"| LAPA | {100 * 453 / 900:.1f} [{100 * lapa['ci95'][0]:.1f}, {100 * lapa['ci95'][1]:.1f}] (3) |" in table
    assert "| *LAPA's interval above VPT's* | no | - |" in table
    assert "| LAPA - Scratch | +20.0, +20.3, +20.7; mean +20.3 [+19.5, +21.2]; ahead 3/3 | +0.3; mean +0.3; " \
        "ahead 1/1 |" in table
    assert "| in-domain | 0 | 0.00 | 3.00 | 0.50 | +20.0 | -3.3 |" in table
    assert "LAQ gain (no actions needed), Spearman: vs probe R² rho = -0.50" in table
    assert table.count("| LAPA on the vision-pretrained tower |") == 1  # a method of several settings: one row
    # the same seed twice, and a file named for another seed, are refused with the file named
    (tmp_path / "x").mkdir()
    dup = _results(tmp_path / "x" / "demo_in-domain_seed1.json", "in-domain", 1, {"lapa": 1})
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", *map(str, files),
                          str(dup), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "seed 1 appears in" in res.stderr and "different results for lapa" in res.stderr
    # the same run asked again for more methods, written elsewhere: merged into its seed (shared methods agree)
    (tmp_path / "more").mkdir()
    more = _results(tmp_path / "more" / "demo_in-domain_seed0.json", "in-domain", 0,
                    {"scratch": 90, "vision": 120, "lapa-vision-frozen": 130})
    merged_out = tmp_path / "more" / "claims.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", *map(str, files),
                          str(more), "--out", str(merged_out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    merged = json.loads(merged_out.read_text())["settings"]["in-domain"]
    assert merged["seeds"] == [0, 1, 2, 3] and merged["methods"]["scratch"]["episodes"] == 900  # not counted twice
    assert merged["methods"]["lapa-vision-frozen"]["seeds"] == [0] and merged["methods"]["lapa"] == lapa
    assert merged["methods"]["lapa-vision-frozen"]["chosen_steps"] == {"0": 400}  # its step rule came along
    assert merged["paired"]["lapa-vision-frozen - vision"]["per_seed"] == {"0": pytest.approx(10 / 300)}
    assert str(more) in [s["file"] for s in merged["sources"]]
    assert "| LAPA on the frozen tower - vision tower | +3.3; mean +3.3; ahead 1/1 | - |" in \
        merged_out.with_suffix(".md").read_text()
    more.write_text(json.dumps({**json.loads(more.read_text()), "eval_seed": 5}))  # other layouts: another run
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", *map(str, files),
                          str(more), "--out", str(merged_out)], capture_output=True, text=True)
    assert res.returncode == 2 and "different eval_seed" in res.stderr and str(more) in res.stderr
    # a changed recipe (LAQ selection) is pooled on its own, and compared with the old claims seed by seed
    (tmp_path / "sel").mkdir()
    new = [_results(tmp_path / "sel" / f"demo_in-domain_seed{k}.json", "in-domain", k,
                    {"lapa": 160 + 2 * k, "scratch": 90}, probe_r2=0.5) for k in range(2)]
    for f in new:
        f.write_text(json.dumps({**json.loads(f.read_text()), "laq_seeds": 3}))
    other = _results(tmp_path / "x" / "demo_in-domain_seed5.json", "in-domain", 5, {"lapa": 1})
    other.write_text(json.dumps({**json.loads(other.read_text()), "laq_seeds": 3}))
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", *map(str, files),
                          str(other), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "different recipes" in res.stderr
    sel = tmp_path / "sel" / "claims.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", *map(str, new),
                          "--out", str(sel), "--against", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    vs = json.loads(sel.read_text())["against"]["settings"]["in-domain"]
    assert vs["lapa"]["per_seed"] == {"0": pytest.approx(10 / 300), "1": pytest.approx(11 / 300)}
    assert vs["scratch"]["mean"] == 0 and set(vs) == {"lapa", "scratch"}
    assert "| in-domain | LAPA | +3.3, +3.7 | +3.5" in (tmp_path / "sel" / "claims.md").read_text()
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", *map(str, new),
                          "--out", str(sel), "--against", str(tmp_path / "none.json")], capture_output=True, text=True)
    assert res.returncode == 2 and "--against" in res.stderr and "none.json" in res.stderr
    wrong = _results(tmp_path / "demo_in-domain_seed7.json", "in-domain", 1, {"lapa": 1})
    res = subprocess.run([sys.executable, str(ROOT / "scripts/pool_claims.py"), "--inputs", str(wrong)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "the name says in-domain seed 7" in res.stderr


def test_pool_claims_refuses_seeds_pretrained_on_other_tasks(tmp_path):
    old = _results(tmp_path / "demo_cross-task_seed0.json", "cross-task", 0, {"lapa": 150, "scratch": 90})
    new = _results(tmp_path / "demo_cross-task_seed1.json", "cross-task", 1, {"lapa": 150, "scratch": 90})
    default = list(PRESETS["default"].other_tasks)  # a file from before --other-tasks used the preset's
    new.write_text(json.dumps({**json.loads(new.read_text()), "pretraining_tasks": default}))
    pool = [sys.executable, str(ROOT / "scripts/pool_claims.py"), "--out", str(tmp_path / "c.json"), "--inputs"]
    res = subprocess.run([*pool, str(old), str(new)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    new.write_text(json.dumps({**json.loads(new.read_text()), "pretraining_tasks": ["reach-v3"]}))
    res = subprocess.run([*pool, str(old), str(new)], capture_output=True, text=True)
    assert res.returncode == 2 and "cross-task: files from different recipes" in res.stderr
    assert "reach-v3" in res.stderr


def _has_embodiment_flag() -> bool:
    from lapa_learning.data import generate

    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    return any("--embodiment" in a.option_strings for a in parser._actions)


def _check_results(results, setting, fixed_steps=None):
    assert set(results["methods"]) == set(METHODS) and results["setting"] == setting
    for method in results["methods"].values():
        assert method["episodes"] == 2 and 0.0 <= method["success"] <= 1.0
        assert method["ci95"][0] <= method["success"] <= method["ci95"][1]
        assert method["finetune_steps"] in ((fixed_steps,) if fixed_steps else PRESETS["quick"].finetune_steps)
    rule = results["finetune_step_rule"]
    if fixed_steps:
        assert rule["rule"].startswith("fixed") and rule["candidates"] == []
    else:
        assert rule["candidates"] == list(PRESETS["quick"].finetune_steps)
        assert all(rule["per_method"][m]["chosen_steps"] in rule["candidates"] for m in METHODS)
    assert results["command"].startswith("lapa demo") and results["minutes"] > 0 and results["machine"]
    assert results["eval_seed"] == EVAL_SEED_OFFSET and results["eval_episodes_per_task"] == 2


@pytest.mark.slow
def test_quick_demo_end_to_end_reuse_and_cross_embodiment(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "lapa_learning.cli", "demo", "--quick", "--out", str(out),
           "--results", str(tmp_path / "demo.json")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    first = json.loads((tmp_path / "demo.json").read_text())
    _check_results(first, "in-domain")
    assert first["stages_reused"] == []  # "minutes" covers every stage
    assert (out / "results_in-domain.png").stat().st_size > 1000
    md = (out / "results_in-domain.md").read_text()
    assert "| LAPA" in md and md.startswith("Setting in-domain") and "its numbers mean nothing" in md
    assert f"Command: `{first['command']}`" in md
    assert (out / "robot/explain/laq_explain.png").is_file()
    assert "EpisodeDataset(" in res.stdout and str(out / "data" / "finetune") in res.stdout
    started = time.time()
    again = subprocess.run(cmd, capture_output=True, text=True)
    n = len(build_plan(out, PRESETS["quick"], "in-domain", 0, "auto").stages)
    assert again.returncode == 0 and again.stdout.count("[reused]") == n
    assert time.time() - started < 60
    if not _has_embodiment_flag():
        pytest.skip("`lapa data generate --embodiment` is not in this checkout yet")
    # the new setting in the same --out, with a fixed budget (the step rule ran above): shares the labelled set,
    # the IDM and the robot videos' ActionVLA pretraining
    cmd = [*cmd[:-2], "--setting", "cross-embodiment", "--finetune-steps", "10", "--results", str(tmp_path / "h.json")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads((tmp_path / "h.json").read_text())
    _check_results(results, "cross-embodiment", fixed_steps=10)
    actionvla = results["methods"]["actionvla"]
    assert actionvla["pretraining_videos"] == "robot" and "same-embodiment" in actionvla["note"]
    assert results["methods"]["lapa"]["pretraining_videos"] == "hand"
    for shared in ("data-finetune", "data-val", "vpt-train", "data-videos-robot", "pretrain-actionvla-robot"):
        assert f"[reused] {shared}\n" in res.stdout and shared in results["stages_reused"]
    assert "laq-train-hand" not in results["stages_reused"]  # ran in this invocation, so inside its "minutes"
    assert results["laq_seeds"] == 1 and results["laq"]["selection"] is None
    # LAQ selection in the same --out: two candidates, the videos relabelled by the chosen one, the rest reused
    cmd = [*cmd[:-2], "--laq-seeds", "2", "--methods", "lapa,scratch", "--results", str(tmp_path / "sel.json")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sel = json.loads((tmp_path / "sel.json").read_text())
    chosen = sel["laq"]["selection"]
    assert sel["laq_seeds"] == 2 and set(chosen["probe_r2_xyz"]) == {"0", "1"}
    assert chosen["probe_r2_xyz"][str(chosen["chosen_seed"])] == pytest.approx(sel["laq"]["probe_r2_xyz"])
    assert "--laq-seeds 2" in sel["command"]
    assert {"data-videos-hand", "eval-scratch"} <= set(sel["stages_reused"])
    assert not {"laq-label-hand", "pretrain-lapa-hand"} & set(sel["stages_reused"])
    # methods without latent labels, in the same --out: every stage reused, and the results record no LAQ or
    # latent pretraining (the selection run's LAQ and probe are still on disk, but this plan did not use them)
    cmd = [*cmd[:cmd.index("--laq-seeds")], "--methods", "vision,scratch", "--results", str(tmp_path / "v.json")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    vis = json.loads((tmp_path / "v.json").read_text())
    assert set(vis["methods"]) == {"vision", "scratch"} and "eval-vision-hand" in vis["stages_reused"]
    assert set(vis["laq"].values()) == {None} and set(vis["latent_pretraining"].values()) == {None}
    assert vis["vision_pretraining"]["val_mse"] is not None and vis["vpt_idm"]["l1"] is None


def test_bad_demo_options_are_refused_before_anything_runs(tmp_path, capsys):
    from lapa_learning.cli import main

    assert main(["demo", "--quick", "--methods", "lapa,bogus", "--out", str(tmp_path / "d")]) == 2
    assert "--methods: unknown method(s) ['bogus']" in capsys.readouterr().err
    assert main(["demo", "--quick", "--finetune-steps", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--finetune-steps" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["demo", "--quick", "--laq-seeds", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--laq-seeds must be at least 1" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["demo", "--quick", "--eval-episodes", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--eval-episodes must be at least 1" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["demo", "--quick", "--tasks", "push", "--out", str(tmp_path / "d")]) == 2
    assert "lapa: error: --tasks: unknown Meta-World task(s) ['push']" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert main(["demo", "--quick", "--seed", "-1", "--out", str(tmp_path / "d")]) == 2
    assert "--seed -1: expected an integer in [0, 2^31)" in capsys.readouterr().err
    (tmp_path / "resdir").mkdir()
    assert main(["demo", "--quick", "--results", str(tmp_path / "resdir"), "--out", str(tmp_path / "d")]) == 2
    assert "--results" in capsys.readouterr().err and not (tmp_path / "d").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["demo", "--quick", "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert f"lapa: error: --out {tmp_path / 'afile'}: cannot be the demo's directory" in err and "Traceback" not in err


def test_the_demo_never_replaces_what_it_did_not_write(tmp_path):
    """A fresh stage deletes its outputs before it runs: only after an attempt of its own (marker or start record)."""
    mine = tmp_path / "data" / "finetune"
    mine.mkdir(parents=True)
    (mine / "precious.txt").write_text("the user's")
    plan = Plan(tmp_path)
    plan.add(Stage("data-finetune", ["data"], outputs=(mine,), fresh=True, call=lambda: None))
    with pytest.raises(ConfigError, match=r"holds .*data/finetune, which no demo stage wrote"):
        execute(plan, jobs=1)
    assert (mine / "precious.txt").read_text() == "the user's"
    (mine / "precious.txt").unlink()  # an empty folder is nothing to lose
    assert execute(plan, jobs=1) is None
    mine.mkdir()
    (mine / "output").write_text("the stage's")  # its own outputs: replaced when it runs again with other args
    again = Plan(tmp_path)
    again.add(Stage("data-finetune", ["data", "--other"], outputs=(mine,), fresh=True, call=lambda: None))
    assert execute(again, jobs=1) is None and not (mine / "output").exists()


def test_out_spelled_relative_or_absolute_names_the_same_stages(tmp_path, monkeypatch):
    from lapa_learning.demo import stable_out

    monkeypatch.chdir(tmp_path)
    assert stable_out(Path("rel/d")) == stable_out(tmp_path / "rel" / "d") == Path("rel/d")
    assert stable_out(Path("../elsewhere")) == (tmp_path.parent / "elsewhere").resolve()


@pytest.mark.slow
def test_a_second_run_in_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    from lapa_learning.cli import main
    from lapa_learning.demo.runner import exclusive

    out = tmp_path / "d"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from lapa_learning.demo.runner import exclusive\n"
                               "with exclusive(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["demo", "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"lapa: error: --out {out}: pid {holder.pid} (started " in err and "is running in it" in err
        assert not (out / "stages").exists()  # nothing ran
    finally:
        holder.kill()
        holder.wait()
    with exclusive(out):  # a killed holder leaves no stale lock
        assert str(os.getpid()) in (out / ".lock").read_text()


def test_demo_options_reach_the_plan(tmp_path, monkeypatch):
    import lapa_learning.demo as demo
    from lapa_learning.cli import main

    seen = {}
    monkeypatch.setattr(demo, "execute", lambda plan, jobs: seen.update(plan=plan) or "stopped-here")
    assert main(["demo", "--quick", "--eval-episodes", "3", "--tasks", "reach-v3", "--out", str(tmp_path / "d")]) == 1
    final = seen["plan"].stages["eval-scratch"]
    assert _arg(final, "--episodes-per-task") == "3" and _arg(final, "--tasks") == "reach-v3"


def test_a_stage_that_outlives_its_killed_runner_keeps_the_out_locked(tmp_path):
    import signal

    from lapa_learning.demo.runner import exclusive

    out, data = tmp_path / "d", tmp_path / "d" / "videos"
    runner = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from lapa_learning.demo import Plan, Stage, execute\n"
                               "plan = Plan(Path(sys.argv[1]))\n"
                               "plan.add(Stage('slow', ['data', 'generate', '--out', sys.argv[2], '--tasks', 'push-v3', "
                               "'--episodes-per-task', '500']))\n"
                               "execute(plan, jobs=1)", str(out), str(data)], start_new_session=True)
    try:
        log = out / "logs/slow.log"
        end = time.time() + 60
        while time.time() < end and "generating" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.2)
        assert "generating" in log.read_text()  # the stage process is at work
        os.kill(runner.pid, signal.SIGKILL)  # the runner dies; its stage process goes on
        runner.wait()
        with pytest.raises(ConfigError, match="or a stage it started still runs"):
            with exclusive(out):
                pass
    finally:
        os.killpg(runner.pid, signal.SIGKILL)  # the orphaned stage, same process group
    end = time.time() + 30
    while True:  # once the last holder is gone the lock is free again
        try:
            with exclusive(out):
                break
        except ConfigError:
            assert time.time() < end, "the lock outlived every process that held it"
            time.sleep(0.2)


def test_an_interrupted_pretraining_stage_resumes_from_its_checkpoint(tmp_path):
    from lapa_learning.cli import main
    from lapa_learning.vla.testing import make_toy_dataset

    videos = make_toy_dataset(tmp_path / "videos", episodes=4, length=12, image_size=32, with_actions=False, seed=1)
    fast = ["--batch-size", "8", "--eval-every", "4", "--eval-samples", "16", "--threads", "1", "--no-progress"]
    base = tmp_path / "base"
    assert main(["vla", "pretrain", "--data", str(videos), "--out", str(base), "--max-steps", "2", "--config",
                 "tiny", *fast]) == 0
    run = tmp_path / "pre"
    args = ["vla", "pretrain", "--data", str(videos), "--init", str(base), "--out", str(run), "--max-steps", "8",
            "--save-every", "4", *fast]
    half = [*args[:args.index("--max-steps") + 1], "4", *args[args.index("--max-steps") + 2:]]
    assert main(half) == 0  # stands for a run killed after its checkpoint at step 4

    def stage():
        plan = Plan(tmp_path / "demo")
        plan.add(Stage("data", ["data", "info", str(videos)]))
        plan.add(Stage("pretrain", args, deps=("data",), resume_dir=run))
        return plan

    def killed(plan):  # what the runner leaves of an attempt that was killed: its start record
        (tmp_path / "demo/stages").mkdir(parents=True, exist_ok=True)
        st = plan.stages["pretrain"]
        atomic_write_json(_started(plan, st), _attempt(plan, st))
        return plan

    first = stage()
    assert execute(Plan(first.out, {"data": first.stages["data"]}), jobs=1) is None  # the input, finished
    assert execute(killed(stage()), jobs=1) is None
    log = (tmp_path / "demo/logs/pretrain.log").read_text()
    assert log.splitlines()[0].endswith(" --resume")  # the command as run
    rec = json.loads((run / "train_record.json").read_text())
    assert rec["steps"] == 8 and rec["resumed_at_step"] == 4
    assert rec["init"] == str(base) and rec["init_record"]["steps"] == 2  # the resumed run's --init, kept
    # the marker holds the stage's own arguments, so the finished stage is reused; the start record is gone
    assert json.loads((tmp_path / "demo/stages/pretrain.json").read_text())["args"] == args
    assert not (tmp_path / "demo/stages/pretrain.started.json").exists()
    again = stage()
    assert execute(again, jobs=1) is None and again.stages["pretrain"].status == "reused"
    # killed before its first training state was saved: the stage starts over instead of being refused
    (tmp_path / "demo/stages/pretrain.json").unlink()
    (run / "checkpoint/training_state.pt").unlink()
    assert execute(killed(stage()), jobs=1) is None
    assert (tmp_path / "demo/logs/pretrain.log").read_text().splitlines()[0].endswith(" --overwrite")
    rec = json.loads((run / "train_record.json").read_text())
    assert rec["steps"] == 8 and "resumed_at_step" not in rec
    # a finished run is never continued by a stage that re-runs for another reason: here its input ran again
    # after the kill (as when LAQ selection relabels the videos), so the attempt differs and it starts afresh
    main([*args[:args.index("--max-steps") + 1], "4", *args[args.index("--max-steps") + 2:], "--overwrite"])
    plan = killed(stage())
    (tmp_path / "demo/stages/pretrain.json").unlink()
    (tmp_path / "demo/stages/data.json").unlink()
    assert execute(plan, jobs=1) is None
    assert plan.stages["data"].status == "done"
    assert (tmp_path / "demo/logs/pretrain.log").read_text().splitlines()[0].endswith(" --no-progress")
    rec = json.loads((run / "train_record.json").read_text())
    assert rec["steps"] == 8 and "resumed_at_step" not in rec
    # and without a marker or a start record, the run in its directory is no attempt of this stage (the user's, or
    # one from before start records): refused, not deleted
    (tmp_path / "demo/stages/pretrain.json").unlink()
    with pytest.raises(ConfigError, match=f"holds {run}, which no demo stage wrote"):
        execute(stage(), jobs=1)
    assert json.loads((run / "train_record.json").read_text())["steps"] == 8


def test_a_stage_is_rerun_when_a_stage_it_depends_on_reruns(tmp_path):
    def plan(first_args):
        p = Plan(tmp_path)
        p.add(Stage("first", first_args, call=lambda: None))
        p.add(Stage("second", ["second"], deps=("first",), call=lambda: None))
        return p

    assert execute(plan(["a"]), jobs=1) is None
    again = plan(["a"])
    execute(again, jobs=1)
    assert [s.status for s in again.stages.values()] == ["reused", "reused"]
    changed = plan(["b"])  # the first stage's work changed, so the second's result is stale
    execute(changed, jobs=1)
    assert [s.status for s in changed.stages.values()] == ["done", "done"]
    # across invocations: one that asks only for the first stage re-runs it with other arguments; the second's
    # result (made from "b") must not be reused next to the first's new output, although its own arguments match
    alone = Plan(tmp_path)
    alone.add(Stage("first", ["a"], call=lambda: None))
    execute(alone, jobs=1)
    later = plan(["a"])
    execute(later, jobs=1)
    assert [s.status for s in later.stages.values()] == ["reused", "done"]
    # a marker from before markers recorded their inputs: done only when at least as new as its dependencies'
    legacy = tmp_path / "stages" / "second.json"
    legacy.write_text(json.dumps({"args": ["second"], "seconds": 1.0}))
    execute(fresh := plan(["a"]), jobs=1)
    assert [s.status for s in fresh.stages.values()] == ["reused", "reused"]
    legacy.write_text(json.dumps({"args": ["second"], "seconds": 1.0}))
    os.utime(legacy, (1, 1))  # older than the first stage's marker
    execute(stale := plan(["a"]), jobs=1)
    assert [s.status for s in stale.stages.values()] == ["reused", "done"]


def test_demo_diagnosis_reads_a_demo_directory(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, str(ROOT / "scripts/demo_diagnosis.py"), "--demo-out", str(out),
                          "--setting", "in-domain", "--seed", "0", "--out", str(tmp_path / "d.json")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a `lapa demo` output directory" in res.stderr
    (out / "stages").mkdir(parents=True)
    (out / "eval/scratch").mkdir(parents=True)
    episodes = [{"task": "a", "episode": i, "seed": i, "success": i == 0, "steps": 5, "final_state": [i, 0, 0, 0]}
                for i in range(3)]
    (out / "eval/scratch/results.json").write_text(json.dumps(
        {"tasks": {"a": {"successes": 1, "episodes": 3, "mean_steps_to_success": 5.0}}, "episodes": episodes}))
    (out / "robot/explain").mkdir(parents=True)
    (out / "robot/explain/laq_explain.json").write_text(json.dumps(
        {"codebook_size": 4, "probe": {"action_names": ["dx", "dy"], "r2_action": [0.1, 0.5],
                                       "code_counts": [[90, 10, 0, 0], [25, 25, 25, 25]]}}))
    res = subprocess.run([sys.executable, str(ROOT / "scripts/demo_diagnosis.py"), "--demo-out", str(out),
                          "--setting", "in-domain", "--seed", "0", "--out", str(tmp_path / "d.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["video_set_record"]["probe_r2_per_action_dim"] == {"dx": 0.1, "dy": 0.5}
    assert d["video_set_record"]["codes_with_at_least_5pct_of_pairs_per_token"] == [2, 4]
    assert d["methods"]["scratch"]["final"]["a"]["failed_mean_final_hand_xyz"] == [1.5, 0.0, 0.0]
    assert list(d["methods"]) == ["scratch"] and "demo_diagnosis.py" in d["command"]


def test_step_budget_probe_refuses_an_unfinished_demo_and_unknown_methods(tmp_path):
    def probe(*extra):
        return subprocess.run([sys.executable, str(ROOT / "scripts/step_budget_probe.py"), "--demo-out",
                               str(tmp_path), "--out", str(tmp_path / "p.json"), *extra], capture_output=True, text=True)

    res = probe("--methods", "lapa")
    assert res.returncode == 2 and "not a finished in-domain demo of seed 0" in res.stderr
    assert str(tmp_path / "robot/finetune_lapa/selection.json") in res.stderr and "Traceback" not in res.stderr
    res = probe("--methods", "lapa,bogus")
    assert res.returncode == 2 and "unknown ['bogus']" in res.stderr
    assert not (tmp_path / "p.json").exists()


def test_recipe_probe_runs_variants_up_to_the_step_rule_and_shares_unchanged_stages(tmp_path):
    """Two variants of the quick recipe (the second trains the LAQ longer): every stage up to each method's step
    selection on development layouts runs, stages that the LAQ change does not touch are copied, not rerun, and
    nothing is evaluated on the fresh layouts."""
    out, results = tmp_path / "probe", tmp_path / "probe.json"
    cmd = [sys.executable, str(ROOT / "scripts/recipe_probe.py"), "--preset", "quick", "--out", str(out),
           "--variant", "base", "--variant", "laq40:laq_steps=40", "--results", str(results)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    d = json.loads(results.read_text())
    assert d["preset"] == "quick" and "recipe_probe.py" in d["command"] and d["setting"] == "in-domain"
    assert d["stage_minutes_total"] > 0
    assert list(d["variants"]) == ["base", "laq40"] and d["variants"]["laq40"]["overrides"] == {"laq_steps": 40}
    assert set(d["variants"]["base"]["methods"]) == {"lapa", "scratch"} and set(d["variants"]["laq40"]["methods"]) == {"lapa"}
    for variant in d["variants"].values():
        for row in variant["methods"].values():
            assert row["chosen_steps"] in PRESETS["quick"].finetune_steps
            assert set(row["dev_success"]) == {str(s) for s in PRESETS["quick"].finetune_steps}
        assert "probe_r2_xyz" in variant["laq_probe"] and set(variant["laq_probe"]["r2_per_action_dim"]) >= {"dx", "dy", "dz"}
        assert len(variant["laq_probe"]["codes_with_at_least_5pct_of_pairs_per_token"]) == 4
    assert json.loads((out / "laq40/robot/laq/latest.json").read_text())["step"] == 40
    assert json.loads((out / "base/robot/laq/latest.json").read_text())["step"] == PRESETS["quick"].laq_steps
    assert not list(out.glob("*/robot/eval")) and not list(out.glob("*/eval"))  # no fresh-layout evaluation

    def record(stage):
        return json.loads((out / "stages" / f"{stage}.json").read_text())["args"]

    # the data is the same in both variants: copied; the LAQ and everything after it: run again
    assert record("laq40.data-videos-robot") == ["copy", str(out / "base/robot/videos"), str(out / "laq40/robot/videos")]
    assert (out / "laq40/robot/videos/meta/info.json").is_file()
    assert record("laq40.laq-train-robot")[:2] == ["laq", "train"]
    assert record("laq40.pretrain-lapa-robot")[:2] == ["vla", "pretrain"]
    bad = subprocess.run([*cmd[:-2], "--methods", "lapa,bogus", "--results", str(tmp_path / "x.json")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown method(s) ['bogus']" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([*cmd[:-4], "--variant", "x:eval_steps=3", "--results", str(tmp_path / "x.json")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "expected NAME:field=value" in bad.stderr and not (tmp_path / "x.json").exists()


def test_recipe_probe_refuses_a_bad_dev_episodes_before_anything_runs(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts/recipe_probe.py"), "--preset", "quick", "--out",
                          str(tmp_path / "p"), "--variant", "base", "--dev-episodes", "0"], capture_output=True, text=True)
    assert res.returncode != 0 and "--dev-episodes must be at least 1, got 0" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "p").exists()


def test_recipe_probe_variants_take_laq_config_overrides():
    """'laq.model.KEY=VALUE' items become `lapa laq train --set` arguments of that variant's LAQ stage (checked
    against the LAQ config before anything runs); numeric preset fields stay as they were."""
    probe = _script("recipe_probe")
    base = PRESETS["default"]
    name, over = probe.parse_variant("cb16:laq.model.codebook_size=16,laq.model.num_tokens=9,pretrain_steps=3000", base)
    assert name == "cb16" and over["pretrain_steps"] == 3000
    assert over["laq_extra"] == ("--set", "model.codebook_size=16", "--set", "model.num_tokens=9")
    plan = build_plan(Path("/tmp/x"), dataclasses.replace(base, **over), "in-domain", seed=0, device="cpu")
    args = plan.stages["laq-train-robot"].args
    assert args[args.index("--set") + 1] == "model.codebook_size=16" and "model.num_tokens=9" in args
    for bad, says in [("x:laq.model.codebook_size=1", "codebook_size must be >= 2"),
                      ("x:laq.model.no_such_key=3", "no_such_key"), ("x:codebook_size=16", "laq.model.KEY=VALUE")]:
        with pytest.raises(SystemExit, match=says):
            probe.parse_variant(bad, base)


def _probe_results(path: Path, seed: int, wins: dict, r2: dict, overrides=None) -> Path:
    """A recipe_probe.py results file: wins[(variant, method)] = successes of 100 at 200 / 400 steps."""
    variants = {}
    for (variant, method), (w200, w400) in wins.items():
        v = variants.setdefault(variant, {"overrides": (overrides or {}).get(variant, {}), "methods": {},
                                          "laq_probe": {"probe_r2_xyz": r2.get(variant)}})
        v["methods"][method] = {"chosen_steps": 400 if w400 > w200 else 200,
                                "dev_success": {"200": {"success": w200 / 100, "episodes": 100},
                                                "400": {"success": w400 / 100, "episodes": 100}}}
    atomic_write_json(path, {"command": "python scripts/recipe_probe.py ...", "setting": "in-domain", "seed": seed,
                             "variants": variants})
    return path


def test_pool_recipe_probes_pools_seeds_and_compares_each_variant_with_the_first(tmp_path):
    a = _probe_results(tmp_path / "s0.json", 0, {("base", "lapa"): (30, 50), ("base", "scratch"): (20, 40),
                                                  ("tok9", "lapa"): (45, 60)}, {"base": 0.5, "tok9": 0.1})
    b = _probe_results(tmp_path / "s1.json", 1, {("base", "lapa"): (60, 55), ("base", "scratch"): (30, 50),
                                                  ("tok9", "lapa"): (50, 70)}, {"base": 0.6, "tok9": 0.2})
    out = tmp_path / "pooled.json"
    script = str(ROOT / "scripts/pool_recipe_probes.py")
    res = subprocess.run([sys.executable, script, "--inputs", str(a), str(b), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    s = json.loads(out.read_text())["settings"]["in-domain"]
    tok9 = s["variants"]["tok9"]["methods"]["lapa"]
    assert tok9["per_candidate"]["400"]["successes"] == 130 and tok9["per_candidate"]["400"]["episodes"] == 200
    assert tok9["all_candidates"]["success"] == pytest.approx(225 / 400)
    assert tok9["chosen"] == {"0": {"steps": 400, "success": 0.6}, "1": {"steps": 400, "success": 0.7}}
    assert s["variants"]["tok9"]["laq_probe_r2_xyz"] == {"0": 0.1, "1": 0.2}
    # seed by seed at each seed's chosen budget: tok9 60 - 50 and 70 - 60 (base chose 200 steps in seed 1)
    c = s["comparisons"]["tok9 lapa - base lapa"]
    assert c["chosen_per_seed"] == {"0": pytest.approx(0.1), "1": pytest.approx(0.1)} and c["ahead_in_seeds"] == 2
    assert c["chosen_t95"] == pytest.approx([0.1, 0.1])  # no spread over seeds
    assert c["all_candidates"] == pytest.approx(225 / 400 - 195 / 400)
    assert set(s["comparisons"]) == {"base lapa - base scratch", "tok9 lapa - base lapa", "tok9 lapa - base scratch"}
    assert "| tok9 lapa - base lapa | +10.0, +10.0 | +10.0 [+10.0, +10.0] | +7.5 |" in res.stdout
    # a variant run in one seed only is compared on that seed alone (also its all-candidates difference)
    one = _probe_results(tmp_path / "s1_more.json", 1, {("base", "lapa"): (60, 55), ("base", "scratch"): (30, 50),
                                                        ("tok9", "lapa"): (50, 70), ("res", "lapa"): (80, 70)}, {})
    res = subprocess.run([sys.executable, script, "--inputs", str(a), str(one), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    c = json.loads(out.read_text())["settings"]["in-domain"]["comparisons"]["res lapa - base lapa"]
    assert c["seeds"] == [1] and c["chosen_per_seed"] == {"1": pytest.approx(0.2)} and c["chosen_t95"] is None
    assert c["all_candidates"] == pytest.approx(150 / 200 - 115 / 200)
    # one seed twice, or one variant name for two recipes, is refused with both files named
    res = subprocess.run([sys.executable, script, "--inputs", str(a), str(a), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "in-domain seed 0 appears in" in res.stderr and "Traceback" not in res.stderr
    c = _probe_results(tmp_path / "s2.json", 2, {("tok9", "lapa"): (1, 2)}, {},
                       overrides={"tok9": {"laq_extra": ["--set", "model.num_tokens=16"]}})
    res = subprocess.run([sys.executable, script, "--inputs", str(a), str(c), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "variant 'tok9' is" in res.stderr and str(c) in res.stderr
    (tmp_path / "bad.json").write_text("{}")
    res = subprocess.run([sys.executable, script, "--inputs", str(tmp_path / "bad.json"), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a recipe_probe.py results JSON" in res.stderr
    res = subprocess.run([sys.executable, script, "--inputs", str(tmp_path), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "cannot read it" in res.stderr and "Traceback" not in res.stderr


def test_worker_counts_are_passed_to_video_generation_but_do_not_identify_it(tmp_path, monkeypatch):
    """The pretraining videos are rolled out by GENERATE_WORKERS processes (the same dataset for any number), and a
    finished stage is reused on a machine with another number of cores."""
    from lapa_learning.demo import plan as plan_module
    from lapa_learning.demo.runner import _is_done, marker

    plan = build_plan(tmp_path, PRESETS["quick"], "in-domain", seed=0, device="cpu")
    stage = plan.stages["data-videos-robot"]
    assert stage.speed == ("--workers", str(plan_module.GENERATE_WORKERS)) and "--workers" not in stage.args
    assert _attempt(plan, stage)["args"] == stage.args
    marker(plan, stage).parent.mkdir(parents=True)
    atomic_write_json(marker(plan, stage), _attempt(plan, stage))
    monkeypatch.setattr(plan_module, "GENERATE_WORKERS", 7)
    other = build_plan(tmp_path, PRESETS["quick"], "in-domain", seed=0, device="cpu").stages["data-videos-robot"]
    assert other.speed == ("--workers", "7") and _is_done(plan, other)


def test_pool_claims_refuses_runs_of_another_simulator_version(tmp_path):
    """Runs from before the first-frame fix (no simulator_version: 1) never pool with runs after it."""
    from lapa_learning.sim.metaworld_env import SIMULATOR_VERSION

    old = _results(tmp_path / "demo_in-domain_seed0.json", "in-domain", 0, {"lapa": 150, "scratch": 90})
    new = _results(tmp_path / "demo_in-domain_seed1.json", "in-domain", 1, {"lapa": 150, "scratch": 90})
    pool = [sys.executable, str(ROOT / "scripts/pool_claims.py"), "--out", str(tmp_path / "c.json"), "--inputs"]
    assert subprocess.run([*pool, str(old), str(new)], capture_output=True, text=True).returncode == 0
    new.write_text(json.dumps({**json.loads(new.read_text()), "simulator_version": SIMULATOR_VERSION}))
    res = subprocess.run([*pool, str(old), str(new)], capture_output=True, text=True)
    assert res.returncode == 2 and "simulator version" in res.stderr and SIMULATOR_VERSION == 2
