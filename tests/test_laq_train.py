import json

import numpy as np
import pytest
import torch

from lapa_learning.errors import CheckpointError, ConfigError
from lapa_learning.laq import checkpoint as ckpt
from lapa_learning.laq.testing import tiny_train_config, write_dataset
from lapa_learning.laq.trainer import StepBatches, train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("laq_data") / "ds", episodes=6, length=12, with_actions=False)


def _weights(run_dir):
    model, _ = ckpt.load_laq(run_dir)
    return model.state_dict()


def test_train_writes_checkpoints_and_metrics(dataset, tmp_path):
    summary = train(tiny_train_config(), dataset, tmp_path / "run", progress=False)
    assert summary["step"] == 6
    step_dir = ckpt.resolve_checkpoint(tmp_path / "run")
    assert step_dir.name == "step_0000006"
    for name in (ckpt.WEIGHTS, ckpt.CONFIG, ckpt.STATE, ckpt.METRICS):
        assert (step_dir / name).is_file()
    metrics = json.loads((step_dir / ckpt.METRICS).read_text())
    for key in ("psnr", "psnr_copy_baseline", "psnr_changed", "psnr_changed_copy_baseline", "codes_used_fraction",
                "perplexity_per_position"):
        assert key in metrics
    assert len(metrics["perplexity_per_position"]) == 4
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2  # steps 3 and 6
    model, config = ckpt.load_laq(tmp_path / "run")
    assert config["offset"] == 2 and not model.training
    assert [p.name for p in (tmp_path / "run").glob(".*")] == [".lock"]  # no temporary left behind; the run lock


def test_interrupted_run_resumes_to_the_same_weights(dataset, tmp_path):
    cfg = tiny_train_config()
    train(cfg, dataset, tmp_path / "full", progress=False)
    with pytest.raises(RuntimeError, match="simulated crash at step 4"):
        train(cfg, dataset, tmp_path / "crashed", progress=False, _interrupt_at=4)
    assert ckpt.resolve_checkpoint(tmp_path / "crashed").name == "step_0000003"
    summary = train(cfg, dataset, tmp_path / "crashed", progress=False)  # resumes automatically
    assert summary["step"] == 6
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "crashed")
    for name in full:
        assert torch.allclose(full[name], resumed[name], atol=1e-6), name
    # extending max_steps continues from the last step
    more = train(tiny_train_config(max_steps=8), dataset, tmp_path / "crashed", progress=False)
    assert more["step"] == 8


def test_resume_flags_and_config_mismatch(dataset, tmp_path):
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        train(tiny_train_config(), dataset, tmp_path / "none", progress=False, resume="require")
    train(tiny_train_config(max_steps=3), dataset, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train(tiny_train_config(), dataset, tmp_path / "run", progress=False, resume="never")
    cfg = tiny_train_config()
    cfg.model.dim = 48
    with pytest.raises(ConfigError, match=r"model\.dim"):
        train(cfg, dataset, tmp_path / "run", progress=False)


def test_extra_data_joins_the_training_pairs_and_a_resume_must_keep_it(dataset, tmp_path):
    extra = write_dataset(tmp_path / "extra", episodes=2, length=12, with_actions=True)
    plain = train(tiny_train_config(), dataset, tmp_path / "plain", progress=False)
    mixed = train(tiny_train_config(), dataset, tmp_path / "mixed", progress=False, extra_data=extra, extra_repeat=3)
    _, config = ckpt.load_laq(tmp_path / "mixed")
    # every pair of the 2 extra episodes (12 frames, H = 2: 10 pairs each), three times over
    assert config["extra_pairs"] == 3 * 2 * 10 and config["extra_repeat"] == 3
    assert config["train_pairs"] == config["extra_pairs"] + ckpt.load_laq(tmp_path / "plain")[1]["train_pairs"]
    assert config["extra_dataset"] == str(extra.resolve()) and config["val_episodes"] >= 1
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "mixed")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the extra pairs were trained on
    assert plain["step"] == mixed["step"] == 6
    with pytest.raises(ConfigError, match="other extra training data.*x3, asked for None x0"):
        train(tiny_train_config(max_steps=8), dataset, tmp_path / "mixed", progress=False)
    with pytest.raises(ConfigError, match="--extra-repeat must be at least 1"):
        train(tiny_train_config(), dataset, tmp_path / "bad", progress=False, extra_data=extra, extra_repeat=0)
    other_fps = write_dataset(tmp_path / "fps", episodes=2, length=12, with_actions=True, fps=15)
    with pytest.raises(ConfigError, match="15.0 fps, but --data runs at.*--offset-seconds"):
        train(tiny_train_config(), dataset, tmp_path / "bad", progress=False, extra_data=other_fps)
    assert not (tmp_path / "bad").exists()  # refused before anything was written: no empty run left behind


