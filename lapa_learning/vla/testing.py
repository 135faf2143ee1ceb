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
                         head: str = "auto", latent: bool = True, image_size: int = 64, config: str = "tiny") -> Path:
    """Build and save a random-initialised `tiny` policy checkpoint that `Policy.load` accepts.

    head: "discrete" (256 bins, the LAPA default), "continuous", or "auto" (= discrete for chunk_size 1,
    continuous for longer chunks).  latent=True adds a random latent head (4 tokens, codebook 8) so that
    `Action.latent_tokens` is filled.  config: a CPU preset ("tiny", or "tiny-efficientnet" when its PyPI
    packages are installed).  Acts in about 10 ms on one CPU thread.
    """
    from lapa_learning.vla.checkpoint import save_checkpoint
    from lapa_learning.vla.configuration_vla import preset
    from lapa_learning.vla.modeling_vla import VLAModel
    from lapa_learning.vla.processor_vla import ActionProcessor, prompt_corpus, train_tokenizer

    if head == "auto":
        head = "discrete" if chunk_size == 1 else "continuous"
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = DEFAULT_ACTION_NAMES if action_dim == 4 else tuple(f"a{i}" for i in range(action_dim - 1)) + ("gripper",)
    overrides = dict(image_size=image_size, action=dict(type=head, action_dim=action_dim, chunk_size=chunk_size))
    if image_size != 64 and config == "tiny":
        overrides["vision"] = dict(overrides=dict(image_size=image_size))
    if latent:
        overrides["latent"] = dict(num_tokens=4, codebook_size=8)
    cfg = preset(config, **overrides)
    tokenizer = train_tokenizer(prompt_corpus(cfg.prompt_template, tiny_corpus()), cfg.language.tokenizer_vocab_size)
    model = VLAModel(cfg, vocab_size=len(tokenizer))
    acts = rng.uniform(-1, 1, size=(2000, action_dim)).astype(np.float32)
    acts[:, -1] = np.where(rng.random(2000) < 0.5, -1.0, 1.0)
    processor = ActionProcessor.fit(acts, names, num_bins=cfg.action.num_bins, gripper_binary=True)
    record = {"command": f"make_tiny_checkpoint(action_dim={action_dim}, chunk_size={chunk_size}, seed={seed}, "
                         f"head={head!r}, latent={latent})",
              "stage": "random", "datasets": [], "steps": 0, "metrics": {}, "note": "random weights, for tests"}
    return save_checkpoint(out_dir, model, tokenizer, processor, record)


def make_toy_dataset(root, episodes: int = 8, length: int = 20, image_size: int = 32, with_actions: bool = True,
                     latent_labels: bool = True, offset: int = 2, seed: int = 0, fps: float = 10) -> Path:
    """A small episode dataset where the image tells the action (for fast end-to-end tests).

    A white square moves toward a red goal dot; the action is (dx, dy, 0, gripper) with dx, dy the unit step
    toward the goal and the gripper closed (+1) once the square is near it.  The latent labels (K=2 tokens,
    codebook 4) are the quadrant of the motion between frames t and t+offset and whether the gripper closes,
    so they are predictable from frame t and the instruction.
    """
    from lapa_learning.data.writer import EpisodeWriter
    from lapa_learning.data.latent_labels import save_latent_labels

    rng = np.random.default_rng(seed)
    root = Path(root)
    writer = EpisodeWriter(root, fps=fps, image_size=(image_size, image_size),
                           action_names=DEFAULT_ACTION_NAMES if with_actions else None,
                           state_names=("x", "y", "z", "gripper_opening") if with_actions else None,
                           with_actions=with_actions, mode="overwrite")
    ep_idx, ts, toks = [], [], []
    S = image_size
    for e in range(episodes):
        pos = rng.uniform(4, S - 4, size=2)
        goal = rng.uniform(4, S - 4, size=2)
        frames = np.zeros((length, S, S, 3), dtype=np.uint8)
        actions = np.zeros((length, 4), dtype=np.float32)
        states = np.zeros((length, 4), dtype=np.float32)
        path = []
        for t in range(length):
            frames[t, int(goal[1]) - 1:int(goal[1]) + 2, int(goal[0]) - 1:int(goal[0]) + 2] = (255, 0, 0)
            x, y = int(pos[0]), int(pos[1])
            frames[t, max(y - 2, 0):y + 2, max(x - 2, 0):x + 2] = (255, 255, 255)
            d = goal - pos
            dist = float(np.linalg.norm(d))
            step = d / max(dist, 1e-6) * min(1.0, dist)
            grip = 1.0 if dist < 3 else -1.0
            actions[t] = (step[0], step[1], 0.0, grip)
            states[t] = (pos[0] / S, pos[1] / S, 0.0, grip)
            path.append(pos.copy())
            pos = np.clip(pos + 1.5 * step, 2, S - 3)
        instruction = "move the square to the red dot" if e % 2 == 0 else "push the block onto the goal"
        writer.add_episode(frames, instruction, actions=actions if with_actions else None,
                           states=states if with_actions else None, success=True, task="toy")
        for t in range(length - offset):
            motion = path[t + offset] - path[t]
            quadrant = int(motion[0] > 0) + 2 * int(motion[1] > 0)
            closes = int(actions[t + offset - 1, 3] > 0) + 2 * int(abs(motion).sum() > 1.0)
            ep_idx.append(e)
            ts.append(t)
            toks.append((quadrant, closes))
    writer.close()
    if latent_labels:
        save_latent_labels(root, np.array(ep_idx), np.array(ts), np.array(toks), codebook_size=4, offset=offset,
                           source="make_toy_dataset")
    return root
