"""LAQ configuration: the model (LAQConfig), the training run (LAQTrainConfig) and the named presets.

Presets:
    tiny   64 px, patch 8, dim 128, depth 2/2/2: trains on one CPU thread in minutes (lr 5e-4, H = 20 frames).
    base   128 px, patch 16, dim 512, depth 4/4/4: a single-GPU model.
    paper  256 px, patch 32, dim 1024, depth 8/8/8, 16 heads: the size of the reference LAPA LAQ.

A config file (YAML or JSON) looks like

    base: tiny            # optional, the starting point (default tiny); older files say `preset: tiny`
    model: {dim: 192, codebook_size: 16}
    train: {offset_frames: 12, lr: 3.0e-4}

and any unknown key or wrongly typed value raises ConfigError naming it (lapa_learning/config.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from lapa_learning.config import FILE_SUFFIXES, from_dict, load_config_file, merge, parse_assignments, pop_base
from lapa_learning.errors import ConfigError


def _positive_int(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


def _nonneg_int(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{type(obj).__name__}.{name} must be an int >= 0, got {value!r}")


def _positive_float(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{type(obj).__name__}.{name} must be a positive number, got {value!r}")


@dataclass
class LAQConfig:
    """The LAQ model (encoder, quantizer, decoder)."""

    # input
    image_size: int = 64  # frames are resized to image_size x image_size
    channels: int = 3  # RGB
    patch_size: int = 8  # image_size / patch_size patches per side
    # transformers
    dim: int = 128  # token width of encoder and decoder
    spatial_depth: int = 2  # encoder blocks over the patches of one frame
    temporal_depth: int = 2  # encoder blocks over the 2 time steps of one patch (causal)
    decoder_depth: int = 2  # decoder blocks (self-attention + cross-attention to the action tokens)
    heads: int = 4  # attention heads
    dim_head: int = 32  # width of one head
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * dim
    dropout: float = 0.0  # dropout in attention and MLP
    # latent action
    num_tokens: int = 4  # latent action tokens per frame pair (a perfect square: the CNN makes a s x s grid)
    code_dim: int = 32  # width of one latent token (the reference projects dim -> 32)
    codebook_size: int = 8  # codes shared by all token positions (LAPA: 8, so 8^4 latent actions)
    dead_code_threshold: float = 0.1  # a code used less than this many times per batch gets replaced
    # decoder output
    predict_residual: bool = False  # False: predict x_t+H directly (reference). True: predict x_t+H - x_t

    def __post_init__(self):
        _positive_int(self, "image_size", "channels", "patch_size", "dim", "spatial_depth", "temporal_depth",
                      "decoder_depth", "heads", "dim_head", "num_tokens", "code_dim", "codebook_size")
        _positive_float(self, "mlp_ratio")
        if self.image_size % self.patch_size:
            raise ConfigError(f"LAQConfig.image_size {self.image_size} must be a multiple of "
                              f"patch_size {self.patch_size}")
        side = math.isqrt(self.num_tokens)
        if side * side != self.num_tokens:
            raise ConfigError(f"LAQConfig.num_tokens must be a perfect square (1, 4, 9, 16, ...), "
                              f"got {self.num_tokens}")
        if side > self.grid_size:
            raise ConfigError(f"LAQConfig.num_tokens {self.num_tokens} needs a patch grid of at least {side}x{side}, "
                              f"but image_size/patch_size gives {self.grid_size}x{self.grid_size}")
        if self.codebook_size < 2:
            raise ConfigError(f"LAQConfig.codebook_size must be >= 2, got {self.codebook_size}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"LAQConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.dead_code_threshold, bool) or not isinstance(self.dead_code_threshold, (int, float)) \
                or not 0 <= self.dead_code_threshold < math.inf:
            raise ConfigError(f"LAQConfig.dead_code_threshold must be a finite number >= 0, got "
                              f"{self.dead_code_threshold!r}")
        if not isinstance(self.predict_residual, bool):
            raise ConfigError(f"LAQConfig.predict_residual must be true or false, got {self.predict_residual!r}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def token_grid(self) -> int:
        return math.isqrt(self.num_tokens)


@dataclass
class LAQTrainConfig:
    """One LAQ training run (the model config is nested)."""

    model: LAQConfig = field(default_factory=LAQConfig)
    # data
    offset_frames: int | None = 12  # H in frames (x_t, x_t+H); Meta-World runs at 80 fps
    offset_seconds: float | None = None  # H in seconds instead (converted with the dataset fps)
    val_fraction: float = 0.1  # held-out episodes for evaluation (episode-level split)
    augment: bool = False  # pass-through to FramePairDataset
    # optimisation (reference: Adam lr 1e-4, betas (0.9, 0.99), grad clip 0.5, batch 64)
    batch_size: int = 32
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.0
    grad_clip: float = 0.5
    warmup_steps: int = 0  # linear learning-rate warmup
    max_steps: int = 100_000  # stop after this many optimizer steps (or --max-minutes, whichever first)
    # bookkeeping
    eval_every: int = 500  # held-out evaluation every N steps (and at the end)
    eval_max_pairs: int = 2048  # cap on held-out pairs per evaluation
    save_every: int = 500  # checkpoint every N steps (and at the end)
    log_every: int = 10  # TensorBoard scalars every N steps
    keep_checkpoints: int = 2  # older step directories are deleted
    num_workers: int = 0  # DataLoader workers
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = from_dict(LAQConfig, self.model, "model")
        if not isinstance(self.model, LAQConfig):
            raise ConfigError(f"LAQTrainConfig.model must be a LAQConfig or a mapping, got {type(self.model).__name__}")
        if (self.offset_frames is None) == (self.offset_seconds is None):
            raise ConfigError("LAQTrainConfig: set exactly one of offset_frames and offset_seconds, got "
                              f"offset_frames={self.offset_frames!r}, offset_seconds={self.offset_seconds!r}")
        if self.offset_frames is not None:
            _positive_int(self, "offset_frames")
        if self.offset_seconds is not None:
            _positive_float(self, "offset_seconds")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise ConfigError(f"LAQTrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        _positive_int(self, "batch_size", "max_steps", "eval_every", "eval_max_pairs", "save_every", "log_every",
                      "keep_checkpoints")
        _nonneg_int(self, "warmup_steps", "num_workers", "seed")
        _positive_float(self, "lr", "grad_clip")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"LAQTrainConfig.{name} must be in [0, 1), got {value!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"LAQTrainConfig.weight_decay must be a finite number >= 0, got {self.weight_decay!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _merged(base, overrides: dict, where: str) -> dict:
    """dataclass `base` as a dict with `overrides` applied; giving one of the two offsets clears the other."""
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(base)})
    if unknown:  # checked here too, so the error names the overrides' section rather than the merged one
        raise ConfigError(f"unknown key(s) {unknown} in config section {where!r}; "
                          f"allowed keys: {sorted(f.name for f in dataclasses.fields(base))}")
    data = merge(dataclasses.asdict(base), overrides)
    if "offset_seconds" in overrides and "offset_frames" not in overrides and "offset_frames" in data:
        data["offset_frames"] = None
    if "offset_frames" in overrides and "offset_seconds" not in overrides and "offset_seconds" in data:
        data["offset_seconds"] = None
    return data


def _build(base: LAQTrainConfig, model_over: dict, train_over: dict, where_model: str, where_train: str):
    if "model" in train_over:  # it would be replaced by the model section below, silently
        raise ConfigError(f"{where_train}: 'model' is not a train key; set model fields as model.KEY=VALUE "
                          f"(--set model.dim=96) or in a `model:` section of the config file")
    model = from_dict(LAQConfig, _merged(base.model, model_over, where_model), where_model)
    train = _merged(base, train_over, where_train)
    train["model"] = model
    return from_dict(LAQTrainConfig, train, where_train)


PRESETS: dict[str, LAQTrainConfig] = {}


def _register():
    PRESETS["tiny"] = LAQTrainConfig(
        model=LAQConfig(image_size=64, patch_size=8, dim=128, spatial_depth=2, temporal_depth=2, decoder_depth=2,
                        heads=4, dim_head=32, predict_residual=False),
        # Tuned for a 15-minute CPU run (~1500-2000 steps, not the reference's 100k): a higher lr with warmup,
        # and H = 20 frames = 0.25 s at Meta-World's 80 fps (in 5-minute trials H=20 beat H=12 on the action probe
        # and on changed-pixel PSNR over the copy baseline; lr 1e-3 briefly collapsed the codebook).
        offset_frames=20, batch_size=32, lr=5e-4, warmup_steps=100, eval_every=500, save_every=250)
    PRESETS["base"] = LAQTrainConfig(
        model=LAQConfig(image_size=128, patch_size=16, dim=512, spatial_depth=4, temporal_depth=4, decoder_depth=4,
                        heads=8, dim_head=64),
        offset_frames=12, batch_size=64, eval_every=1000, save_every=1000)
    PRESETS["paper"] = LAQTrainConfig(
        model=LAQConfig(image_size=256, patch_size=32, dim=1024, spatial_depth=8, temporal_depth=8, decoder_depth=8,
                        heads=16, dim_head=64),
        offset_frames=30, batch_size=64, eval_every=2000, save_every=2000)


_register()


def preset(name: str) -> LAQTrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown LAQ config preset {name!r}; choose one of {sorted(PRESETS)} or a .yaml/.json file")
    return dataclasses.replace(PRESETS[name], model=dataclasses.replace(PRESETS[name].model))


def train_config_from_dict(data: dict, where: str = "config") -> LAQTrainConfig:
    """{"base": ..., "model": {...}, "train": {...}} (or a flat saved to_dict() with model nested) -> config.
    `preset` is accepted for `base` (the key of older files); the default base is tiny."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    name, data = pop_base(data, default="tiny", where=where)
    model_over = data.pop("model", {}) or {}
    train_over = data.pop("train", {}) or {}
    if not isinstance(model_over, dict) or not isinstance(train_over, dict):
        raise ConfigError(f"{where}: 'model' and 'train' must be mappings")
    # Top-level keys are accepted as train keys too (that is how to_dict() writes them).
    overlap = sorted(set(data) & set(train_over))
    if overlap:
        raise ConfigError(f"{where}: keys {overlap} given both at top level and under 'train'")
    return _build(preset(name), model_over, {**data, **train_over}, f"{where}.model", f"{where}.train")


def load_train_config(spec: str) -> LAQTrainConfig:
    """A preset name (tiny, base, paper) or a path to a .yaml/.yml/.json file."""
    if spec in PRESETS:
        return preset(spec)
    if Path(spec).suffix.lower() not in FILE_SUFFIXES:
        raise ConfigError(f"--config {spec!r}: expected a preset name {sorted(PRESETS)} or a .yaml/.json file")
    return train_config_from_dict(load_config_file(spec), where=str(spec))


def parse_overrides(pairs: list[str]) -> dict:
    """['model.dim=64', 'lr=3e-4'] -> {'model': {'dim': 64}, 'train': {'lr': 0.0003}} (values parsed as YAML)."""
    return parse_assignments(pairs, sections=("model", "train"), default="train")


def apply_overrides(cfg: LAQTrainConfig, overrides: dict) -> LAQTrainConfig:
    return _build(cfg, overrides.get("model", {}), overrides.get("train", {}), "--set model", "--set")
