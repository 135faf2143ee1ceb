"""Closed-loop evaluation: success counting, intervals, videos, and the CLI on a tiny checkpoint."""

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lapa_learning.eval.evaluate import evaluate, format_table
from lapa_learning.eval.stats import mean_interval, wilson_interval


def test_wilson_interval():
    assert wilson_interval(0, 50) == (0.0, pytest.approx(0.0713, abs=1e-3))
    lo, hi = wilson_interval(25, 50)
    assert lo == pytest.approx(0.366, abs=1e-3) and hi == pytest.approx(0.634, abs=1e-3)
    assert wilson_interval(50, 50)[1] == 1.0


def test_mean_interval_over_seeds():
    lo, hi = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2 df) = 4.3027
    assert lo == pytest.approx(2 - 4.3027 / 3 ** 0.5, abs=1e-4) and hi == pytest.approx(2 + 4.3027 / 3 ** 0.5, abs=1e-4)
    assert mean_interval([0.5]) is None and mean_interval([0.2, 0.2]) == (0.2, 0.2)


class OraclePolicy:
    """Acts with the scripted expert of the environment the evaluator created (to check the bookkeeping)."""

    env = None

    def reset(self):
        pass

    def act(self, image, instruction):
        assert image.shape == (64, 64, 3) and instruction == "push the puck to the goal"
        return SimpleNamespace(values=OraclePolicy.env.expert_action())


class ZeroPolicy:
    def reset(self):
        pass

    def act(self, image, instruction):
        return SimpleNamespace(values=np.zeros(4, dtype=np.float32))


@pytest.fixture
def capture_env(monkeypatch):
    from lapa_learning.sim import metaworld_env

    class Captured(metaworld_env.MetaWorldEnv):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            OraclePolicy.env = self

    monkeypatch.setattr(metaworld_env, "MetaWorldEnv", Captured)


def test_expert_succeeds_and_idle_policy_fails(tmp_path, capture_env):
    good = evaluate(OraclePolicy(), ["push-v3"], episodes_per_task=3, max_steps=150, video_dir=tmp_path / "v",
                    progress=False)
    assert good["overall"]["success"] == 1.0 and good["overall"]["episodes"] == 3
    assert 20 < good["overall"]["mean_steps_to_success"] < 150
    assert good["overall"]["ci95"][0] > 0.3
    bad = evaluate(ZeroPolicy(), ["push-v3"], episodes_per_task=2, max_steps=20, video_dir=tmp_path / "v",
                   progress=False)
    assert bad["overall"]["success"] == 0.0 and bad["overall"]["mean_steps_to_success"] is None
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["push-v3_failure_0.mp4", "push-v3_success_0.mp4"]
    assert "push-v3" in format_table(good) and "100%" in format_table(good)


def test_evaluation_layouts_are_deterministic(capture_env):
    a = evaluate(OraclePolicy(), ["push-v3"], episodes_per_task=2, max_steps=150, progress=False)
    b = evaluate(OraclePolicy(), ["push-v3"], episodes_per_task=2, max_steps=150, progress=False)
    assert a["overall"]["mean_steps_to_success"] == b["overall"]["mean_steps_to_success"]


