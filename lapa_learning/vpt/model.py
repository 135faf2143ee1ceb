"""The inverse-dynamics model: the VLA's tiny-resnet tower family on two stacked frames, then an MLP.

    (x_t, x_t+H) (B, 2, 3, S, S) in [0, 1] -> stack channels (B, 6, S, S) -> ResNet (B, C, S/16, S/16)
    -> flatten -> MLP -> a_t normalised (B, A)

The action at frame t moves the robot from x_t to x_t+1; seeing x_t+H (H > 1) shows where the motion is going,
which at 64 px and 80 fps is much clearer than the one-frame difference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from lapa_learning.errors import ConfigError


def _tiny_resnet() -> dict:
    from lapa_learning.vla.configuration_vla import _TINY_RESNET

    return dict(_TINY_RESNET)


@dataclass
class IDMConfig:
    image_size: int = 64  # frames are resized to this square size
    offset: int = 4  # H: the model sees x_t and x_t+H
    fps: float | None = None  # frame rate of the training data (None: not recorded); `lapa vpt label` keeps H's span
    action_names: tuple[str, ...] = ("dx", "dy", "dz", "gripper")
    resnet: dict = field(default_factory=_tiny_resnet)  # transformers ResNetConfig kwargs (the VLA's tiny-resnet)
    hidden_dim: int = 256  # MLP width
    action_mean: tuple[float, ...] = ()  # normalisation, from the training set
    action_std: tuple[float, ...] = ()

    def __post_init__(self):
        self.action_names = tuple(self.action_names)
        self.action_mean = tuple(float(x) for x in self.action_mean)
        self.action_std = tuple(float(x) for x in self.action_std)
        if self.image_size < 16:
            raise ConfigError(f"IDM image_size {self.image_size}: expected >= 16")
        if self.offset < 1:
            raise ConfigError(f"--offset {self.offset}: expected >= 1 frame")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and 0 < self.fps < 1e4):
            raise ConfigError(f"IDM fps {self.fps!r}: expected a frame rate > 0")
        if not self.action_names:
            raise ConfigError("IDM action_names: expected at least one action dimension")
        for name in ("action_mean", "action_std"):
            if getattr(self, name) and len(getattr(self, name)) != len(self.action_names):
                raise ConfigError(f"IDM {name}: {len(getattr(self, name))} values for "
                                  f"{len(self.action_names)} action dims")

    def offset_at(self, fps: float) -> int:
        """H in frames of a video at `fps` that spans the time H spanned in the training data."""
        if self.fps is None or abs(fps - self.fps) <= 0.01 * self.fps:
            return self.offset
        return max(1, int(round(self.offset * fps / self.fps)))

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "IDMConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"IDM config: unknown key(s) {unknown}; known keys: {sorted(names)}")
        return cls(**data)


class InverseDynamicsModel(nn.Module):
    def __init__(self, cfg: IDMConfig):
        super().__init__()
        from transformers import ResNetConfig, ResNetModel

        self.cfg = cfg
        self.tower = ResNetModel(ResNetConfig(num_channels=6, **cfg.resnet))
        with torch.no_grad():
            feats = self.tower(pixel_values=torch.zeros(1, 6, cfg.image_size, cfg.image_size)).last_hidden_state
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(feats[0].numel(), cfg.hidden_dim), nn.GELU(),
                                  nn.Linear(cfg.hidden_dim, cfg.action_dim))
        self.register_buffer("mean", torch.tensor(cfg.action_mean or [0.0] * cfg.action_dim))
        self.register_buffer("std", torch.tensor(cfg.action_std or [1.0] * cfg.action_dim))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs (B, 2, 3, S, S) in [0, 1] -> normalised actions (B, A)."""
        B = pairs.shape[0]
        x = (pairs.reshape(B, 6, *pairs.shape[-2:]) - 0.5) / 0.5  # (B, 6, S, S)
        return self.head(self.tower(pixel_values=x).last_hidden_state)  # (B, A)

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.mean) / self.std

    @torch.no_grad()
    def predict(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs (B, 2, 3, S, S) in [0, 1] -> actions in dataset units (B, A)."""
        return self(pairs) * self.std + self.mean