def test_offset_seconds_gives_each_source_its_own_h_in_frames(dataset, tmp_path):
    """H = 0.2 s is 2 frames of the 10 fps --data and 3 frames of a 15 fps --extra-data: both are used."""
    other_fps = write_dataset(tmp_path / "fps", episodes=2, length=12, with_actions=True, fps=15)
    cfg = tiny_train_config(offset_frames=None, offset_seconds=0.2, max_steps=2)
    summary = train(cfg, dataset, tmp_path / "run", progress=False, extra_data=other_fps)
    _, config = ckpt.load_laq(tmp_path / "run")
    assert summary["offset"] == config["offset"] == 2 and config["fps"] == 10
    assert config["extra_offset"] == 3 and config["extra_fps"] == 15
    assert config["extra_pairs"] == 2 * (12 - 3)


def test_resuming_with_other_data_is_a_lapa_warning(dataset, tmp_path, capsys):
    """Printed by `lapa` as `lapa: warning: ...` (a warning from the package), not a bare `warning:` print."""
    import io
    import shutil
    import warnings

    from lapa_learning.cli import _show_warning

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    train(tiny_train_config(max_steps=3), dataset, tmp_path / "run", progress=False)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_train_config(max_steps=4), copy, tmp_path / "run", progress=False)
    assert "warning" not in capsys.readouterr().out
    (w,) = [w for w in caught if "resuming" in str(w.message)]
    out = io.StringIO()
    _show_warning(w.message, w.category, w.filename, w.lineno, file=out)
    assert out.getvalue().startswith(f"lapa: warning: --data {copy}: resuming the run in {tmp_path / 'run'}")




def test_extra_repeat_without_extra_data_is_a_clear_cli_error(dataset, tmp_path, capsys):
    from lapa_learning.cli import main

    assert main(["laq", "train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--extra-repeat", "3"]) == 2
    assert "lapa: error: --extra-repeat: only with --extra-data" in capsys.readouterr().err
    assert main(["laq", "train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--extra-data",
                 str(dataset), "--extra-repeat", "0"]) == 2
    assert "--extra-repeat must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_step_batches_depend_only_on_the_step():
    a = StepBatches(50, 8, seed=3)
    it = iter(a)
    first = [next(it) for _ in range(10)]
    b = iter(StepBatches(50, 8, seed=3, start_step=7))
    assert next(b) == first[7]
    assert sorted(sum(first[:6], [])) == sorted(set(sum(first[:6], [])))  # one epoch: no repeats
    assert StepBatches(50, 8, seed=3, rank=1, world=2).batch_for_step(0).tolist() == first[0][1::2]


