"""Run directories of `lapa vla pretrain|finetune|pretrain-vision` lose nothing by accident: --overwrite replaces a
run only when the new one saves, --init inside --out and an --out that is a checkpoint are refused, a save killed
between its two renames is undone (io.recover_replaced_dir; a reader reads it where it is), and every file of a checkpoint gets the usual mode."""

import json
import os
import shutil
import signal
import subprocess
import sys
from argparse import Namespace

import pytest
import torch

from lapa_learning import io
from lapa_learning.cli import main
from lapa_learning.cli_args import prepare_run_dir, release_run_locks
from lapa_learning.errors import CheckpointError, ConfigError
from lapa_learning.vla.checkpoint import load_checkpoint
from lapa_learning.vla.testing import make_tiny_checkpoint, make_toy_dataset

torch.set_num_threads(1)

FAST = ["--batch-size", "8", "--eval-every", "5", "--eval-samples", "16", "--threads", "1", "--no-progress",
        "--config", "tiny", "--max-steps", "2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(toy robot dataset, a finished 2-step finetune run on it)."""
    root = tmp_path_factory.mktemp("rundir")
    robot = make_toy_dataset(root / "robot", episodes=4, length=12, image_size=32, seed=0)
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(root / "run"), *FAST]) == 0
    return robot, root / "run"


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, for a test to damage."""
    return shutil.copytree(finished[1], tmp_path / "run")


def _snapshot(run):
    """Every file of a run but its lock file (which names the last process that locked it)."""
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_overwrite_keeps_the_old_run_until_the_new_one_saves(finished, run, tmp_path, capsys):
    robot, before = finished[0], _snapshot(run)
    assert main(["vla", "finetune", "--data", str(tmp_path / "missing"), "--out", str(run), "--overwrite",
                 *FAST]) == 2
    assert "missing" in capsys.readouterr().err and _snapshot(run) == before
    if not torch.cuda.is_available():
        assert main(["vla", "finetune", "--data", str(robot), "--out", str(run), "--overwrite", "--device", "cuda",
                     *FAST]) == 2
        assert "CUDA" in capsys.readouterr().err and _snapshot(run) == before
    assert not io._STALE  # the tensorboard events a refused run would have deleted at its first save: forgotten
    old_events = set((run / "tensorboard").iterdir())
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(run), "--overwrite", *FAST,
                 "--max-steps", "3"]) == 0
    assert json.loads((run / "train_record.json").read_text())["steps"] == 3
    events = set((run / "tensorboard").iterdir())
    assert len(events) == 1 and not events & old_events  # one run's curves, the new one's


def test_init_inside_out_is_refused_before_anything_is_touched(finished, run, capsys):
    robot, before = finished[0], _snapshot(run)
    for verb, init in (("finetune", run), ("finetune", run / "checkpoint"), ("pretrain", run)):
        assert main(["vla", verb, "--data", str(robot), "--init", str(init), "--out", str(run), "--overwrite",
                     *FAST]) == 2
        assert f"--init {init} is in --out {run}" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_an_out_that_is_a_checkpoint_directory_is_refused(finished, run, capsys):
    robot, before = finished[0], _snapshot(run)
    for verb in (["finetune", *FAST], ["pretrain-vision", "--config", "tiny-resnet", "--max-steps", "1",
                                       "--batch-size", "4", "--offset-frames", "3", "--no-progress"]):
        assert main(["vla", verb[0], "--data", str(robot), "--out", str(run / "checkpoint"), *verb[1:]]) == 2
        err = capsys.readouterr().err
        assert "a checkpoint directory" in err and f"its run directory ({run})" in err
    assert _snapshot(run) == before and not (run / "checkpoint" / ".lock").exists()


KILLED_BETWEEN_RENAMES = r"""
import os, signal, sys
from lapa_learning import io
replace = os.replace
def killed_after_old_away(src, dst):
    replace(src, dst)
    if str(dst).endswith(".old"):
        os.kill(os.getpid(), signal.SIGKILL)
io.os.replace = killed_after_old_away
for version in ("old", "new"):
    with io.atomic_path(sys.argv[1], directory=True) as tmp:
        (tmp / "version").write_text(version)
