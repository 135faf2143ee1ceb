"""Scripted-expert rollouts in Meta-World: the source of every built-in dataset."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from lapa_learning.sim.instructions import instruction_for
from lapa_learning.sim.metaworld_env import MetaWorldEnv


@dataclass
class Episode:
    frames: np.ndarray  # (T, H, W, 3) uint8; frames[t] is seen before actions[t] is applied
    actions: np.ndarray  # (T, 4) float32 in [-1, 1]; the last one is the expert's next action (not applied)
    states: np.ndarray  # (T, 4) float32
    instruction: str
    task: str
    success: bool
    seed: int


def expert_episode(env: MetaWorldEnv, seed: int, action_noise: float = 0.0, paraphrase: bool = True) -> Episode:
    """Roll out the scripted expert from the layout of `seed`; Gaussian noise (std `action_noise`) on the
    executed actions adds diversity, and the executed (noisy, clipped) actions are the ones recorded.
    The episode ends at the first success or at the environment's step limit."""
    rng = np.random.default_rng(seed)
    obs = env.reset(seed)
    frames, actions, states = [obs.image], [], [obs.state]
    success = False
    while True:
        action = env.expert_action()
        if action_noise > 0:
            action = np.clip(action + rng.normal(0.0, action_noise, size=4), -1.0, 1.0).astype(np.float32)
        actions.append(action)
        obs, step_success, done = env.step(action)
        success = success or step_success
        frames.append(obs.image)
        states.append(obs.state)
        if done:  # success, or the step limit
            break
    actions.append(env.expert_action())  # what the expert would do next from the final frame
    instruction = instruction_for(env.task, random.Random(seed) if paraphrase else None)
    return Episode(frames=np.stack(frames), actions=np.stack(actions).astype(np.float32),
                   states=np.stack(states).astype(np.float32), instruction=instruction, task=env.task,
                   success=success, seed=seed)
