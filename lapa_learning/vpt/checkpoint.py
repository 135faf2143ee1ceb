"""IDM checkpoints: `<run>/checkpoint/` = config.json ({"format": "lapa_idm", "idm": IDMConfig}) +
model.safetensors + train_record.json, written as one directory with lapa_learning.io.atomic_path."""

from __future__ import annotations

import json
from pathlib import Path

from lapa_learning.errors import CheckpointError, ConfigError
from lapa_learning.io import atomic_path

FORMAT = "lapa_idm"
FORMAT_VERSION = 1


def save_idm(run_dir, model, record: dict) -> Path:
    from safetensors.torch import save_model

    out = Path(run_dir) / "checkpoint"
    with atomic_path(out, directory=True) as stage:  # a whole checkpoint or the old one, never half
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "idm": model.cfg.to_dict()}
        (stage / "config.json").write_text(json.dumps(meta, indent=2))
        save_model(model, str(stage / "model.safetensors"))
        (stage / "train_record.json").write_text(json.dumps(record, indent=2, default=str))
    return out


def load_idm(path, device="cpu"):
    """A run dir or its checkpoint/ -> (model in eval mode, checkpoint dir). CheckpointError names a bad file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from lapa_learning.vla.checkpoint import read_json
    from lapa_learning.vpt.model import IDMConfig, InverseDynamicsModel

    p = Path(path)
    ckpt = p / "checkpoint" if (p / "checkpoint").is_dir() else p
    cfg_path = ckpt / "config.json"
    meta = read_json(cfg_path, f"the config of IDM checkpoint {p}; train one with `lapa vpt train`")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not an IDM checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        cfg = IDMConfig.from_dict(meta["idm"])
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{cfg_path}: bad 'idm' entry ({err})") from None
    model = InverseDynamicsModel(cfg)
    weights = ckpt / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing (the IDM weights)")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device="cpu")
    except SafetensorError as err:
        raise CheckpointError(f"{weights}: corrupt or truncated safetensors file ({err})") from None
    except RuntimeError as err:  # shape mismatch
        raise CheckpointError(f"{weights}: does not match {cfg_path} ({str(err).splitlines()[0][:300]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not match {cfg_path}: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    return model.to(device).eval(), ckpt