def test_missing_and_corrupt_checkpoints(dataset, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_laq(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not an LAQ checkpoint"):
        ckpt.load_laq(tmp_path / "empty")
    run = tmp_path / "run"
    train(tiny_train_config(max_steps=3), dataset, run, progress=False)
    step_dir = ckpt.resolve_checkpoint(run)
    (step_dir / ckpt.WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.load_laq(run)
    (step_dir / ckpt.STATE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="training_state.pt is corrupt"):
        ckpt.load_training_state(step_dir)
    (step_dir / ckpt.CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is missing or not valid JSON"):
        ckpt.load_laq(step_dir)
    (run / ckpt.LATEST).write_text(json.dumps({"checkpoint": "step_9999999"}))
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        ckpt.load_laq(run)


def test_weights_that_do_not_match_the_config(dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_train_config(max_steps=3), dataset, run, progress=False)
    step_dir = ckpt.resolve_checkpoint(run)
    config = json.loads((step_dir / ckpt.CONFIG).read_text())
    config["model"]["dim"] = 64
    (step_dir / ckpt.CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match its config"):
        ckpt.load_laq(run)
    config["model"]["bogus"] = 1
    (step_dir / ckpt.CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="bogus"):
        ckpt.load_laq(run)


def test_checkpoint_round_trip(tmp_path):
    from lapa_learning.laq.modeling_laq import LAQ

    cfg = tiny_train_config()
    model = LAQ(cfg.model).eval()
    ckpt.save_checkpoint(tmp_path, 7, model, cfg, {"offset": 2})
    loaded, config = ckpt.load_laq(tmp_path)
    assert config["step"] == 7 and config["offset"] == 2
    assert ckpt.load_train_config_from_checkpoint(ckpt.resolve_checkpoint(tmp_path)) == cfg
    frames = torch.rand(2, 2, 3, 32, 32)
    assert torch.equal(model(frames)["recon"], loaded(frames)["recon"])
    # saving the same step again replaces it; older steps beyond `keep` are deleted
    for step in (7, 8, 9):
        ckpt.save_checkpoint(tmp_path, step, model, cfg, {"offset": 2}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000008", "step_0000009"]


def test_an_offset_in_seconds_warns_about_videos_at_another_frame_rate(tmp_path):
    """Every video of a folder is read at --video-fps; a 20 fps clip among 10 fps ones would get H frames that
    span half the time: said once, naming one of them."""
    import numpy as np

    from lapa_learning.data import VideoFolder
    from lapa_learning.data.video import write_video
    from lapa_learning.laq.testing import tiny_train_config
    from lapa_learning.laq.trainer import make_datasets

    rng = np.random.default_rng(0)
    for name, fps in (("a.mp4", 10), ("b.mp4", 10), ("c.mp4", 20)):
        write_video(tmp_path / name, rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=fps)
    source = VideoFolder(tmp_path, fps=10)
    with pytest.warns(UserWarning, match=r"1 of 3 videos are not at 10 fps \(e.g. c.mp4: 20 fps\)"):
        make_datasets(source, tiny_train_config(offset_frames=None, offset_seconds=0.2, val_fraction=0.0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # H in frames: the rate does not enter
        make_datasets(source, tiny_train_config(val_fraction=0.0))


def test_resuming_with_another_frame_offset_or_the_data_as_extra_data_is_refused(tmp_path):
    """--offset-seconds with another --video-fps on resume gave other pairs mid-run; --extra-data = --data trained
    on the held-out episodes. Both are one clear error."""
    import numpy as np

    from lapa_learning.data.video import write_video

    rng = np.random.default_rng(0)
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        write_video(videos / name, rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=10)
    cfg = tiny_train_config(offset_frames=None, offset_seconds=0.2, max_steps=3)
    train(cfg, videos, tmp_path / "run", progress=False, video_fps=10)
    with pytest.raises(ConfigError, match=r"another frame offset: it was trained on pairs \(x_t, x_t\+2\) at 10 fps, "
                                          r"now \(x_t, x_t\+4\) at 20 fps"):
        train(tiny_train_config(offset_frames=None, offset_seconds=0.2, max_steps=6), videos, tmp_path / "run",
              progress=False, video_fps=20)
    with pytest.raises(ConfigError, match="--extra-data .* is --data itself"):
        train(tiny_train_config(), videos, tmp_path / "run2", progress=False, extra_data=videos, video_fps=10)


def test_a_diverged_run_is_never_saved_and_is_one_clear_error(dataset, tmp_path, monkeypatch):
    """A run whose weights became NaN before its first logged loss was saved, and its PSNR shown as infinite."""
    from lapa_learning.laq.metrics import psnr

    assert np.isnan(psnr(float("nan")))
    cfg = tiny_train_config(max_steps=2, log_every=10, save_every=2, eval_every=2)
    original = torch.optim.Adam.step

    def poisoned_step(self, *args, **kwargs):  # what lr 1e12 or an infinite weight decay does
        out = original(self, *args, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    with pytest.raises(ConfigError, match=r"training diverged by step 2: weight .* is not finite"):
        train(cfg, dataset, tmp_path / "run", progress=False)
    assert not ckpt.has_checkpoint(tmp_path / "run")