def test_a_chunked_policy_gets_rendered_frames_only_when_it_replans(tmp_path, capture_env, monkeypatch):
    from lapa_learning.sim import metaworld_env
    from lapa_learning.vla.policy import Policy
    from lapa_learning.vla.testing import make_tiny_checkpoint

    policy = Policy.load(make_tiny_checkpoint(tmp_path / "ckpt", chunk_size=4), device="cpu")
    renders = []
    real_render = metaworld_env.MetaWorldEnv.render
    monkeypatch.setattr(metaworld_env.MetaWorldEnv, "render", lambda self: renders.append(1) or real_render(self))

    class EveryFrame:  # the same policy, but the evaluator cannot tell when it replans
        reset = policy.reset

        def act(self, image, instruction):
            assert image is not None
            return policy.act(image, instruction)

    lazy = evaluate(policy, ["push-v3"], episodes_per_task=2, max_steps=12, progress=False)
    lazy_renders, renders[:] = len(renders), []
    full = evaluate(EveryFrame(), ["push-v3"], episodes_per_task=2, max_steps=12, progress=False)
    assert len(renders) == 2 * 13 and lazy_renders == 2 * 4  # reset + 12 steps, against reset + steps 4, 8, 12
    assert lazy["tasks"] == full["tasks"]
    # With a video directory, episodes are rendered in full until each outcome has its video.
    renders[:] = []
    with_video = evaluate(policy, ["push-v3"], episodes_per_task=2, max_steps=12, progress=False,
                          video_dir=tmp_path / "v")
    assert len(renders) == 2 * 13 and with_video["tasks"]["push-v3"]["success"] == full["tasks"]["push-v3"]["success"]


def test_cli_eval_on_a_tiny_checkpoint(tmp_path):
    from lapa_learning.vla.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(ckpt), "--tasks", "push-v3",
                          "--episodes-per-task", "2", "--max-steps", "10", "--out", str(tmp_path / "ev")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "ev/results.json").read_text())
    assert results["overall"]["episodes"] == 2 and results["tasks"]["push-v3"]["videos"]
    assert results["command"].startswith("lapa eval")
    missing = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("num_envs,workers", [(3, 1), (2, 2)])
def test_batched_evaluation_replays_the_sequential_one(tmp_path, num_envs, workers):
    """N environments at once, one batched forward pass per step (and split over worker processes): the same
    episodes, seeds, outcomes, step counts, final hand positions and videos as one after another (2 tasks x 3).
    The two tasks have different scenes: with push and reach (near-identical scenes) an env drawn through another
    env's OpenGL context still looked right, and this test missed that bug."""
    from lapa_learning.data.video import read_video
    from lapa_learning.vla.policy import Policy
    from lapa_learning.vla.testing import make_tiny_checkpoint

    policy = Policy.load(make_tiny_checkpoint(tmp_path / "ckpt", chunk_size=2, head="discrete", seed=4),
                         device="cpu")
    kw = dict(tasks=["plate-slide-v3", "button-press-topdown-v3"], episodes_per_task=3, max_steps=15, seed=7,
              progress=False)
    seq = evaluate(policy, video_dir=tmp_path / "seq", num_envs=1, **kw)
    bat = evaluate(policy, video_dir=tmp_path / "bat", num_envs=num_envs, workers=workers, **kw)
    assert seq["num_envs"] == 1 and bat["num_envs"] == num_envs and bat["workers"] == workers
    assert [e["seed"] for e in seq["episodes"]] == [e["seed"] for e in bat["episodes"]]
    assert seq["episodes"] == bat["episodes"]  # outcome, steps and final state of every episode
    for key in ("overall", "tasks"):
        strip = lambda r: json.loads(json.dumps(r).replace("/seq/", "/X/").replace("/bat/", "/X/"))  # noqa: E731
        assert strip(seq[key]) == strip(bat[key])
    names = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "bat").iterdir()) and len(names) >= 2
    for name in names:
        np.testing.assert_array_equal(read_video(tmp_path / "seq" / name), read_video(tmp_path / "bat" / name))
    moved = {tuple(e["final_state"][:3]) for e in seq["episodes"]}
    assert len(moved) == 6  # the random policy really moved the arm differently in every episode


def test_batched_evaluation_needs_a_batched_policy():
    from lapa_learning.errors import ConfigError

    with pytest.raises(ConfigError, match="num_envs 2"):
        evaluate(ZeroPolicy(), ["push-v3"], episodes_per_task=2, max_steps=5, progress=False, num_envs=2)
    with pytest.raises(ConfigError, match="workers 2"):
        evaluate(ZeroPolicy(), ["push-v3"], episodes_per_task=2, max_steps=5, progress=False, workers=2)


