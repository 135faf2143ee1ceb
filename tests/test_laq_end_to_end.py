"""Stage 1 end to end on a tiny generated dataset: train -> resume -> label -> explain, through the CLI."""

import json

import pytest

from lapa_learning.cli import main
from lapa_learning.data.latent_labels import LatentLabels
from lapa_learning.laq.testing import write_dataset


@pytest.mark.slow
def test_cli_train_label_explain(tmp_path):
    data = write_dataset(tmp_path / "ds", episodes=8, length=14, with_actions=True)
    cfg = tmp_path / "laq.yaml"
    cfg.write_text("preset: tiny\n"
                   "model: {image_size: 32, patch_size: 8, dim: 32, spatial_depth: 1, temporal_depth: 1,\n"
                   "        decoder_depth: 1, heads: 2, dim_head: 16, code_dim: 8}\n"
                   "train: {batch_size: 8, lr: 1.0e-3, eval_every: 4, save_every: 4, eval_max_pairs: 32,\n"
                   "        val_fraction: 0.25}\n")
    run = tmp_path / "run"
    base = ["laq", "train", "--data", str(data), "--out", str(run), "--config", str(cfg), "--offset-frames", "3",
            "--no-progress"]
    assert main(base + ["--max-steps", "12"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 12 and summary["eval"]["pairs"] > 0
    assert main(base + ["--max-steps", "16", "--resume"]) == 0  # continues from 12
    assert json.loads((run / "summary.json").read_text())["step"] == 16
    assert main(["laq", "label", "--checkpoint", str(run), "--data", str(data), "--no-progress"]) == 0
    labels = LatentLabels.load(data)
    assert len(labels) == 8 * (14 - 3) and labels.offset == 3
    out = tmp_path / "explain"
    assert main(["laq", "explain", "--checkpoint", str(run), "--data", str(data), "--out", str(out),
                 "--frames", "2", "--device", "cpu"]) == 0
    assert (out / "laq_explain.png").is_file() and (out / "laq_probe.png").is_file()
    assert json.loads((out / "laq_explain.json").read_text())["probe"]["offset"] == 3
    from lapa_learning.laq.report import main as report

    assert report(["--run", str(run), "--explain", str(out / "laq_explain.json"), "--out", str(tmp_path / "r.json"),
                   "--machine", "test", "--command", "lapa laq train ..."]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    for key in ("psnr_changed", "psnr_changed_copy_baseline", "codes_used_fraction", "probe_r2_xyz", "train_minutes",
                "command", "machine"):
        assert key in results


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["laq", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["laq", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "model.dimm=3"]) == 2
    assert "dimm" in capsys.readouterr().err
    assert main(["laq", "label", "--checkpoint", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
