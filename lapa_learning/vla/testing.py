"""Helpers for tests of other components (ROS node, evaluator, benchmarks): a random tiny policy checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DEFAULT_ACTION_NAMES = ("dx", "dy", "dz", "gripper")


def tiny_corpus() -> list[str]:
    """The text a tiny tokenizer is trained on when no dataset is given: every Meta-World instruction."""
    from lapa_learning.sim.instructions import INSTRUCTIONS

    return [t for phrases in INSTRUCTIONS.values() for t in phrases]


def make_tiny_checkpoint(out_dir, action_dim: int = 4, chunk_size: int = 1, seed: int = 0,
                         head: str = "auto", latent: bool = True, image_size: int = 64) -> Path:
    """Build and save a random-initialised `tiny` policy checkpoint that `Policy.load` accepts.

    head: "discrete" (256 bins, the LAPA default), "continuous", or "auto" (= discrete for chunk_size 1,
    continuous for longer chunks).  latent=True adds a random latent head (4 tokens, codebook 8) so that
    `Action.latent_tokens` is filled.  Acts in a few ms on one CPU thread.
    """
    from lapa_learning.vla.checkpoint import save_checkpoint
    from lapa_learning.vla.configuration_vla import preset
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.processor_vla import ActionProcessor, train_tokenizer

    if head == "auto":
        head = "discrete" if chunk_size == 1 else "continuous"
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = DEFAULT_ACTION_NAMES if action_dim == 4 else tuple(f"a{i}" for i in range(action_dim - 1)) + ("gripper",)
    overrides = dict(image_size=image_size, action=dict(type=head, action_dim=action_dim, chunk_size=chunk_size))
    if image_size != 64:
        overrides["vision"] = dict(overrides=dict(image_size=image_size))
    if latent:
        overrides["latent"] = dict(num_tokens=4, codebook_size=8)
    cfg = preset("tiny", **overrides)
    tokenizer = train_tokenizer(tiny_corpus(), cfg.language.tokenizer_vocab_size)
    model = VLAModel(cfg, vocab_size=len(tokenizer))
    acts = rng.uniform(-1, 1, size=(2000, action_dim)).astype(np.float32)
    acts[:, -1] = np.where(rng.random(2000) < 0.5, -1.0, 1.0)
    processor = ActionProcessor.fit(acts, names, num_bins=cfg.action.num_bins, gripper_binary=True)
    record = {"command": f"make_tiny_checkpoint(action_dim={action_dim}, chunk_size={chunk_size}, seed={seed}, "
                         f"head={head!r}, latent={latent})",
              "stage": "random", "datasets": [], "steps": 0, "metrics": {}, "note": "random weights, for tests"}
    return save_checkpoint(out_dir, model, tokenizer, processor, record)
