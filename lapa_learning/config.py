"""The config toolkit shared by every stage: strict dict -> dataclass, merging, config files, the `base` key.

    cfg = from_dict(LAQConfig, {"dim": 96}, where="model")   # unknown keys and wrong types raise ConfigError
    data = merge(preset_dict, user_dict)                      # recursive; the user wins
    data = load_config_file("my.yaml")                        # YAML (.yaml/.yml) or JSON (.json) -> dict
    base, data = pop_base(data, default="tiny")               # a config file names the preset it starts from

A config file starts from a named preset given as `base: <name>` (`preset: <name>` is accepted as an alias, the
key older LAQ files use). Values are then checked by each dataclass's own `__post_init__`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from lapa_learning.errors import ConfigError

BASE_KEY, BASE_ALIASES = "base", ("preset",)
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _type_name(tp) -> str:
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def _matches(value, tp) -> bool:
    """Does `value` (parsed from JSON/YAML) fit annotation `tp`? Ints fit floats; lists fit tuples."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (tuple, list) or tp in (tuple, list):
        return isinstance(value, (tuple, list))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _dataclass_in(tp):
    """The dataclass type inside an annotation like `VisionConfig` or `LatentHeadConfig | None`, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def from_dict(cls, data: Any, where: str = "config"):
    """Build dataclass `cls` from a mapping, strictly: nested dataclass fields are built from nested mappings,
    an unknown key raises ConfigError naming it and the allowed keys, a value of the wrong type raises ConfigError
    naming the field, the expected type and what was given. Range checks stay in `cls.__post_init__`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} in config section {where!r}; "
                          f"allowed keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        sub = _dataclass_in(tp)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, f"{where}.{key}")
        elif sub is not None and not (value is None and _matches(None, tp)) and not isinstance(value, sub):
            raise ConfigError(f"{where}.{key}: expected a mapping, got {type(value).__name__}")
        elif sub is None and not _matches(value, tp):
            raise ConfigError(f"{where}.{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def merge(base: dict, overrides: dict, replace: tuple[str, ...] = ()) -> dict:
    """A deep copy of `base` updated recursively with `overrides` (overrides win). Mappings under a key named in
    `replace` are replaced whole instead of merged (e.g. transformers kwargs)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in replace:
            out[key] = merge(out[key], value, replace)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _one_line(err: Exception) -> str:
    """A parser's multi-line message (with its caret drawing) as one line."""
    return " ".join(str(err).split())


def load_config_file(path: str | Path) -> dict:
    """A YAML (.yaml/.yml) or JSON (.json) file holding a mapping -> that mapping. ConfigError otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ConfigError(f"config file {path}: expected a {'/'.join(FILE_SUFFIXES)} file")
    if not path.is_file():
        raise ConfigError(f"config file {path}: file not found")
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path}: not valid JSON ({err})") from None
    else:
        import yaml

        class Loader(yaml.SafeLoader):  # YAML 1.1 reads 1e-3 (no dot) as a string; a config means the number
            pass

        Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789."))
        try:
            data = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: not valid YAML ({_one_line(err)})") from None
        data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def pop_base(data: dict, default: str | None = None, where: str = "config") -> tuple[str | None, dict]:
    """-> (the preset a config starts from, the rest). `base` names it; `preset` is accepted as an alias."""
    data = dict(data)
    given = [key for key in (BASE_KEY, *BASE_ALIASES) if key in data]
    if len(given) > 1:
        raise ConfigError(f"{where}: give the base preset once, as {BASE_KEY!r} (got {given})")
    base = data.pop(given[0]) if given else default
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{where}: {given[0]!r} must be a preset name, got {base!r}")
    return base, data


def parse_assignments(pairs: list[str], sections: tuple[str, ...], default: str, flag: str = "--set") -> dict:
    """['model.dim=64', 'lr=3e-4'] -> {'model': {'dim': 64}, 'train': {'lr': 0.0003}} with sections
    ('model', 'train') and default 'train'. Values are parsed as YAML (numbers, booleans, lists, null)."""
    import yaml

    out: dict = {name: {} for name in sections}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"{flag} {pair!r}: expected key=value, e.g. {sections[0]}.key=1 or key=1")
        key, value = pair.split("=", 1)
        section, _, name = key.rpartition(".")
        section = section or default
        if section not in out:
            raise ConfigError(f"{flag} {pair!r}: key prefix must be one of {[s + '.' for s in sections]}, "
                              f"got {section!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{flag} {pair!r}: could not parse value: {_one_line(err)}") from None
        if isinstance(parsed, str) and _EXPONENT.fullmatch(value.strip()):
            parsed = float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
        out[section][name] = parsed
    return out
