"""Tiny configs and a tiny synthetic dataset for tests and smoke runs of LAQ (moving squares, 32 px)."""

from __future__ import annotations

import numpy as np

from lapa_learning.laq.configuration_laq import LAQConfig, LAQTrainConfig


def tiny_model_config(**kw) -> LAQConfig:
    base = dict(image_size=32, patch_size=8, dim=32, spatial_depth=1, temporal_depth=1, decoder_depth=1, heads=2,
                dim_head=16, mlp_ratio=2.0, num_tokens=4, code_dim=8, codebook_size=8)
    base.update(kw)
    return LAQConfig(**base)


def tiny_train_config(**kw) -> LAQTrainConfig:
    base = dict(model=tiny_model_config(), offset_frames=2, batch_size=8, lr=1e-3, max_steps=6, eval_every=3,
                save_every=3, log_every=1, eval_max_pairs=16, val_fraction=0.25, seed=0)
    base.update(kw)
    return LAQTrainConfig(**base)


def moving_square_frames(rng, length: int = 12, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A bright square moving with a constant random velocity: (T, S, S, 3) uint8 frames and (T, 4) actions."""
    frames = np.full((length, size, size, 3), 30, dtype=np.uint8)
    v = rng.integers(-2, 3, size=2)
    pos = rng.integers(8, size - 8, size=2).astype(int)
    actions = np.zeros((length, 4), dtype=np.float32)
    for t in range(length):
        y, x = np.clip(pos + v * t, 0, size - 6)
        frames[t, y:y + 6, x:x + 6] = (220, 80, 40)
        actions[t, :2] = v / 2.0
    return frames, actions


def write_dataset(root, episodes: int = 6, length: int = 12, with_actions: bool = True, seed: int = 0,
                  fps: float = 10):
    from lapa_learning.data import EpisodeWriter

    rng = np.random.default_rng(seed)
    kw = dict(action_names=["dx", "dy", "dz", "gripper"], state_names=["x", "y", "z", "g"]) if with_actions else {}
    writer = EpisodeWriter(root, fps=fps, image_size=(32, 32), with_actions=with_actions, **kw)
    for _ in range(episodes):
        frames, actions = moving_square_frames(rng, length)
        if with_actions:
            states = np.cumsum(actions, axis=0).astype(np.float32)
            writer.add_episode(frames, "move the square", actions=actions, states=states, task="square")
        else:
            writer.add_episode(frames, "move the square", task="square")
    writer.close()
    return root


def make_tiny_laq(run_dir, seed: int = 0):
    """Save a random-initialised tiny LAQ checkpoint (4 tokens, codebook 8: the latent head of
    lapa_learning.vla.testing.make_tiny_checkpoint) under `run_dir`; returns its step directory."""
    import torch

    from lapa_learning.laq.checkpoint import save_checkpoint
    from lapa_learning.laq.modeling_laq import LAQ

    torch.manual_seed(seed)
    cfg = tiny_train_config()
    return save_checkpoint(run_dir, 0, LAQ(cfg.model), cfg, extra={})
