"""Chunked control without stalls: overlapping action chunks turned into one action per control step.

A chunk policy predicts T actions from one observation. Waiting for a chunk to run out before asking for the
next one stalls the robot for one model call at every boundary, and jumping from one chunk to the next is
abrupt. `ChunkBlender` keeps every chunk that still covers a step, each with the control step it starts at
(the step of the observation it was predicted from), and answers:

    action(step)      the action for `step`: the newest chunk's (blend="switch") or a weighted mean of all
                      chunks covering it (blend="ensemble", temporal ensembling as in ACT, Zhao et al. 2023)
    remaining(step)   how many steps the newest chunk still covers from `step` on
    needs_chunk(step) True when remaining(step) <= prefetch: start the next model call now, so that it is
                      back before the current chunk runs out

Ensembling weight of a chunk for a step: exp(-decay * (step - start)), i.e. by how far ahead that chunk had to
look when it was predicted; decay 0 is the plain mean, a large decay approaches "switch". (ACT weighs the
oldest prediction most; here fresher predictions count more, which follows a changing scene faster.)

    blender = ChunkBlender(chunk_size=8, blend="ensemble", decay=0.5, prefetch=3)
    blender.add(start_step=0, chunk=actions)        # (T, A) from the observation at step 0
    a = blender.action(step)                         # (A,) or None when no chunk covers `step`

No ROS and no torch here: policy_node and `lapa eval` share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lapa_learning.errors import ConfigError, InputError

BLENDS = ("switch", "ensemble")


@dataclass
class ChunkBlender:
    chunk_size: int  # T: actions per chunk
    blend: str = "ensemble"  # "switch": newest chunk only; "ensemble": weighted mean of the chunks covering a step
    decay: float = 0.5  # ensemble weight exp(-decay * (step - chunk start)); 0 = plain mean
    prefetch: int = 2  # needs_chunk() is True once the newest chunk covers this many steps or fewer
    chunks: list = field(default_factory=list, init=False, repr=False)  # [(start_step, (T, A))], oldest first

    def __post_init__(self):
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.blend not in BLENDS:
            raise ConfigError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if not (math.isfinite(self.decay) and self.decay >= 0):
            raise ConfigError(f"chunk decay (--chunk-decay, parameter chunk_decay) must be >= 0, got {self.decay!r}")
        if not 0 <= self.prefetch < self.chunk_size:
            raise ConfigError(f"prefetch must be in 0..chunk_size-1 ({self.chunk_size - 1}), got {self.prefetch}")

    def add(self, start_step: int, chunk) -> None:
        """A chunk predicted from the observation at control step `start_step`: chunk[i] is for start_step + i."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] != self.chunk_size:
            raise InputError(f"chunk: expected shape ({self.chunk_size}, A), got {chunk.shape}")
        if self.chunks and start_step < self.chunks[-1][0]:
            raise InputError(f"chunk start step {start_step} is older than the newest chunk's ({self.chunks[-1][0]})")
        self.chunks.append((int(start_step), chunk))

    def remaining(self, step: int) -> int:
        """Steps from `step` on that the newest chunk still covers (0 when there is none or it ran out)."""
        if not self.chunks:
            return 0
        start, _ = self.chunks[-1]
        return max(0, start + self.chunk_size - max(step, start))

    def needs_chunk(self, step: int) -> bool:
        return self.remaining(step) <= self.prefetch

    def action(self, step: int) -> np.ndarray | None:
        """The action for control step `step` (A,), or None when no chunk covers it. Drops chunks that ended."""
        self.chunks = [(s, c) for s, c in self.chunks if s + self.chunk_size > step]
        covering = [(s, c) for s, c in self.chunks if s <= step]
        if not covering:
            return None
        if self.blend == "switch":
            start, chunk = covering[-1]
            return chunk[step - start].copy()
        ages = np.array([step - s for s, _ in covering], dtype=np.float64)  # (n,) how far ahead each looked
        weights = np.exp(-self.decay * ages)
        values = np.stack([c[step - s] for s, c in covering])  # (n, A)
        return weights @ values / weights.sum()

    def reset(self) -> None:
        self.chunks = []


class BlendedPolicy:
    """A chunk policy that re-plans every `replan_every` steps, its overlapping chunks blended per environment.

    The same interface as Policy (act, act_batch(..., envs=), will_replan_for, reset), so `lapa eval` runs it as
    it runs a Policy: every step, the environments that re-plan are planned in one `predict_chunk` call and each
    environment's ChunkBlender gives its action.  blend "switch" with replan_every = T executes whole chunks,
    exactly like the Policy's own queue."""

    def __init__(self, policy, blend: str = "ensemble", decay: float = 0.5, replan_every: int = 1):
        if not 1 <= replan_every <= policy.chunk_size:
            raise ConfigError(f"replan every {replan_every} steps (--replan-every, parameter replan_every): expected "
                              f"1..chunk_size ({policy.chunk_size})")
        ChunkBlender(policy.chunk_size, blend, decay, prefetch=0)  # checks blend and decay
        self.policy, self.blend, self.decay, self.replan_every = policy, blend, decay, replan_every
        self.chunk_size = policy.chunk_size
        self._blenders: dict = {}  # env id -> ChunkBlender
        self._steps: dict = {}  # env id -> control steps taken in this episode
        self._tokens: dict = {}  # env id -> latent tokens (K,) of its newest plan, or None

    def __getattr__(self, name):  # checkpoint_dir, device, precision, action_names, ... of the wrapped policy
        if name == "policy":
            raise AttributeError(name)
        return getattr(self.policy, name)

    @property
    def report_latents(self) -> bool:
        return self.policy.report_latents

    @report_latents.setter
    def report_latents(self, value: bool) -> None:
        self.policy.report_latents = value

    @property
    def will_replan(self) -> bool:
        return self.will_replan_for(None)

    def will_replan_for(self, env) -> bool:
        return self._steps.get(env, 0) % self.replan_every == 0

    def act(self, image, instruction: str):
        return self.act_batch([image], [instruction], envs=[None])[0]

    def act_batch(self, images, instructions: list[str], envs: list):
        """One action per row; rows whose environment re-plans now must have an image (H, W, 3) uint8."""
        from lapa_learning.vla.policy import Action, check_envs

        check_envs(envs)
        plan = [b for b, env in enumerate(envs) if self.will_replan_for(env)]
        if plan:
            for b in plan:
                self.policy._check_image(images[b], f"images[{b}]")
                self.policy._check_instruction(instructions[b], f"instructions[{b}]")
            acts, lat = self.policy.predict_chunk(np.stack([images[b] for b in plan]), [instructions[b] for b in plan])
            for i, b in enumerate(plan):  # acts (n, T, A), lat (n, K) or None
                blender = self._blenders.setdefault(envs[b], ChunkBlender(self.chunk_size, self.blend, self.decay, 0))
                blender.add(self._steps.get(envs[b], 0), acts[i])
                self._tokens[envs[b]] = None if lat is None else lat[i].copy()
        out = []
        for env in envs:
            step = self._steps.get(env, 0)
            blender = self._blenders[env]
            values = blender.action(step).astype(np.float32)  # (A,)
            self._steps[env] = step + 1
            out.append(Action(values=values, gripper=float(values[-1]), latent_tokens=self._tokens[env],
                              chunk_index=step - blender.chunks[-1][0]))
        return out

    def reset(self, env=None) -> None:
        for store in (self._blenders, self._steps, self._tokens):
            if env is None:
                store.clear()
            else:
                store.pop(env, None)
