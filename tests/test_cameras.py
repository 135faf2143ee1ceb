"""Datasets with several cameras (LeRobot datasets often have a scene and a wrist camera): every command that reads
frames takes --camera, records the camera it read, and the labels of stage 1 and of VPT remember theirs so that
stage 2 trains on the frames they were computed from."""

import json

import numpy as np
import pytest

from lapa_learning.cli import main
from lapa_learning.data import EpisodeDataset
from lapa_learning.data import format as fmt
from lapa_learning.data.latent_labels import LatentLabels
from lapa_learning.data.video import write_video
from lapa_learning.data.video_folder import open_video_source
from lapa_learning.errors import ConfigError, DatasetError

FRONT, WRIST = "observation.images.front", "observation.images.wrist"
VLA_FAST = ["--batch-size", "8", "--eval-every", "5", "--eval-samples", "32", "--threads", "1", "--no-progress",
            "--config", "tiny", "--max-steps", "3"]


def add_wrist_camera(root):
    """Give every episode of `root` a second camera, `wrist`, that shows the first camera's frames inverted."""
    ds = EpisodeDataset(root)
    for ep in ds.episodes:
        video = fmt.video_path(root, WRIST, ep.index)
        video.parent.mkdir(parents=True, exist_ok=True)
        write_video(video, 255 - ds.frames(ep.index), fps=int(ds.fps))
    path = root / fmt.INFO
    info = json.loads(path.read_text())
    info["features"][WRIST] = dict(info["features"][ds.video_key])
    path.write_text(json.dumps(info))
    return root


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    from lapa_learning.laq.testing import write_dataset

    return add_wrist_camera(write_dataset(tmp_path_factory.mktemp("cams") / "ds", episodes=4, length=10))


def test_a_dataset_reads_the_camera_asked_for(squares, tmp_path, capsys):
    front = EpisodeDataset(squares)
    assert front.video_key == FRONT and front.video_keys == (FRONT, WRIST)  # default: the recorded camera
    for name in ("wrist", WRIST):
        wrist = EpisodeDataset(squares, video_key=name)
        assert wrist.video_key == WRIST
        diff = np.abs(wrist.frames(1).astype(int) - (255 - front.frames(1).astype(int)))
        assert diff.mean() < 8  # the inverted frames, up to the codec
    with pytest.raises(DatasetError, match=r"--camera 'top': .*no such camera; its cameras .* are "
                                           r"observation.images.front, observation.images.wrist"):
        EpisodeDataset(squares, video_key="top")
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", front.frames(0), fps=10)
    with pytest.raises(DatasetError, match="is a folder of videos, which has one camera"):
        open_video_source(folder, camera="wrist")
    assert open_video_source(folder).num_episodes == 1

    assert main(["data", "info", str(squares), "--camera", "wrist"]) == 0
    assert f"camera read: {WRIST} (not read: {FRONT})" in capsys.readouterr().out
    assert main(["data", "info", str(squares), "--camera", "top"]) == 2
    assert "lapa: error: --camera 'top'" in capsys.readouterr().err


def test_laq_trains_and_labels_the_camera_asked_for(squares, tmp_path):
    from lapa_learning.laq.label import PARTIAL_DIR, label_dataset
    from lapa_learning.laq.testing import tiny_train_config
    from lapa_learning.laq.trainer import train

    run = tmp_path / "laq"
    cfg = tiny_train_config(max_steps=2, val_fraction=0.25)
    train(cfg, squares, run, progress=False, camera="wrist")
    assert json.loads((run / "step_0000002" / "config.json").read_text())["camera"] == WRIST
    with pytest.raises(ConfigError, match="cannot resume .* another camera: it was trained on camera "
                                          "observation.images.wrist"):
        train(tiny_train_config(max_steps=3, val_fraction=0.25), squares, run, progress=False)

    # an interrupted front-camera labelling is not reused for the wrist camera
    with pytest.raises(KeyboardInterrupt):
        label_dataset(run, squares, progress=False, _stop_after=2)
    result = label_dataset(run, squares, progress=False, camera="wrist")
    assert result["camera"] == WRIST and (result["reused"], result["encoded"]) == (0, 4)
    assert not (squares / PARTIAL_DIR).exists()
    labels = LatentLabels.load(squares)
    assert labels.camera == WRIST
    from lapa_learning.laq.checkpoint import load_laq
    from lapa_learning.laq.label import encode_episode

    model, _ = load_laq(run)
    _, tokens = encode_episode(model, EpisodeDataset(squares, "wrist").frames(2), 2, 100, "cpu")
    np.testing.assert_array_equal(tokens[3], labels.lookup(2, 3))

    from lapa_learning.laq.explain import explain

    assert explain(run, squares, out=tmp_path / "explain", camera="wrist", folds=2)["summary"]["camera"] == WRIST
    assert main(["laq", "train", "--data", str(squares), "--camera", "top", "--out", str(tmp_path / "x")]) == 2


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from lapa_learning.vla.testing import make_toy_dataset

    return add_wrist_camera(make_toy_dataset(tmp_path_factory.mktemp("toy") / "robot", episodes=4, length=12,
                                             image_size=32, seed=0))