def test_cli_rejects_a_bad_num_envs(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(tmp_path), "--num-envs", "0"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--num-envs" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(tmp_path), "--videos", "-1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--videos must be 0" in res.stderr and "Traceback" not in res.stderr
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(tmp_path), "--out", str(afile)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "is a file; name a folder" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(tmp_path), "--chunk-decay", "0.3",
                          "--preview-laq", str(tmp_path)], capture_output=True, text=True)
    assert "lapa: warning: --chunk-decay weighs the chunks of --chunk-blend ensemble; ignored" in res.stderr
    assert "lapa: warning: --preview-laq is used only with --preview" in res.stderr


def test_cli_eval_without_videos_writes_none(tmp_path):
    from lapa_learning.vla.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(ckpt), "--tasks", "push-v3",
                          "--episodes-per-task", "2", "--max-steps", "10", "--videos", "0", "--workers", "1",
                          "--out", str(tmp_path / "ev")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "ev/results.json").read_text())
    assert results["overall"]["episodes"] == 2 and results["tasks"]["push-v3"]["videos"] == []
    assert not (tmp_path / "ev/videos").exists()


def test_chunk_blending_in_eval(tmp_path):
    """'switch' re-planning every T steps executes whole chunks, exactly like blending off; 'ensemble' re-plans
    every step and acts differently; batched (one forward pass for all planning envs) replays sequential."""
    from lapa_learning.vla.chunking import BlendedPolicy
    from lapa_learning.vla.policy import Policy

    from lapa_learning.vla.testing import make_tiny_checkpoint

    policy = Policy.load(make_tiny_checkpoint(tmp_path / "ckpt", chunk_size=4, seed=3), device="cpu")
    kw = dict(tasks=["push-v3", "reach-v3"], episodes_per_task=2, max_steps=12, seed=5, progress=False)
    off = evaluate(policy, num_envs=1, **kw)["episodes"]
    switch = evaluate(BlendedPolicy(policy, "switch", replan_every=4), num_envs=1, **kw)["episodes"]
    assert switch == off
    ensemble = BlendedPolicy(policy, "ensemble", decay=0.5, replan_every=1)
    calls = []
    real = policy.predict_chunk
    policy.predict_chunk = lambda images, ins: calls.append(len(images)) or real(images, ins)
    seq = evaluate(ensemble, num_envs=1, **kw)["episodes"]
    assert calls == [1] * (4 * 12)  # a plan every step
    calls[:] = []
    bat = evaluate(ensemble, num_envs=4, **kw)["episodes"]
    assert calls == [4] * 12  # one forward pass for the 4 environments per step
    assert [e["final_state"] for e in seq] != [e["final_state"] for e in off]
    for a, b in zip(seq, bat):
        assert a["steps"] == b["steps"] and np.allclose(a["final_state"], b["final_state"], atol=1e-4)