"""


def test_a_directory_save_killed_between_its_renames_is_put_back(tmp_path):
    target = tmp_path / "checkpoint"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(target)], env=env, timeout=60)
    assert child.returncode == -signal.SIGKILL and not target.exists()
    (tmp_path / ".checkpoint.abcd1234.old").mkdir()  # a save killed after mkdtemp: empty, ignored
    with pytest.warns(UserWarning, match=r"checkpoint: missing after an interrupted save; restored .*\.old"):
        assert io.recover_replaced_dir(target) == target
    assert (target / "version").read_text() == "old" and os.listdir(tmp_path) == ["checkpoint"]
    assert io.recover_replaced_dir(target) is None  # nothing to do
    shutil.rmtree(target)
    (tmp_path / ".checkpoint.abcd1234.old").mkdir()
    assert io.recover_replaced_dir(target) is None  # only an empty .old: nothing to put back


def test_a_successful_directory_save_removes_what_killed_saves_left(tmp_path):
    left = [".checkpoint.abcd1234.tmp", ".checkpoint.efgh_567.old"]
    others = [".checkpoint.x.tmp", ".checkpoint2.abcd1234.tmp"]  # not temporaries of `checkpoint`
    for name in left + others:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    with io.atomic_path(tmp_path / "checkpoint", directory=True) as tmp:
        (tmp / "a").write_text("1")
    assert sorted(os.listdir(tmp_path)) == sorted(others + ["checkpoint"])


def test_a_run_whose_save_was_killed_resumes_and_loads(run):
    """The state a save killed between its renames leaves: no checkpoint/, the last complete one as
    .checkpoint.*.old, the new one (complete or not) as .checkpoint.*.tmp."""
    def kill_mid_save(run):
        os.replace(run / "checkpoint", run / ".checkpoint.abcd1234.old")
        (run / ".checkpoint.efgh5678.tmp").mkdir()
        (run / ".checkpoint.efgh5678.tmp" / "config.json").write_text("{")

    original = _snapshot(run)
    kill_mid_save(run)
    args = Namespace(out=run, resume=True, overwrite=False, init=None)
    try:
        with pytest.warns(UserWarning, match="restored"):
            assert prepare_run_dir(args)[1]["step"] == 2  # --resume finds it
        with pytest.raises(ConfigError, match="already holds a run"):  # a plain rerun does not start afresh
            prepare_run_dir(Namespace(out=run, resume=False, overwrite=False, init=None))
    finally:
        release_run_locks()
    assert _snapshot(run) == original and not [p for p in os.listdir(run) if p.startswith(".checkpoint")]
    kill_mid_save(run)
    left = sorted(os.listdir(run))
    with pytest.warns(UserWarning, match="loading the last complete checkpoint from .*checkpoint.abcd1234.old"):
        assert load_checkpoint(run)[4]["steps"] == 2  # as Policy.load does: read where it is, nothing moved
    assert sorted(os.listdir(run)) == left


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=oct)
def test_every_file_and_folder_of_a_written_directory_gets_the_usual_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        with io.atomic_path(tmp_path / "checkpoint", directory=True) as tmp:
            os.close(os.open(tmp / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600))  # as safetensors does
            (tmp / "sub").mkdir(mode=0o700)
            os.close(os.open(tmp / "sub" / "x", os.O_WRONLY | os.O_CREAT, 0o600))
    finally:
        os.umask(old)
    mode = lambda p: (tmp_path / "checkpoint" / p).stat().st_mode & 0o777  # noqa: E731
    assert mode(".") == mode("sub") == 0o777 & ~umask
    assert mode("model.safetensors") == mode("sub/x") == 0o666 & ~umask


def test_a_saved_checkpoint_s_weights_are_readable_by_other_users(tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "ck")  # safetensors creates model.safetensors 0600
    assert (ck / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~io._umask()


def test_a_training_record_that_is_not_an_object_is_a_checkpoint_error(tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "ck")
    (ck / "train_record.json").write_text("[1]")
    with pytest.raises(CheckpointError, match=r"train_record.json: expected a JSON object"):
        load_checkpoint(ck)
