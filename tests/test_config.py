"""lapa_learning.config (the config toolkit) and the config files of today's formats (tests/data/)."""

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lapa_learning.config import from_dict, load_config_file, merge, parse_assignments, pop_base
from lapa_learning.errors import ConfigError
from lapa_learning.laq.configuration_laq import load_train_config, preset, train_config_from_dict
from lapa_learning.vla.configuration_vla import VLAConfig, load_config_arg
from lapa_learning.vla.configuration_vla import preset as vla_preset

DATA = Path(__file__).parent / "data"


@dataclass
class Inner:
    size: int = 1
    scale: float = 1.0
    name: str | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    flags: tuple[str, ...] = ()
    kwargs: dict = field(default_factory=dict)
    on: bool = False


def test_from_dict_builds_nested_dataclasses():
    cfg = from_dict(Outer, {"inner": {"size": 3, "scale": 2}, "extra": {"name": "x"}, "flags": ["a"], "on": True})
    assert cfg == Outer(inner=Inner(size=3, scale=2), extra=Inner(name="x"), flags=["a"], on=True)
    assert from_dict(Outer, {"extra": None}).extra is None
    assert from_dict(Outer, dataclasses.asdict(cfg)) == cfg  # round trip


@pytest.mark.parametrize("data,match", [
    ({"innr": {}}, r"cfg: unknown key\(s\) \['innr'\] .*allowed keys: \['extra', 'flags', 'inner', 'kwargs', 'on'\]"),
    ({"inner": {"sise": 2}}, r"cfg.inner: unknown key\(s\) \['sise'\].*allowed keys: \['name', 'scale', 'size'\]"),
    ({"inner": {"size": 2.5}}, r"cfg.inner.size: expected int, got float 2.5"),
    ({"inner": {"size": True}}, r"cfg.inner.size: expected int, got bool"),
    ({"inner": {"scale": "big"}}, r"cfg.inner.scale: expected float, got str 'big'"),
    ({"inner": {"name": 3}}, r"cfg.inner.name: expected str \| None, got int 3"),
    ({"inner": [1]}, r"cfg.inner: expected a mapping, got list"),
    ({"extra": 5}, r"cfg.extra: expected a mapping, got int"),
    ({"flags": "a"}, r"cfg.flags: expected tuple\[str, ...\], got str"),
    ({"on": "yes"}, r"cfg.on: expected bool, got str"),
    ([1, 2], r"cfg: expected a mapping, got list"),
])
def test_from_dict_names_bad_keys_and_types(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data, where="cfg")


def test_merge_is_deep_and_does_not_touch_its_inputs():
    base = {"a": {"b": 1, "c": 2}, "kw": {"x": 1}}
    over = {"a": {"c": 3}, "kw": {"y": 2}}
    assert merge(base, over) == {"a": {"b": 1, "c": 3}, "kw": {"x": 1, "y": 2}}
    assert merge(base, over, replace=("kw",)) == {"a": {"b": 1, "c": 3}, "kw": {"y": 2}}
    assert base == {"a": {"b": 1, "c": 2}, "kw": {"x": 1}} and over == {"a": {"c": 3}, "kw": {"y": 2}}


def test_load_config_file_yaml_json_and_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: tiny\nmodel: {dim: 8}\n")
    (tmp_path / "b.json").write_text('{"base": "tiny"}')
    assert load_config_file(tmp_path / "a.yaml") == {"base": "tiny", "model": {"dim": 8}}
    assert load_config_file(tmp_path / "b.json") == {"base": "tiny"}
    (tmp_path / "empty.yml").write_text("")
    assert load_config_file(tmp_path / "empty.yml") == {}
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    (tmp_path / "list.yaml").write_text("- 1\n")
    for name, match in (("bad.json", "not valid JSON"), ("bad.yaml", "not valid YAML"),
                        ("list.yaml", "expected a mapping at the top, got list"), ("missing.yaml", "file not found"),
                        ("c.toml", r"expected a .yaml/.yml/.json file")):
        with pytest.raises(ConfigError, match=match):
            load_config_file(tmp_path / name)


