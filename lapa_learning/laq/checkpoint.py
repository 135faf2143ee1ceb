"""LAQ checkpoints: a directory per saved step, written atomically, plus a pointer to the latest one.

    <run_dir>/
        latest.json                 {"checkpoint": "step_000500"}   (replaced atomically after each save)
        step_000500/
            model.safetensors       weights
            config.json             {"format": "lapa-laq", "model": {...}, "train": {...}, "offset": H, ...}
            training_state.pt       optimizer, step, sampler position, RNG states, quantizer usage (for resume)
            eval_metrics.json       held-out metrics at this step (when evaluated)
        metrics.jsonl               every held-out evaluation, one JSON object per line
        tb/                         TensorBoard scalars

A step directory is written as a hidden temporary directory, fsynced and then renamed (lapa_learning.io), so a
crash never leaves a half-written checkpoint under a real name. `load_laq` accepts a run directory or a step directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lapa_learning.config import from_dict
from lapa_learning.errors import CheckpointError, ConfigError
from lapa_learning.io import atomic_path, atomic_write_json
from lapa_learning.laq.configuration_laq import LAQConfig, LAQTrainConfig, train_config_from_dict
from lapa_learning.laq.modeling_laq import LAQ

FORMAT = "lapa-laq"
WEIGHTS, CONFIG, STATE, METRICS, LATEST = "model.safetensors", "config.json", "training_state.pt", \
    "eval_metrics.json", "latest.json"


def save_checkpoint(run_dir: Path, step: int, model: LAQ, train_cfg: LAQTrainConfig, extra: dict,
                    state: dict | None = None, metrics: dict | None = None, keep: int = 2) -> Path:
    """Write `<run_dir>/step_<step>` atomically, point latest.json at it, delete all but the newest `keep`."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    with atomic_path(run_dir / name, directory=True) as tmp:  # the same step saved again is replaced whole
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        config = {"format": FORMAT, "version": 1, "step": step, "model": train_cfg.model.__dict__.copy(),
                  "train": {k: v for k, v in train_cfg.to_dict().items() if k != "model"}, **extra}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if state is not None:
            torch.save(state, tmp / STATE)
        if metrics is not None:
            (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    atomic_write_json(run_dir / LATEST, {"checkpoint": name, "step": step})
    steps = sorted(p for p in run_dir.glob("step_*") if p.is_dir())
    for p in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return run_dir / name


def resolve_checkpoint(path) -> Path:
    """A step directory from a step directory or a run directory (via latest.json). CheckpointError otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"LAQ checkpoint {path} does not exist")
    if (path / CONFIG).is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        try:
            name = json.loads(latest.read_text(encoding="utf-8"))["checkpoint"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{latest} is corrupt ({err}); point at a step_* directory instead") from err
        step_dir = path / name
        if not (step_dir / CONFIG).is_file():
            raise CheckpointError(f"{latest} points at {step_dir}, which is not a complete checkpoint")
        return step_dir
    raise CheckpointError(f"{path} is not an LAQ checkpoint: expected {CONFIG} and {WEIGHTS} in it, "
                          f"or {LATEST} naming a step_* directory")


def has_checkpoint(run_dir) -> bool:
    return (Path(run_dir) / LATEST).is_file()


def read_config(step_dir: Path) -> dict:
    path = Path(step_dir) / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is missing or not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT or "model" not in config:
        raise CheckpointError(f"{path} is not an LAQ checkpoint config (expected format {FORMAT!r} and a 'model')")
    return config


def load_laq(path, device="cpu") -> tuple[LAQ, dict]:
    """Load the model of a checkpoint (run or step directory) in eval mode; returns (model, config dict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    step_dir = resolve_checkpoint(path)
    config = read_config(step_dir)
    try:
        model_cfg = from_dict(LAQConfig, config["model"], f"{step_dir / CONFIG}: model")
    except ConfigError as err:
        raise CheckpointError(f"{step_dir / CONFIG} has a bad model config: {err}") from err
    weights_path = step_dir / WEIGHTS
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing")
    try:
        weights = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path} is corrupt or not a safetensors file ({err})") from err
    model = LAQ(model_cfg)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path} does not match its config {step_dir / CONFIG}: "
                              f"{str(err).splitlines()[0]}") from err
    return model.to(device).eval(), config


def load_train_config_from_checkpoint(step_dir: Path) -> LAQTrainConfig:
    config = read_config(step_dir)
    try:
        return train_config_from_dict({"model": config["model"], "train": config.get("train", {})},
                                      where=str(Path(step_dir) / CONFIG))
    except ConfigError as err:
        raise CheckpointError(f"{Path(step_dir) / CONFIG} has a bad config: {err}") from err


def load_training_state(step_dir: Path) -> dict:
    path = Path(step_dir) / STATE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: this checkpoint cannot be resumed (weights only?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is corrupt ({type(err).__name__}: {err})") from err
