"""The VPT baseline: `lapa vpt train` (inverse dynamics) -> `lapa vpt label` -> `lapa vla pretrain --targets
pseudo-actions`, the pseudo-action file format, the shuffled-latent control, and the error paths."""

import json

import numpy as np
import pytest
import torch

from lapa_learning.cli import main
from lapa_learning.errors import DatasetError
from lapa_learning.vla.testing import make_toy_dataset
from lapa_learning.vpt.pseudo_actions import FILE_NAME, PseudoActions, save_pseudo_actions

FAST = ["--max-steps", "300", "--eval-every", "300", "--image-size", "32", "--offset", "3", "--no-progress",
        "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vpt")
    return (make_toy_dataset(root / "robot", episodes=24, length=16, image_size=32, seed=0),
            make_toy_dataset(root / "check", episodes=4, length=20, image_size=32, seed=2),
            make_toy_dataset(root / "video", episodes=3, length=12, image_size=32, with_actions=False, seed=1))


@pytest.fixture(scope="module")
def idm(data, tmp_path_factory):
    robot, check, _ = data
    run = tmp_path_factory.mktemp("idm") / "run"
    assert main(["vpt", "train", "--data", str(robot), "--val-data", str(check),
                 "--out", str(run), *FAST]) == 0
    return run


@pytest.mark.slow
def test_idm_trains_on_every_episode_and_its_pseudo_labels_track_the_true_actions(data, idm):
    robot, check, _ = data
    rec = json.loads((idm / "checkpoint" / "train_record.json").read_text())
    assert len(rec["train_episodes"]) == 24 and rec["val_datasets"] == [str(check)] and rec["val_fraction"] == 0
    assert rec["metrics"]["l1"] < 0.7 * rec["metrics"]["mean_baseline_l1"]
    # label a dataset that has actions, and compare with them
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(check), "--no-progress"]) == 0
    from lapa_learning.data.reader import EpisodeDataset

    labels, ds = PseudoActions.load(check), EpisodeDataset(check)
    pred = np.concatenate([labels.actions(e.index, e.length) for e in ds.episodes])
    true = np.concatenate([ds.actions(e.index) for e in ds.episodes])
    r = [np.corrcoef(pred[:, d], true[:, d])[0, 1] for d in (0, 1, 3)]  # dx, dy, gripper (dz is always 0)
    assert np.mean(r[:2]) > 0.3 and r[2] > 0.5, r
    assert labels.action_names == ("dx", "dy", "dz", "gripper") and labels.offset == 3


@pytest.mark.slow
def test_vla_pretrains_on_pseudo_actions_of_action_free_videos(data, idm, tmp_path):
    _, _, video = data
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(video), "--no-progress"]) == 0
    assert (video / FILE_NAME).is_file()
    pre = tmp_path / "pre"
    assert main(["vla", "pretrain", "--data", str(video), "--targets", "pseudo-actions", "--action-head",
                 "continuous", "--chunk-size", "4", "--out", str(pre), "--config", "tiny", "--max-steps", "3",
                 "--batch-size", "8", "--no-progress", "--threads", "1"]) == 0
    rec = json.loads((pre / "train_record.json").read_text())
    assert rec["targets"] == "pseudo-actions" and rec["kind"] == "continuous" and rec["steps"] == 3


def test_pseudo_action_file_round_trip_and_shape_checks(tmp_path):
    a = {0: np.arange(12, dtype=np.float32).reshape(3, 4), 2: np.ones((2, 4), np.float32)}
    save_pseudo_actions(tmp_path, a, ["dx", "dy", "dz", "gripper"], offset=4, source="idm")
    back = PseudoActions.load(tmp_path)
    np.testing.assert_array_equal(back.actions(0, 3), a[0])
    assert back.offset == 4 and back.source == "idm"
    with pytest.raises(DatasetError, match="episode 2 has 5 frames"):
        back.actions(2, 5)  # the dataset's episode is longer than what was labelled
    with pytest.raises(DatasetError, match="expected"):
        save_pseudo_actions(tmp_path, {0: np.ones((3, 2))}, ["dx", "dy", "dz", "gripper"], 4, "idm")
    (tmp_path / FILE_NAME).write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="not readable"):
        PseudoActions.load(tmp_path)


