"""End to end: `lapa vla pretrain` (latents, several datasets; true actions) -> `lapa vla finetune` -> Policy."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from lapa_learning.cli import main
from lapa_learning.vla.policy import Policy
from lapa_learning.vla.testing import make_toy_dataset

FAST = ["--batch-size", "8", "--eval-every", "5", "--eval-samples", "32", "--threads", "1", "--no-progress",
        "--config", "tiny"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vla_data")
    robot = make_toy_dataset(root / "robot", episodes=6, length=12, image_size=32, seed=0)
    video = make_toy_dataset(root / "video", episodes=4, length=12, image_size=32, with_actions=False, seed=1)
    return robot, video


@pytest.mark.slow
def test_pretrain_finetune_policy(data, tmp_path):
    robot, video = data
    pre = tmp_path / "pre"
    assert main(["vla", "pretrain", "--data", str(video), "--data", str(robot), "--out", str(pre),
                 "--max-steps", "10", *FAST]) == 0
    rec = json.loads((pre / "train_record.json").read_text())
    assert rec["steps"] == 10 and len(rec["datasets"]) == 2 and "latent_token_accuracy" in rec["metrics"]
    assert "majority_baseline_accuracy" in rec and (pre / "tensorboard").is_dir()
    assert rec["laq"] == "make_toy_dataset"  # the labels' source (an LAQ checkpoint, from `lapa laq label`)
    ft = tmp_path / "ft"
    assert main(["vla", "finetune", "--data", str(robot), "--init", str(pre), "--out", str(ft),
                 "--max-steps", "10", *FAST]) == 0
    rec = json.loads((ft / "checkpoint" / "train_record.json").read_text())
    assert rec["stage"] == "finetune" and rec["init"] == str(pre) and "action_token_accuracy" in rec["metrics"]
    assert rec["laq"] == "make_toy_dataset"  # carried on from --init, for LatentPreview
    assert len(rec["metrics"]["action_l1_per_dim"]) == 4 and rec["metrics"]["action_l1"] >= 0
    # the pretrained latent head is kept (frozen) in the finetuned checkpoint
    w_pre = load_file(str(pre / "checkpoint" / "model.safetensors"))
    w_ft = load_file(str(ft / "checkpoint" / "model.safetensors"))
    np.testing.assert_array_equal(w_pre["latent_head.weight"], w_ft["latent_head.weight"])
    assert not np.array_equal(w_pre["projector.0.weight"], w_ft["projector.0.weight"])
    pol = Policy.load(ft, device="cpu")
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    a = pol.act(img, "move the square to the red dot")
    assert a.values.shape == (4,) and a.latent_tokens.shape == (2,) and pol.codebook_size == 4
    # open-loop error on the held-out episodes, through the Policy
    from lapa_learning.vla.offline_eval import heldout_action_error

    err = heldout_action_error(ft, robot, val_fraction=0.1, seed=0)
    assert err["episodes"] == 1 and set(err["action_l1_per_dim"]) == {"dx", "dy", "dz", "gripper"}
    # save/load gives the same actions
    again = Policy.load(ft / "checkpoint", device="cpu").act(img, "move the square to the red dot")
    np.testing.assert_array_equal(a.values, again.values)
    np.testing.assert_array_equal(a.latent_tokens, again.latent_tokens)


@pytest.mark.slow
def test_scratch_and_actionvla_and_continuous_chunks(data, tmp_path):
    robot, _ = data
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(tmp_path / "scratch"),
                 "--action-head", "continuous", "--chunk-size", "3", "--max-steps", "6", *FAST]) == 0
    pol = Policy.load(tmp_path / "scratch", device="cpu")
    assert pol.chunk_size == 3 and pol.num_latent_tokens is None
    assert [pol.act(np.zeros((32, 32, 3), np.uint8), "push").chunk_index for _ in range(4)] == [0, 1, 2, 0]
    # ActionVLA: pretrain on true actions, then finetune keeps the (matching) action head
    assert main(["vla", "pretrain", "--data", str(robot), "--targets", "actions", "--out", str(tmp_path / "av"),
                 "--max-steps", "6", *FAST]) == 0
    assert main(["vla", "finetune", "--data", str(robot), "--init", str(tmp_path / "av"),
                 "--out", str(tmp_path / "av_ft"), "--max-steps", "1", "--lr", "1e-9", "--warmup-steps", "1",
                 *FAST]) == 0
    w0 = load_file(str(tmp_path / "av" / "checkpoint" / "model.safetensors"))
    w1 = load_file(str(tmp_path / "av_ft" / "checkpoint" / "model.safetensors"))
    np.testing.assert_allclose(w0["action_head.weight"], w1["action_head.weight"], atol=1e-6)


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(data, tmp_path):
    robot, _ = data
    args = ["vla", "finetune", "--data", str(robot), "--max-steps", "8", "--save-every", "4", *FAST]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    half = args[:]
    half[half.index("--max-steps") + 1] = "4"
    assert main(half + ["--out", str(tmp_path / "part")]) == 0
    assert main(args + ["--out", str(tmp_path / "part"), "--resume"]) == 0
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
    rec = json.loads((tmp_path / "part" / "train_record.json").read_text())
    assert rec["steps"] == 8 and rec["resumed_at_step"] == 4


@pytest.mark.slow
def test_a_resumed_finetune_keeps_what_its_init_was(data, tmp_path):
    robot, video = data
    assert main(["vla", "pretrain", "--data", str(video), "--out", str(tmp_path / "pre"), "--max-steps", "2",
                 *FAST]) == 0
    args = ["vla", "finetune", "--data", str(robot), "--init", str(tmp_path / "pre"), "--out", str(tmp_path / "ft"),
            "--save-every", "2", *FAST]
    assert main(args + ["--max-steps", "2"]) == 0
    assert main(args + ["--max-steps", "4", "--resume"]) == 0
    rec = json.loads((tmp_path / "ft" / "train_record.json").read_text())
    assert rec["resumed_at_step"] == 2 and rec["init"] == str(tmp_path / "pre")
    assert rec["laq"] == "make_toy_dataset" and rec["init_record"]["stage"] == "pretrain"  # LatentPreview's LAQ


def test_cli_errors(data, tmp_path, capsys):
    robot, video = data
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(tmp_path / "run"), *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(tmp_path / "r2"), "--resume", *FAST]) == 2
    assert "training_state.pt" in capsys.readouterr().err
    assert main(["vla", "finetune", "--data", str(video), "--out", str(tmp_path / "r3"), *FAST]) == 2
    assert "action-free" in capsys.readouterr().err
    assert main(["vla", "pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r4"), *FAST]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["vla", "finetune", "--data", str(robot), "--init", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "r5"), *FAST]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(tmp_path / "r6"), "--max-steps", "0",
                 *FAST]) == 2
    assert "--max-steps" in capsys.readouterr().err


def test_a_continuous_last_action_dim_is_not_made_a_binary_gripper(tmp_path):
    """7 joint positions, the last a smooth sweep: `--gripper auto` keeps it continuous (it is not named gripper and
    takes many values), so the policy can output values between its extremes; a named gripper stays binary."""
    from lapa_learning.data.writer import EpisodeWriter
    from lapa_learning.vla.processor_vla import ActionProcessor, gripper_binary_for

    rng = np.random.default_rng(0)
    names = tuple(f"joint{i}" for i in range(7))
    w = EpisodeWriter(tmp_path / "joints", fps=10, image_size=(32, 32), action_names=names, mode="overwrite")
    for e in range(3):
        acts = rng.normal(size=(10, 7)).astype(np.float32)
        acts[:, -1] = np.linspace(-90, 90, 10)
        w.add_episode(rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), "wave the arm", actions=acts)
    w.close()
    out = tmp_path / "ft"
    assert main(["vla", "finetune", "--data", str(tmp_path / "joints"), "--out", str(out), "--max-steps", "2",
                 "--warmup-steps", "1", "--val-fraction", "0", *FAST]) == 0
    pol = Policy.load(out, device="cpu")
    assert not pol.actions.gripper_binary and not pol.model.config.action.gripper_binary
    mid = pol.actions.from_tokens(np.full((1, 7), 128))[0, -1]  # the middle bin of the joint sweep
    assert -90 < mid < 90
    # auto: a dim named gripper, or one with two values, is binary; the flag overrides
    acts = rng.normal(size=(20, 4))
    assert gripper_binary_for(acts, ("dx", "dy", "dz", "gripper"))
    assert not gripper_binary_for(acts, ("a", "b", "c", "d")) and gripper_binary_for(acts, ("a",) * 4, "binary")
    acts[:, -1] = np.where(acts[:, -1] > 0, 0.04, 0.0)
    assert gripper_binary_for(acts, ("a", "b", "c", "d")) and not gripper_binary_for(acts, ("a",) * 4, "continuous")
    proc = ActionProcessor.fit(rng.normal(size=(50, 4)), ("a", "b", "c", "d"), gripper_binary=False)
    assert len(np.unique(proc.unnormalize(rng.normal(size=(20, 4)).astype(np.float32))[:, -1])) == 20


@pytest.mark.slow
def test_a_policy_knows_the_action_scales_its_teleop_data_was_recorded_with(tmp_path, capsys):
    """policy_node compares them with its own linear_scale/angular_scale (lapa_ros.safety.scale_mismatch)."""
    from lapa_learning.vla.policy import data_action_scales

    scales = {"linear_scale": 0.1, "angular_scale": 0.5, "action_limit": 1.0}
    teleop = make_toy_dataset(tmp_path / "teleop", episodes=4, length=10, image_size=32, seed=4)
    info_path = teleop / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["lapa"]["action_scales"] = scales  # as recorder_node and import-bag write it
    info_path.write_text(json.dumps(info))
    assert main(["vla", "finetune", "--data", str(teleop), "--out", str(tmp_path / "ft"), "--max-steps", "2",
                 *FAST]) == 0
    assert Policy.load(tmp_path / "ft", device="cpu").action_scales == scales
    # a second set recorded with other scales: one action would mean two velocities, refused
    other = make_toy_dataset(tmp_path / "other", episodes=2, length=10, image_size=32, seed=5)
    info = json.loads((other / "meta" / "info.json").read_text())
    info["lapa"]["action_scales"] = {**scales, "linear_scale": 0.8}
    (other / "meta" / "info.json").write_text(json.dumps(info))
    assert main(["vla", "finetune", "--data", str(teleop), "--data", str(other), "--out", str(tmp_path / "mixed"),
                 "--max-steps", "2", *FAST]) == 2
    # a set without recorded scales next to one with them trains, with a warning
    plain = make_toy_dataset(tmp_path / "plain", episodes=2, length=10, image_size=32, seed=6)
    capsys.readouterr()
    assert main(["vla", "finetune", "--data", str(teleop), "--data", str(plain), "--out", str(tmp_path / "mix2"),
                 "--max-steps", "2", *FAST]) == 0
    err = capsys.readouterr().err
    assert "lapa: warning: " in err and "recorded no action scales" in err, err
    assert Policy.load(tmp_path / "mix2", device="cpu").action_scales is None
    # sets that did not record them, or that differ, give no scales
    assert data_action_scales({"datasets": [{"action_scales": scales}, {"action_scales": None}]}) is None
    assert data_action_scales({"datasets": [{"action_scales": scales},
                                            {"action_scales": {**scales, "linear_scale": 0.2}}]}) is None
    assert data_action_scales(None) is None and data_action_scales({"datasets": []}) is None
