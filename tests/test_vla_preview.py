"""Live latent preview: the LAQ decoder's picture of frame t+H for the policy's predicted latent tokens."""

import json
import shutil

import numpy as np
import pytest
import torch

from lapa_learning.errors import CheckpointError, InputError
from lapa_learning.laq.testing import make_tiny_laq
from lapa_learning.vla.preview import LatentPreview


def make_policy_with_laq(tmp_path, laq_value):
    from lapa_learning.vla.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "policy", chunk_size=4)
    record_path = ckpt / "train_record.json"
    record = json.loads(record_path.read_text())
    record["laq"] = str(laq_value)
    record_path.write_text(json.dumps(record))
    return ckpt


@pytest.fixture
def laq_and_policy(tmp_path):
    make_tiny_laq(tmp_path / "laq")
    return tmp_path / "laq", make_policy_with_laq(tmp_path, tmp_path / "laq")


def test_preview_is_the_decoders_picture_for_the_predicted_tokens(laq_and_policy):
    from lapa_learning.laq.checkpoint import load_laq, resolve_checkpoint
    from lapa_learning.vla.policy import Policy

    laq_dir, ckpt = laq_and_policy
    policy = Policy.load(ckpt, device="cpu")
    preview = LatentPreview.load(policy)
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    tokens = policy.act(image, "push the puck to the goal").latent_tokens
    strip = preview.render(image, tokens)
    assert strip.shape == (32, 64, 3) and strip.dtype == np.uint8
    np.testing.assert_array_equal(strip[:, :32], image)
    laq, _ = load_laq(resolve_checkpoint(laq_dir))  # a direct decode, independent of the preview object
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    direct = laq.decode_indices(x, torch.from_numpy(tokens)[None])[0].clamp(0, 1)
    np.testing.assert_array_equal(strip[:, 32:], (direct * 255).round().byte().permute(1, 2, 0).numpy())
    other = preview.render(image, (tokens + 1) % 8)
    assert not np.array_equal(other[:, 32:], strip[:, 32:])  # the picture depends on the tokens
    big = preview.render(np.zeros((64, 80, 3), np.uint8), tokens)  # any frame size: the strip is (H, 2W)
    assert big.shape == (64, 160, 3)
    with pytest.raises(InputError, match="latent_tokens"):
        preview.render(image, [0, 1, 2, 99])
    with pytest.raises(InputError, match="image"):
        preview.render(image.astype(np.float32), tokens)


def test_a_relative_laq_path_resolves_against_the_checkpoint(laq_and_policy):
    laq_dir, ckpt = laq_and_policy
    record = json.loads((ckpt / "train_record.json").read_text())
    record["laq"] = "../laq"
    (ckpt / "train_record.json").write_text(json.dumps(record))
    assert LatentPreview.load(ckpt).laq_dir == ckpt / "../laq"


def test_missing_or_moved_laq_is_a_clear_error(tmp_path, laq_and_policy):
    from lapa_learning.vla.testing import make_tiny_checkpoint

    laq_dir, ckpt = laq_and_policy
    shutil.move(laq_dir, tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="not there .moved"):
        LatentPreview.load(ckpt)
    assert LatentPreview.load(ckpt, laq=tmp_path / "elsewhere").laq_dir == tmp_path / "elsewhere"  # the override
    with pytest.raises(CheckpointError, match="names no LAQ"):
        LatentPreview.load(make_tiny_checkpoint(tmp_path / "plain"))
    with pytest.raises(CheckpointError, match="nowhere"):
        LatentPreview.load(ckpt, laq=tmp_path / "nowhere")


def test_eval_preview_writes_the_strip_into_the_videos(laq_and_policy, tmp_path):
    from lapa_learning.cli import main
    from lapa_learning.data.video import read_video

    laq_dir, ckpt = laq_and_policy
    assert main(["eval", str(ckpt), "--preview", "--tasks", "reach-v3", "--episodes-per-task", "1",
                 "--max-steps", "6", "--num-envs", "1", "--out", str(tmp_path / "ev")]) == 0
    results = json.loads((tmp_path / "ev/results.json").read_text())
    video = read_video(results["tasks"]["reach-v3"]["videos"][0])
    assert video.shape[:3] == (7, 64, 128)  # reset + 6 steps, each the frame | the decoded frame t+H
    plain = main(["eval", str(ckpt), "--tasks", "reach-v3", "--episodes-per-task", "1", "--max-steps", "6",
                  "--num-envs", "1", "--out", str(tmp_path / "plain")])
    assert plain == 0
    frames = read_video(json.loads((tmp_path / "plain/results.json").read_text())["tasks"]["reach-v3"]["videos"][0])
    assert frames.shape[:3] == (7, 64, 64)
    assert np.abs(video[:, :, :64].astype(int) - frames.astype(int)).mean() < 3  # the same frames (video codec)