def test_shuffled_latent_labels_keep_the_marginal_and_lose_the_pairing():
    from lapa_learning.vla.data import SampleSet
    from lapa_learning.vla.pretrain import shuffle_latent_labels

    s = SampleSet()
    s.latent = np.random.default_rng(0).integers(0, 8, (500, 4))
    before = s.latent.copy()
    s.t = list(range(500))
    shuffle_latent_labels([s], seed=0)
    assert sorted(map(tuple, s.latent)) == sorted(map(tuple, before))
    assert (s.latent == before).all(1).mean() < 0.1


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_errors(data, tmp_path, capsys):
    robot, _, video = data
    err = _error(capsys, ["vpt", "train", "--data", str(video), "--out", str(tmp_path / "r"), *FAST])
    assert "action-free dataset" in err and str(video) in err
    err = _error(capsys, ["vpt", "train", "--data", str(robot), "--val-data", str(robot), "--out",
                          str(tmp_path / "r"), *FAST])  # "held-out" frames that are training frames
    assert f"--val-data {robot} is --data itself" in err and not (tmp_path / "r").exists()
    err = _error(capsys, ["vpt", "label", "--checkpoint", str(tmp_path / "nothing"), "--data", str(video)])
    assert "lapa vpt train" in err and "nothing" in err
    # a checkpoint of another kind, and a truncated weights file
    ck = tmp_path / "bad" / "checkpoint"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text(json.dumps({"format": "lapa_vla"}))
    assert "not an IDM checkpoint" in _error(capsys, ["vpt", "label", "--checkpoint", str(tmp_path / "bad"),
                                                      "--data", str(video)])
    from lapa_learning.vpt.checkpoint import save_idm
    from lapa_learning.vpt.model import IDMConfig, InverseDynamicsModel

    save_idm(tmp_path / "cut", InverseDynamicsModel(IDMConfig(image_size=32)), {})
    w = tmp_path / "cut" / "checkpoint" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    assert "corrupt or truncated" in _error(capsys, ["vpt", "label", "--checkpoint", str(tmp_path / "cut"),
                                                     "--data", str(video)])
    # weights of another shape than the config says
    save_idm(tmp_path / "other", InverseDynamicsModel(IDMConfig(image_size=32, hidden_dim=64)), {})
    cfg = tmp_path / "other" / "checkpoint" / "config.json"
    meta = json.loads(cfg.read_text())
    meta["idm"]["hidden_dim"] = 128
    cfg.write_text(json.dumps(meta))
    assert "does not match" in _error(capsys, ["vpt", "label", "--checkpoint", str(tmp_path / "other"),
                                               "--data", str(video)])
    # pretraining on pseudo-actions that were never written, or with the shuffle control on actions
    err = _error(capsys, ["vla", "pretrain", "--data", str(robot), "--targets", "pseudo-actions",
                          "--out", str(tmp_path / "p"), "--config", "tiny"])
    assert "lapa vpt label" in err
    err = _error(capsys, ["vla", "pretrain", "--data", str(robot), "--targets", "actions", "--shuffle-labels",
                          "--out", str(tmp_path / "p2"), "--config", "tiny"])
    assert "--shuffle-labels" in err
    assert "--offset 0" in _error(capsys, ["vpt", "train", "--data", str(robot), "--out", str(tmp_path / "o"),
                                           "--offset", "0"])
    assert "--max-steps 0: expected >= 1" in _error(capsys, ["vpt", "train", "--data", str(robot), "--out",
                                                             str(tmp_path / "m"), "--max-steps", "0"])
    # --init with flags that would build another model
    vis = tmp_path / "vis"
    assert main(["vla", "pretrain-vision", "--data", str(robot), "--out", str(vis), "--config", "tiny-resnet",
                 "--offset-frames", "3", "--max-steps", "1", "--batch-size", "4", "--no-progress"]) == 0
    err = _error(capsys, ["vla", "pretrain", "--data", str(robot), "--init", str(vis), "--config", "tiny",
                          "--out", str(tmp_path / "p3")])
    assert "--config tiny with --init" in err and "tiny-resnet" in err
    assert "--lora-rank" in _error(capsys, ["vla", "pretrain", "--data", str(robot), "--init", str(vis),
                                            "--lora-rank", "4", "--out", str(tmp_path / "p4")])
    assert "missing: no such directory" in _error(capsys, ["vla", "pretrain", "--data", str(robot), "--init",
                                                           str(tmp_path / "missing"), "--out", str(tmp_path / "p5")])
    assert "--batch-size 0: expected >= 1" in _error(capsys, ["vla", "pretrain-vision", "--data", str(video),
                                                              "--out", str(tmp_path / "v"), "--batch-size", "0"])