def test_chunk_blending_rejects_bad_settings(tmp_path):
    from lapa_learning.errors import ConfigError
    from lapa_learning.vla.chunking import BlendedPolicy
    from lapa_learning.vla.policy import Policy
    from lapa_learning.vla.testing import make_tiny_checkpoint

    policy = Policy.load(make_tiny_checkpoint(tmp_path / "ckpt", chunk_size=4), device="cpu")
    with pytest.raises(ConfigError, match=r"replan every 5 steps \(--replan-every, parameter replan_every\)"):
        BlendedPolicy(policy, "ensemble", replan_every=5)
    with pytest.raises(ConfigError, match="decay"):
        BlendedPolicy(policy, "ensemble", decay=-1)
    ok = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(tmp_path / "ckpt"), "--chunk-blend",
                         "ensemble", "--chunk-decay", "0.2", "--replan-every", "2", "--tasks", "push-v3",
                         "--episodes-per-task", "1", "--max-steps", "3", "--out", str(tmp_path / "ev")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    recorded = json.loads((tmp_path / "ev/results.json").read_text())["chunk_blend"]
    assert recorded == {"blend": "ensemble", "decay": 0.2, "replan_every": 2}
    one = make_tiny_checkpoint(tmp_path / "one")
    res = subprocess.run([sys.executable, "-m", "lapa_learning.cli", "eval", str(one), "--chunk-blend", "ensemble",
                          "--tasks", "push-v3", "--episodes-per-task", "1", "--max-steps", "3"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--chunk-blend ensemble" in res.stderr and "Traceback" not in res.stderr


def test_a_failing_worker_process_is_a_clear_error_not_a_hang(tmp_path):
    """The worker processes load the checkpoint themselves: if that fails (here its weights were truncated after
    this process loaded them), evaluate raises with the worker's own message instead of waiting for episodes
    that never come."""
    from lapa_learning.vla.policy import Policy
    from lapa_learning.vla.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", chunk_size=2, head="discrete", seed=5)
    policy = Policy.load(ckpt, device="cpu")
    weights = next(Path(ckpt).rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    started = time.time()
    with pytest.raises(RuntimeError, match=r"evaluation worker process failed: CheckpointError: .*safetensors"):
        evaluate(policy, ["plate-slide-v3"], episodes_per_task=40, max_steps=150, seed=0, progress=False,
                 num_envs=1, workers=2)
    assert time.time() - started < 120


def test_eval_camera_defaults_to_the_finetuning_data_and_mismatches_are_warned(tmp_path):
    """`lapa eval` films with the camera the policy was finetuned on unless --camera says otherwise, and warns when
    the camera or a task is not one its finetuning data had (a transfer test is allowed, but never silent)."""
    import warnings

    from lapa_learning.data.generate import generate
    from lapa_learning.eval.evaluate import camera_to_evaluate, finetuned_tasks, tasks_to_evaluate, warn_unseen_tasks
    from lapa_learning.sim.metaworld_env import DEFAULT_TASKS

    data = tmp_path / "finetune"
    generate(data, ["reach-v3"], episodes_per_task=1, camera="corner", image_size=32, max_steps=10, progress=False)
    record = {"datasets": [{"root": str(data), "camera": "observation.images.corner"}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert camera_to_evaluate(record, None) == "corner"
        assert finetuned_tasks(record) == ["reach-v3"]  # lapa eval's default --tasks
        warn_unseen_tasks(["reach-v3"], ["reach-v3"])
        both = {"datasets": record["datasets"] + [{"root": str(data), "camera": "corner"}]}
        assert camera_to_evaluate(both, None) == "corner"  # one camera, named two ways
        assert camera_to_evaluate(None, None) == "front"  # nothing recorded
        assert finetuned_tasks(None) is None
        gone = {"datasets": [{"root": str(tmp_path / "elsewhere"), "camera": "observation.images.corner"}]}
        assert camera_to_evaluate(gone, None) == "corner"
        assert finetuned_tasks(gone) is None  # data not here: no task check, the default tasks
        assert tasks_to_evaluate(gone, None) == list(DEFAULT_TASKS) and tasks_to_evaluate(None, None) == list(DEFAULT_TASKS)
        assert tasks_to_evaluate(record, None) == ["reach-v3"] and tasks_to_evaluate(gone, ["push-v3"]) == ["push-v3"]
    with pytest.warns(UserWarning) as caught:
        assert camera_to_evaluate(record, "front") == "front"
        warn_unseen_tasks(finetuned_tasks(record), ["reach-v3", "push-v3"])
    assert [str(w.message) for w in caught] == [
        "--camera front: the policy was finetuned on camera corner",
        "--tasks: the policy was never finetuned on push-v3 (its finetuning data has reach-v3)"]
    real = {"datasets": [{"root": str(tmp_path / "bag"), "camera": "observation.images.camera_color"}]}
    with pytest.warns(UserWarning, match="finetuned on camera camera_color, which the simulator does not have"):
        assert camera_to_evaluate(real, None) == "front"