@pytest.mark.slow
def test_vla_stages_train_on_the_labels_camera_and_record_it(toy, tmp_path, capsys):
    from lapa_learning.data.latent_labels import save_latent_labels
    from lapa_learning.vla.offline_eval import heldout_action_error

    labels = LatentLabels.load(toy)
    save_latent_labels(toy, labels.episode, labels.t, labels.tokens, labels.codebook_size, labels.offset,
                       labels.source, camera=WRIST)  # as `lapa laq label --camera wrist` writes them
    pre = tmp_path / "pre"
    assert main(["vla", "pretrain", "--data", str(toy), "--out", str(pre), *VLA_FAST]) == 0
    assert json.loads((pre / "train_record.json").read_text())["datasets"][0]["camera"] == WRIST  # the labels'
    capsys.readouterr()
    assert main(["vla", "pretrain", "--data", str(toy), "--camera", "front", "--out", str(tmp_path / "p2"),
                 *VLA_FAST]) == 2
    assert ("latent labels of" in (err := capsys.readouterr().err) and "computed from the camera "
            "observation.images.wrist; relabel with --camera front" in err), err

    from lapa_learning.vla.testing import make_toy_dataset

    val = add_wrist_camera(make_toy_dataset(tmp_path / "val", episodes=2, length=12, image_size=32, seed=1))
    ft = tmp_path / "ft"
    assert main(["vla", "finetune", "--data", str(toy), "--val-data", str(val), "--camera", "wrist", "--init",
                 str(pre), "--out", str(ft), *VLA_FAST]) == 0
    rec = json.loads((ft / "checkpoint" / "train_record.json").read_text())
    assert [d["camera"] for d in rec["datasets"] + rec["val_datasets"]] == [WRIST, WRIST]
    # open-loop evaluation reads the camera the policy was finetuned on, unless told otherwise
    assert heldout_action_error(ft, toy, val_fraction=0.5, max_frames=8)["camera"] == WRIST
    assert heldout_action_error(ft, toy, val_fraction=0.5, max_frames=8, camera="front")["camera"] == FRONT


@pytest.mark.slow
def test_vpt_pseudo_actions_remember_their_camera(toy, tmp_path, capsys):
    from lapa_learning.vpt.pseudo_actions import PseudoActions

    idm = tmp_path / "idm"
    assert main(["vpt", "train", "--data", str(toy), "--camera", "wrist", "--out", str(idm), "--max-steps", "2",
                 "--image-size", "32", "--offset", "3", "--no-progress", "--threads", "1"]) == 0
    assert json.loads((idm / "checkpoint" / "train_record.json").read_text())["cameras"] == [WRIST]
    assert main(["vpt", "label", "--checkpoint", str(idm), "--data", str(toy), "--camera", "wrist",
                 "--no-progress"]) == 0
    assert PseudoActions.load(toy).camera == WRIST
    capsys.readouterr()
    args = ["vla", "pretrain", "--data", str(toy), "--targets", "pseudo-actions", "--action-head", "continuous",
            "--chunk-size", "2"]
    assert main([*args, "--camera", "front", "--out", str(tmp_path / "bad"), *VLA_FAST]) == 2
    assert "pseudo-actions of" in capsys.readouterr().err
    pre = tmp_path / "pre"
    assert main([*args, "--out", str(pre), *VLA_FAST]) == 0
    assert json.loads((pre / "train_record.json").read_text())["datasets"][0]["camera"] == WRIST