@pytest.mark.slow
def test_vision_control_and_finetuning_on_every_labelled_episode(data, tmp_path):
    robot, check, video = data
    vis = tmp_path / "vision"
    assert main(["vla", "pretrain-vision", "--data", str(robot), "--out", str(vis), "--config", "tiny-resnet",
                 "--offset-frames", "3", "--max-steps", "60", "--batch-size", "16", "--no-progress",
                 "--threads", "1"]) == 0
    rec = json.loads((vis / "train_record.json").read_text())
    assert rec["stage"] == "pretrain-vision" and rec["metrics"]["val_mse"] < rec["metrics"]["copy_x_t_mse"]
    meta = json.loads((vis / "checkpoint" / "config.json").read_text())
    assert meta["vla"]["latent"] is None and meta["vla"]["action"] is None  # only the tower learnt anything
    ft = tmp_path / "ft"
    assert main(["vla", "finetune", "--data", str(robot), "--val-data", str(check), "--init", str(vis),
                 "--out", str(ft), "--max-steps", "3", "--batch-size", "8", "--action-head", "continuous",
                 "--chunk-size", "4", "--no-progress", "--threads", "1"]) == 0
    rec = json.loads((ft / "checkpoint" / "train_record.json").read_text())
    assert rec["train_episodes"] == 24 and rec["train_config"]["val_fraction"] == 0.0
    assert rec["val_datasets"][0]["root"] == str(check) and rec["eval_split"] == "val"
    assert rec["val_samples"] == 4 * 20

    # lapa-vision: latent pretraining that starts from this tower (kept bit-equal here by freezing it), a new
    # latent head for the labels' codebook, and the init named in the record
    lv = tmp_path / "lapa_vision"
    assert main(["vla", "pretrain", "--data", str(robot), "--init", str(vis), "--config", "tiny-resnet",
                 "--freeze-vision", "--out", str(lv), "--max-steps", "3", "--batch-size", "8", "--no-progress",
                 "--threads", "1"]) == 0
    from lapa_learning.vla.checkpoint import load_checkpoint

    before, after = load_checkpoint(vis)[0], load_checkpoint(lv)[0]
    assert after.config.latent is not None and after.config.latent.codebook_size == 4
    for (name, p0), p1 in zip(before.vision.state_dict().items(), after.vision.state_dict().values()):
        assert torch.equal(p0, p1), name
    assert not torch.equal(before.lm.state_dict()["model.embed_tokens.weight"],
                           after.lm.state_dict()["model.embed_tokens.weight"])  # the LM did train
    rec = json.loads((lv / "checkpoint" / "train_record.json").read_text())
    assert rec["init"] == str(vis) and rec["init_record"]["stage"] == "pretrain-vision"
    # lapa-vision-frozen's finetuning: the checkpoint remembers the frozen tower; --train-vision trains it again
    lvf = tmp_path / "lapa_vision_ft"
    assert main(["vla", "finetune", "--data", str(robot), "--val-data", str(check), "--init", str(lv),
                 "--train-vision", "--out", str(lvf), "--max-steps", "2", "--batch-size", "8", "--action-head",
                 "continuous", "--chunk-size", "4", "--no-progress", "--threads", "1"]) == 0
    tuned = load_checkpoint(lvf)[0]
    assert not tuned.config.vision.frozen and after.config.vision.frozen
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(after.vision.parameters(), tuned.vision.parameters()))
    # with action targets the checkpoint gets an action head and the run an action processor
    av = tmp_path / "actions_on_vision"
    assert main(["vla", "pretrain", "--data", str(robot), "--targets", "actions", "--action-head", "continuous",
                 "--chunk-size", "4", "--init", str(vis), "--out", str(av), "--max-steps", "2", "--batch-size", "8",
                 "--no-progress", "--threads", "1"]) == 0
    model, _, processor, _, _ = load_checkpoint(av)
    assert model.config.action.type == "continuous" and model.config.action.chunk_size == 4
    assert processor is not None and model.config.image_size == before.config.image_size


