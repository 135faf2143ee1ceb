"""`lapa vla pretrain|finetune --resume` continues the run in --out as it was: other data, another model or
optimizer option, or a broken training state is one `lapa: error:` line naming what differs (not a silent change,
a train_record.json that lies, or a crash deep in torch); options that apply on resume stay allowed, and options
not given take the run's values. Also `finetune --val-data` equal to --data and `finetune --init` with flags that
would build another model."""

import json
import shutil

import numpy as np
import pytest
import torch

from lapa_learning.cli import main
from lapa_learning.vla.testing import make_tiny_checkpoint, make_toy_dataset

from cli_helpers import refused

FAST = ["--batch-size", "4", "--eval-every", "2", "--eval-samples", "8", "--threads", "1", "--no-progress",
        "--config", "tiny", "--save-every", "2"]


def _record(run) -> dict:
    return json.loads((run / "train_record.json").read_text())


def _relabel(root, names, episodes: int = 4, length: int = 8):
    """Rewrite the dataset at `root` with these action names (random frames and actions)."""
    from lapa_learning.data.writer import EpisodeWriter

    rng = np.random.default_rng(0)
    w = EpisodeWriter(root, fps=10, image_size=(32, 32), action_names=names, mode="overwrite")
    for _ in range(episodes):
        acts = rng.uniform(-1, 1, (length, len(names))).astype(np.float32)
        w.add_episode(rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8), "push the block", actions=acts)
    w.close()
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finetuning run and a (shuffled-label) latent pretraining run, each stopped at step 2."""
    root = tmp_path_factory.mktemp("resume")
    robot = make_toy_dataset(root / "robot", episodes=4, length=8, image_size=32, seed=0)
    other = make_toy_dataset(root / "other", episodes=4, length=8, image_size=32, seed=1)
    ft = root / "ft"
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(ft), "--max-steps", "2", "--lr", "1e-3",
                 "--seed", "3", *FAST]) == 0
    pre = root / "pre"
    assert main(["vla", "pretrain", "--data", str(robot), "--out", str(pre), "--max-steps", "2", "--shuffle-labels",
                 *FAST]) == 0
    return dict(robot=robot, other=other, ft=ft, pre=pre)


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / run.name)


def test_resume_refuses_other_model_and_optimizer_options(runs, capsys):
    ft = ["vla", "finetune", "--data", str(runs["robot"]), "--out", str(runs["ft"]), "--resume", *FAST]
    for extra, words in [(["--lr", "0.05", "--warmup-steps", "0"], ["--lr 0.05 with --resume", "--lr 0.001"]),
                         (["--weight-decay", "0.5"], ["--weight-decay 0.5", "0.01"]),
                         (["--seed", "5"], ["--seed 5", "--seed 3"]),
                         (["--seed", "0"], ["--seed 0", "--seed 3"]),  # the default, but given: not ignored
                         (["--val-fraction", "0.5"], ["--val-fraction 0.5", "0.1"]),
                         (["--config", "tiny-resnet"], ["--config tiny-resnet with --resume", "--config tiny"]),
                         (["--lora-rank", "4"], ["--lora-rank 4", "--lora-rank 0"]),
                         (["--lm-path", "some/lm"], ["--lm-path some/lm", "(none)"]),
                         (["--init", str(runs["pre"])], ["--init", "(none)"]),
                         (["--freeze-lm"], ["--freeze-lm with --resume", "optimizer state"]),
                         (["--freeze-vision"], ["--freeze-vision with --resume", "a trained vision tower"]),
                         (["--max-steps", "1"], ["--max-steps 1 with --resume", "step 2"])]:
        refused(capsys, ft + extra, *words)
    pre = ["vla", "pretrain", "--data", str(runs["robot"]), "--out", str(runs["pre"]), "--resume", *FAST]
    refused(capsys, pre + ["--lr", "0.05"], "--lr 0.05 with --resume", "0.0003")
    refused(capsys, pre + ["--freeze-lm"], "--freeze-lm with --resume")
    assert _record(runs["ft"])["steps"] == 2 and _record(runs["pre"])["steps"] == 2  # untouched


def test_resume_takes_the_runs_values_of_options_not_given_and_records_them(runs, tmp_path):
    ft = _copy(runs["ft"], tmp_path)
    assert main(["vla", "finetune", "--data", str(runs["robot"]), "--out", str(ft), "--resume", "--max-steps", "3",
                 "--warmup-steps", "0", *FAST]) == 0  # an option that applies on resume
    rec = _record(ft)
    assert rec["steps"] == 3 and rec["resumed_at_step"] == 2
    assert (rec["train_config"]["lr"], rec["train_config"]["seed"], rec["train_config"]["warmup_steps"]) == (1e-3, 3, 0)
    pre = _copy(runs["pre"], tmp_path)
    assert main(["vla", "pretrain", "--data", str(runs["robot"]), "--out", str(pre), "--resume", "--max-steps", "3",
                 *FAST]) == 0
    assert _record(pre)["shuffled_labels"] is True  # the run's, not dropped by leaving out --shuffle-labels


def test_resume_refuses_other_data(runs, tmp_path, capsys):
    robot, other = str(runs["robot"]), str(runs["other"])
    for verb in ("finetune", "pretrain"):
        args = ["vla", verb, "--out", str(runs["ft" if verb == "finetune" else "pre"]), "--resume", *FAST]
        refused(capsys, args + ["--data", other], f"--data {other} with --resume", f"trained with --data {robot}")
        refused(capsys, args + ["--data", robot, "--data", other], f"--data {robot} {other} with --resume")
    ft = ["vla", "finetune", "--data", robot, "--out", str(runs["ft"]), "--resume", *FAST]
    refused(capsys, ft + ["--val-data", other], f"--val-data {other} with --resume", "--val-data (none)")
    # the same path with other contents: fewer episodes (its sampler order would index past them), other actions
    ft = _copy(runs["ft"], tmp_path)
    data = shutil.copytree(runs["robot"], tmp_path / "robot")
    args = ["vla", "finetune", "--data", str(data), "--out", str(ft), "--resume", *FAST]
    record = _record(ft)
    record["datasets"][0]["root"] = str(data)
    for name in ("train_record.json", "checkpoint/train_record.json"):
        (ft / name).write_text(json.dumps(record))
    _relabel(data, ("dx", "dy", "dz", "gripper"), episodes=2)
    refused(capsys, args, f"--data {data} with --resume", "episodes is 2", "episodes 4")
    _relabel(data, ("vx", "vy", "wz", "gripper"))
    refused(capsys, args, "--data actions ['vx', 'vy', 'wz', 'gripper'] with --resume", "'dx', 'dy', 'dz'")
    assert _record(ft)["steps"] == 2


def test_a_training_state_without_an_entry_is_a_checkpoint_error(runs, tmp_path, capsys):
    ft = _copy(runs["ft"], tmp_path)
    path = ft / "checkpoint" / "training_state.pt"
    state = torch.load(path, weights_only=False)
    del state["optimizer"]
    torch.save(state, path)
    refused(capsys, ["vla", "finetune", "--data", str(runs["robot"]), "--out", str(ft), "--resume", *FAST],
             str(path), "'optimizer'")


def test_val_data_may_not_be_the_training_data(runs, tmp_path, capsys):
    robot = runs["robot"]
    for val in (robot, robot / "." / ".." / robot.name):
        refused(capsys, ["vla", "finetune", "--data", str(robot), "--val-data", str(val), "--out",
                          str(tmp_path / "ft"), *FAST], f"--val-data {val} is --data itself")
    assert not (tmp_path / "ft").exists()


def test_finetune_init_refuses_flags_that_build_another_model(runs, tmp_path, capsys):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    args = ["vla", "finetune", "--data", str(runs["robot"]), "--init", str(ckpt), "--out", str(tmp_path / "ft"),
            *FAST]
    refused(capsys, args + ["--config", "tiny-resnet"], "--config tiny-resnet with --init", "a tiny model")
    for flag in ("--vision-path", "--lm-path"):
        refused(capsys, args + [flag, "some/model"], f"{flag} with --init", "comes from the checkpoint")
    refused(capsys, args + ["--lora-rank", "2"], "--lora-rank with --init")
