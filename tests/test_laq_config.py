import json

import pytest

from lapa_learning.errors import ConfigError
from lapa_learning.laq.configuration_laq import (LAQConfig, LAQTrainConfig, apply_overrides, load_train_config,
                                      parse_overrides, preset, train_config_from_dict)


def test_presets():
    assert preset("tiny").model.image_size == 64
    paper = preset("paper").model
    assert (paper.image_size, paper.patch_size, paper.dim, paper.heads) == (256, 32, 1024, 16)
    assert (paper.spatial_depth, paper.temporal_depth, paper.decoder_depth) == (8, 8, 8)
    assert (paper.num_tokens, paper.codebook_size) == (4, 8)
    with pytest.raises(ConfigError, match="unknown LAQ config preset 'huge'"):
        preset("huge")


@pytest.mark.parametrize("kw,match", [
    (dict(image_size=60), "image_size 60 must be a multiple of patch_size 8"),
    (dict(num_tokens=5), "num_tokens must be a perfect square"),
    (dict(dim=0), "dim must be a positive int"),
    (dict(codebook_size=1), "codebook_size must be >= 2"),
    (dict(dropout=1.5), "dropout"),
    (dict(num_tokens=100), "needs a patch grid"),
])
def test_bad_model_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        LAQConfig(**kw)


def test_bad_train_values():
    with pytest.raises(ConfigError, match="exactly one of offset_frames and offset_seconds"):
        LAQTrainConfig(offset_frames=5, offset_seconds=0.1)
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        LAQTrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="val_fraction"):
        LAQTrainConfig(val_fraction=1.0)


def test_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['dimm'\]"):
        train_config_from_dict({"model": {"dimm": 3}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\]"):
        train_config_from_dict({"train": {"learning_rate": 3}})
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nmodel: {dim: 64}\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_train_config(str(path))
    with pytest.raises(ConfigError, match=r"\['depth'\] in config section '--set model'"):
        apply_overrides(preset("tiny"), parse_overrides(["model.depth=3"]))
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["dim"])


def test_files_and_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "base", "model": {"dim": 64, "heads": 2}, "train": {"lr": 3e-4}}))
    cfg = load_train_config(str(path))
    assert (cfg.model.dim, cfg.model.heads, cfg.model.image_size, cfg.lr) == (64, 2, 128, 3e-4)
    cfg = apply_overrides(cfg, parse_overrides(["offset_seconds=0.2", "model.codebook_size=16"]))
    assert cfg.offset_seconds == 0.2 and cfg.offset_frames is None and cfg.model.codebook_size == 16
    # a saved config (to_dict) loads back to the same thing
    assert train_config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="preset name"):
        load_train_config("nothing.txt")


def test_yaml_exponents_are_numbers_and_bad_values_are_one_clear_line(tmp_path):
    """YAML 1.1 reads `lr: 1e-3` as a string while `--set lr=1e-3` was a number; a whole `model` mapping given as a
    train key was dropped silently; infinite weight decay reached the optimizer."""
    good = tmp_path / "c.yaml"
    good.write_text("train:\n  lr: 1e-3\n  weight_decay: 1.5E-2\nmodel:\n  dim: 64\n")
    cfg = load_train_config(str(good))
    assert (cfg.lr, cfg.weight_decay, cfg.model.dim) == (0.001, 0.015, 64)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_train_config(str(bad))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_overrides(["lr=["])
    assert "\n" not in str(err.value)
    for sets, match in ((["model={dim: 64}"], "'model' is not a train key; set model fields as model.KEY=VALUE"),
                        (["weight_decay=.inf"], "weight_decay must be a finite number >= 0"),
                        (["model.dead_code_threshold=.nan"], "dead_code_threshold must be a finite number >= 0")):
        with pytest.raises(ConfigError, match=match):
            apply_overrides(preset("tiny"), parse_overrides(sets))
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  model:\n    dim: 64\n")
    with pytest.raises(ConfigError, match="'model' is not a train key"):
        load_train_config(str(nested))
