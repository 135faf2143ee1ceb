"""Bad command-line input ends with one `lapa: error: ...` line (exit code 2) before anything is created or run:
option values, run-directory locks, resume flags that disagree with the checkpoint."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from lapa_learning.cli import main
from lapa_learning.errors import ConfigError

from cli_helpers import refused


# ---- --threads (every command that has it) --------------------------------------------------------------------

VERBS = {
    "laq train": ["laq", "train", "--data", "D", "--out", "R"],
    "vla pretrain": ["vla", "pretrain", "--data", "D", "--out", "R"],
    "vla finetune": ["vla", "finetune", "--data", "D", "--out", "R"],
    "vla pretrain-vision": ["vla", "pretrain-vision", "--data", "D", "--out", "R"],
    "vpt train": ["vpt", "train", "--data", "D", "--out", "R"],
}
THREAD_VERBS = {**VERBS, "vpt label": ["vpt", "label", "--checkpoint", "C", "--data", "D"]}


@pytest.mark.parametrize("verb", list(THREAD_VERBS))
def test_negative_threads_are_an_argument_error(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*THREAD_VERBS[verb], "--threads", "-1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--threads" in err and "Traceback" not in err


def test_set_threads_refuses_a_negative_count():
    from lapa_learning.cli_args import set_threads

    with pytest.raises(ConfigError, match="--threads -2"):
        set_threads(-2)


# ---- run directory locks --------------------------------------------------------------------------------------

HOLD = ("import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, b'pid %d: lapa vla finetune (test)' % os.getpid())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n")


@pytest.fixture(scope="module")
def held_run(tmp_path_factory):
    """A run directory whose lock another process holds (as a training run would)."""
    run = tmp_path_factory.mktemp("locked") / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield run, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_second_training_process_into_the_same_out_is_refused(verb, held_run, capsys):
    run, _ = held_run
    argv = [str(run) if a == "R" else a for a in VERBS[verb]]
    line = refused(capsys, [*argv, "--max-steps", "2"], f"--out {run}", "another process", "lapa vla finetune")
    assert "wait for it to end" in line
    assert not (run / "checkpoint").exists()


def test_the_lock_is_gone_when_its_process_is_killed(tmp_path):
    from lapa_learning.cli_args import lock_run_dir, release_run_locks

    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match="another process"):
        lock_run_dir(run)
    os.kill(proc.pid, signal.SIGKILL)  # kill -9: the kernel releases the flock, a resume may start at once
    proc.wait()
    try:
        assert lock_run_dir(run) is True
        assert lock_run_dir(run) is False  # held by this process already: re-entrant
        assert f"pid {os.getpid()}" in (run / ".lock").read_text()
    finally:
        release_run_locks()
    other = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(run / ".lock")],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0  # released


# ---- lapa vla pretrain|finetune: TrainConfig, --chunk-size, resume flags ---------------------------------------

@pytest.mark.parametrize("flag,value", [("--eval-samples", "0"), ("--weight-decay", "-0.1"),
                                        ("--warmup-steps", "-1"), ("--seed", "-1"), ("--lr", "nan"),
                                        ("--max-minutes", "nan")])
def test_vla_training_options_are_checked_up_front(flag, value, tmp_path, capsys):
    for verb in ("finetune", "pretrain"):
        refused(capsys, ["vla", verb, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                          flag, value], flag)
    assert not (tmp_path / "run").exists()


def test_train_config_refuses_zero_eval_samples():
    from lapa_learning.vla.trainer import TrainConfig

    with pytest.raises(ConfigError, match="--eval-samples 0"):
        TrainConfig(eval_samples=0)
    with pytest.raises(ConfigError, match="--weight-decay"):
        TrainConfig(weight_decay=-1.0)
    with pytest.raises(ConfigError, match="--warmup-steps"):
        TrainConfig(warmup_steps=-5)
    assert TrainConfig(warmup_steps=0, weight_decay=0.0).warmup_steps == 0


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_a_negative_chunk_size_is_refused_before_loading_data(verb, tmp_path, capsys):
    extra = ["--targets", "actions"] if verb == "pretrain" else []
    refused(capsys, ["vla", verb, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"), *extra,
                      "--chunk-size", "-1"], "--chunk-size -1", ">= 1")
    assert not (tmp_path / "run").exists()


def _fake_run(run, targets: str | None, action: bool = True, chunk_size: int = 1):
    """A run directory as an interrupted `lapa vla pretrain|finetune` leaves it (the model is a random tiny one)."""
    import torch

    from lapa_learning.vla.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(run / "checkpoint", chunk_size=chunk_size)
    torch.save({"step": 2}, ckpt / "training_state.pt")
    if targets is not None:
        record = json.loads((ckpt / "train_record.json").read_text())
        (ckpt / "train_record.json").write_text(json.dumps({**record, "targets": targets}))
    if not action:  # a latent-only run
        meta = json.loads((ckpt / "config.json").read_text())
        meta["vla"]["action"] = None
        (ckpt / "config.json").write_text(json.dumps(meta))
    return run


def test_resume_refuses_other_targets_and_another_action_head(tmp_path, capsys):
    from lapa_learning.cli_args import resolve_head_flags

    latent = _fake_run(tmp_path / "latent", "latents", action=False)
    data = str(tmp_path / "none")
    refused(capsys, ["vla", "pretrain", "--data", data, "--targets", "actions", "--out", str(latent), "--resume"],
             "--targets actions with --resume", "latents", f"--out {latent}")
    refused(capsys, ["vla", "finetune", "--data", data, "--out", str(latent), "--resume"], "no action head")
    actions = _fake_run(tmp_path / "actions", None, chunk_size=1)  # discrete head, chunks of 1
    refused(capsys, ["vla", "finetune", "--data", data, "--out", str(actions), "--resume", "--action-head",
                      "continuous"], "--action-head continuous with --resume", "discrete")
    refused(capsys, ["vla", "finetune", "--data", data, "--out", str(actions), "--resume", "--chunk-size", "4"],
             "--chunk-size 4 with --resume", "chunk size 1")
    refused(capsys, ["vla", "finetune", "--data", data, "--out", str(actions), "--resume", "--gripper",
                      "continuous"], "--gripper continuous with --resume", "a binary gripper")
    fresh_out = tmp_path / "fresh"
    refused(capsys, ["vla", "pretrain", "--data", data, "--targets", "actions", "--shuffle-labels", "--out",
                      str(fresh_out)], "--shuffle-labels: only with --targets latents")
    assert not fresh_out.exists()  # refused before --out is made
    # flags not given take the checkpoint's head; the same values are fine
    args = type("A", (), dict(action_head=None, chunk_size=None, targets=None))()
    resolve_head_flags(args, actions, targets=True)
    assert (args.targets, args.action_head, args.chunk_size) == ("actions", "discrete", 1)
    args = type("A", (), dict(action_head="discrete", chunk_size=1))()
    resolve_head_flags(args, actions)
    fresh = type("A", (), dict(action_head=None, chunk_size=None, targets=None))()
    resolve_head_flags(fresh, None, targets=True)
    assert (fresh.targets, fresh.action_head, fresh.chunk_size) == ("latents", "discrete", 1)


def test_config_help_is_readable(capsys):
    with pytest.raises(SystemExit):
        main(["vla", "finetune", "--help"])
    out = capsys.readouterr().out
    assert "{'" not in out and "tiny-efficientnet on" in " ".join(out.split())


# ---- lapa vpt train, lapa vla pretrain-vision ------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--image-size", "0"), ("--lr", "-1"), ("--offset", "0"), ("--seed", "-1")])
def test_vpt_train_options_are_checked_up_front(flag, value, tmp_path, capsys):
    refused(capsys, ["vpt", "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"), flag, value],
             flag)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value", [("--lr", "0"), ("--val-fraction", "1"), ("--seed", "-3")])
def test_pretrain_vision_options_are_checked_up_front(flag, value, tmp_path, capsys):
    refused(capsys, ["vla", "pretrain-vision", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                      flag, value], flag)


# ---- lapa data generate ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--max-steps", "0"), ("--max-steps", "-3"), ("--max-steps", "501"),
                                        ("--seed", "-1"), ("--action-noise", "nan"), ("--action-noise", "inf"),
                                        ("--camera", "nonsense")])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_generate_checks_its_options_before_creating_the_dataset(flag, value, workers, tmp_path, capsys):
    out = tmp_path / "ds"
    refused(capsys, ["data", "generate", "--out", str(out), "--tasks", "push-v3", "--episodes-per-task", "1",
                      "--workers", workers, flag, value], flag.lstrip("-"))
    assert not out.exists()


# ---- lapa eval --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--max-steps", "0"), ("--max-steps", "1000"), ("--image-size", "0"),
                                        ("--image-size", "15"), ("--image-size", "17"), ("--image-size", "4000"),
                                        ("--seed", "-1"), ("--camera", "nonsense"), ("--replan-every", "0")])
def test_eval_checks_its_options_before_running(flag, value, tmp_path, capsys):
    start = time.time()
    refused(capsys, ["eval", str(tmp_path / "ckpt"), "--tasks", "push-v3", "--out", str(tmp_path / "ev"),
                      flag, value], f"{flag} {value}")
    assert time.time() - start < 30 and not (tmp_path / "ev").exists()


def test_eval_takes_a_camera_video_key_and_checks_the_policy_action_dims(tmp_path, capsys):
    from lapa_learning.sim.metaworld_env import simulator_camera
    from lapa_learning.vla.testing import make_tiny_checkpoint

    assert simulator_camera("observation.images.front") == "front" and simulator_camera("corner2") == "corner2"
    assert simulator_camera(None) is None
    with pytest.raises(ConfigError, match="observation.images.back"):
        simulator_camera("observation.images.back")
    ckpt = make_tiny_checkpoint(tmp_path / "seven", action_dim=7)
    line = refused(capsys, ["eval", str(ckpt), "--tasks", "push-v3", "--episodes-per-task", "1", "--out",
                             str(tmp_path / "ev")], str(ckpt), "7 action dims", "Meta-World", "offline_eval")
    assert "dx, dy, dz, gripper" in line and not (tmp_path / "ev").exists()


def test_eval_results_are_saved_before_the_videos(tmp_path):
    import numpy as np

    from lapa_learning.eval.evaluate import Episode, _results

    frames = [np.zeros((16, 16, 3), np.uint8)] * 3
    episodes = [Episode("push-v3", 0, 1, frames=list(frames), tokens=[None] * 2, success=True, steps=2),
                Episode("push-v3", 1, 3, frames=list(frames), tokens=[None] * 2, success=False, steps=2)]
    seen = []

    def on_results(results):
        seen.append((json.loads(json.dumps(results)), sorted(p.name for p in (tmp_path / "v").glob("*"))))

    results = _results(["push-v3"], episodes, tmp_path / "v", 1, None, {"seed": 0}, on_results)
    (early, videos_then), = seen
    assert videos_then == [] and early["overall"]["episodes"] == 2 and early["tasks"]["push-v3"]["videos"] == []
    assert len(results["tasks"]["push-v3"]["videos"]) == 2 and math.isclose(results["overall"]["success"], 0.5)


def test_a_resumed_finetune_says_what_it_resumes_and_what_it_was_initialised_from(tmp_path, capsys):
    from lapa_learning.vla.testing import make_toy_dataset

    robot = make_toy_dataset(tmp_path / "robot", episodes=4, length=8, image_size=32, seed=0)
    fast = ["--batch-size", "4", "--eval-every", "2", "--eval-samples", "8", "--threads", "1", "--no-progress",
            "--config", "tiny", "--save-every", "2"]
    assert main(["vla", "pretrain", "--data", str(robot), "--out", str(tmp_path / "pre"), "--max-steps", "1",
                 *fast]) == 0
    args = ["vla", "finetune", "--data", str(robot), "--init", str(tmp_path / "pre"), "--out", str(tmp_path / "ft"),
            "--action-head", "continuous", "--chunk-size", "2", *fast]
    assert main([*args, "--max-steps", "2"]) == 0
    capsys.readouterr()
    # the head flags may be repeated as they were, or left out
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(tmp_path / "ft"), "--max-steps", "3", "--resume",
                 *fast]) == 0
    out = capsys.readouterr().out
    assert f"resuming {tmp_path / 'ft'} at step 2 (initialised from {tmp_path / 'pre'})" in out
    assert "from scratch" not in out
    assert main([*args, "--max-steps", "4", "--resume"]) == 0
    rec = json.loads((tmp_path / "ft" / "train_record.json").read_text())
    assert rec["steps"] == 4 and rec["init"] == str(tmp_path / "pre")


def test_a_run_directory_on_a_filesystem_without_locks_trains_with_a_warning(tmp_path, monkeypatch):
    import errno
    import fcntl

    from lapa_learning.cli_args import lock_run_dir, release_run_locks

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    try:
        with pytest.warns(UserWarning, match="cannot lock"):
            assert lock_run_dir(tmp_path / "run") is False
    finally:
        release_run_locks()


def test_offline_eval_scores_every_episode_of_a_held_out_set_and_checks_its_options(tmp_path, capsys):
    from lapa_learning.vla.offline_eval import heldout_action_error
    from lapa_learning.vla.offline_eval import main as offline_eval
    from lapa_learning.vla.testing import make_tiny_checkpoint, make_toy_dataset

    ckpt = make_tiny_checkpoint(tmp_path / "ck")
    data = make_toy_dataset(tmp_path / "d", episodes=3, length=6)
    assert heldout_action_error(ckpt, data, split="all")["episodes"] == 3  # not the val slice of a held-out set
    for bad in (["--val-fraction", "1"], ["--val-fraction", "-0.5"], ["--max-frames", "0"]):
        assert offline_eval(["--checkpoint", str(ckpt), "--data", str(data), *bad]) == 2
        err = capsys.readouterr().err
        assert "offline_eval: error:" in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv,what", [(["demo", "--setting", "foo"], "invalid choice: 'foo'"),
                                       (["vla", "finetune", "--data", "d"], "required: --out"),
                                       (["demo", "--preset", "gpu", "--quick"], "not allowed with argument --preset"),
                                       (["laq", "train", "--data", "d", "--out", "r", "--max-steps", "abc"],
                                        "invalid int value: 'abc'")])
def test_a_bad_option_is_one_error_line_like_every_bad_input(argv, what, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("lapa: error: ") and what in err, err