def test_base_key_and_its_preset_alias():
    assert pop_base({"base": "b", "x": 1}) == ("b", {"x": 1})
    assert pop_base({"preset": "p", "x": 1}) == ("p", {"x": 1})
    assert pop_base({"x": 1}, default="tiny") == ("tiny", {"x": 1})
    with pytest.raises(ConfigError, match=r"once, as 'base' \(got \['base', 'preset'\]\)"):
        pop_base({"base": "a", "preset": "b"})
    with pytest.raises(ConfigError, match="must be a preset name"):
        pop_base({"base": 3})


def test_parse_assignments():
    out = parse_assignments(["model.dim=64", "lr=3e-4", "flag=true"], sections=("model", "train"), default="train")
    assert out == {"model": {"dim": 64}, "train": {"lr": 3e-4, "flag": True}}
    with pytest.raises(ConfigError, match="key prefix"):
        parse_assignments(["opt.lr=1"], sections=("model", "train"), default="train")


# ---- today's config files (committed examples) ------------------------------------------------------------
def test_laq_files_of_todays_format_load():
    cfg = load_train_config(str(DATA / "laq_preset.yaml"))  # `preset: tiny`, YAML
    assert (cfg.model.dim, cfg.model.codebook_size, cfg.model.image_size, cfg.lr, cfg.offset_frames) == \
        (96, 16, 64, 3e-4, 12)
    assert cfg.batch_size == preset("tiny").batch_size
    cfg = load_train_config(str(DATA / "laq_preset.json"))  # `preset: base`, JSON
    assert (cfg.model.dim, cfg.model.heads, cfg.model.image_size, cfg.lr, cfg.batch_size) == (64, 2, 128, 3e-4, 16)
    # the shared key `base` gives the same config as the `preset` alias
    assert load_train_config(str(DATA / "laq_base.yaml")) == load_train_config(str(DATA / "laq_preset.yaml"))
    # what a checkpoint's config.json holds (model + train sections)
    saved = json.loads((DATA / "laq_saved.json").read_text())
    assert train_config_from_dict(saved) == load_train_config(str(DATA / "laq_preset.yaml"))


def test_laq_file_rejects_base_and_preset_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: tiny\npreset: base\n")
    with pytest.raises(ConfigError, match="once"):
        load_train_config(str(path))
    path.write_text("model: {dim: 64.5}\n")
    with pytest.raises(ConfigError, match=r"model.dim: expected int, got float 64.5"):
        load_train_config(str(path))


def test_vla_files_of_todays_format_load(tmp_path):
    cfg = load_config_arg(str(DATA / "vla_base.json"))  # `base: tiny-resnet` plus nested overrides
    assert (cfg.name, cfg.image_size, cfg.vision.model_type, cfg.vision.num_tokens) == ("my-resnet", 32, "resnet", 4)
    assert cfg.vision.overrides == vla_preset("tiny-resnet").vision.overrides
    assert (cfg.action.type, cfg.action.chunk_size, cfg.latent) == ("continuous", 4, None)
    full = load_config_arg(str(DATA / "vla_full.json"))  # a whole VLAConfig.to_dict(), no base
    assert full == vla_preset("tiny", latent=dict(num_tokens=4, codebook_size=8))
    assert VLAConfig.from_dict(json.loads((DATA / "vla_full.json").read_text())) == full
    # VLA files may now be YAML too, with the same `base` key
    (tmp_path / "c.yaml").write_text("base: tiny-resnet\nname: my-resnet\nimage_size: 32\nvision: {num_tokens: 4}\n"
                                     "action: {type: continuous, action_dim: 4, chunk_size: 4}\n")
    assert load_config_arg(str(tmp_path / "c.yaml")) == cfg
    with pytest.raises(ConfigError, match=r"vision.frozen: expected bool, got str"):
        load_config_arg(str(tmp_path / "c.yaml"), vision=dict(frozen="no"))


def test_recorded_command_lines_can_be_pasted_back_into_a_shell(monkeypatch):
    """Results files record sys.argv; an empty argument or one with a space must survive as shell text."""
    import shlex

    from lapa_learning.cli_args import command_line

    monkeypatch.setattr(sys, "argv", ["/venv/bin/lapa", "demo", "--methods", "", "--out", "runs/a b"])
    assert command_line() == "lapa demo --methods '' --out 'runs/a b'"
    assert shlex.split(command_line())[1:] == sys.argv[1:]