def test_videos_at_another_frame_rate_are_labelled_with_the_offset_that_spans_the_same_time(data, idm, tmp_path,
                                                                                            capsys):
    """The IDM (trained at 10 fps with H=3) sees x_t and x_t+6 in 20 fps videos; --offset sets H by hand."""
    from lapa_learning.vpt.checkpoint import load_idm
    from lapa_learning.vpt.pseudo_actions import PseudoActions

    model, _ = load_idm(idm)
    assert model.cfg.fps == 10 and model.cfg.offset == 3
    fast = make_toy_dataset(tmp_path / "fast", episodes=2, length=12, image_size=32, with_actions=False, seed=3,
                            fps=20)
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(fast), "--no-progress"]) == 0
    assert "20 fps, the IDM's training data 10 fps: pairs (x_t, x_t+6)" in capsys.readouterr().out
    assert PseudoActions.load(fast).offset == 6
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(fast), "--offset", "2",
                 "--no-progress"]) == 0
    assert PseudoActions.load(fast).offset == 2
    _, _, video = data  # the same rate as the training data: H as trained
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(video), "--no-progress"]) == 0
    assert PseudoActions.load(video).offset == 3
    assert "--offset 0: expected >= 1" in _error(capsys, ["vpt", "label", "--checkpoint", str(idm), "--data",
                                                          str(fast), "--offset", "0"])
    # a folder of videos is taken to be at the IDM's rate, unless --video-fps says otherwise
    from lapa_learning.data.video import write_video

    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name, np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=10)
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(folder), "--no-progress"]) == 0
    assert PseudoActions.load(folder).offset == 3
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(folder), "--video-fps", "20",
                 "--no-progress"]) == 0
    assert PseudoActions.load(folder).offset == 6
    capsys.readouterr()
    # at a much lower rate no whole number of frames spans the same time: said, not silently stretched
    slow = make_toy_dataset(tmp_path / "slow", episodes=2, length=12, image_size=32, with_actions=False, seed=3,
                            fps=2)
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(slow), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pairs (x_t, x_t+1) span 0.5 s, its (x_t, x_t+3) 0.3 s (no whole number of frames" in out
    # labelled sets at two frame rates cannot share one H in frames
    err = _error(capsys, ["vpt", "train", "--data", str(data[0]), "--data", str(make_toy_dataset(
        tmp_path / "fast_labelled", episodes=2, length=12, image_size=32, fps=20)), "--out", str(tmp_path / "r"),
        *FAST])
    assert "20 fps" in err and "10 fps" in err and "one frame rate" in err
    err = _error(capsys, ["vpt", "train", "--data", str(data[0]), "--val-data", str(tmp_path / "fast_labelled"),
                          "--out", str(tmp_path / "r2"), *FAST])
    assert "--val-data" in err and "20 fps" in err and "10 fps" in err and "one frame rate" in err


def test_pretrain_vision_leaves_no_run_folder_behind_when_its_inputs_are_bad(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["vla", "pretrain-vision", "--data", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err and not out.exists()
