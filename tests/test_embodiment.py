"""Embodiments: the hand hides the whole Sawyer and draws a hand that follows the end effector and the gripper;
the recoloured arm changes only the arm's pixels; the physics, and so the experts, are untouched."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lapa_learning.errors import ConfigError
from lapa_learning.sim.embodiment import HIDDEN_GROUP, embodiment_names, hand_geoms, robot_geoms
from lapa_learning.sim.metaworld_env import DEFAULT_TASKS, MetaWorldEnv
from lapa_learning.sim.seeds import train_seed

TASK, SEED, SIZE = "push-v3", 5, 128


@pytest.fixture(scope="module")
def envs():
    made = {name: MetaWorldEnv(TASK, image_size=SIZE, max_steps=100, embodiment=name) for name in embodiment_names()}
    yield made
    for env in made.values():
        env.close()


def _hidden_render(env, geoms) -> np.ndarray:
    """env's image with `geoms` moved to the group the renderer skips (then put back)."""
    model = env._env.model
    groups = model.geom_group[geoms].copy()
    model.geom_group[geoms] = HIDDEN_GROUP
    try:
        return env.render()
    finally:
        model.geom_group[geoms] = groups


def _differs(a, b) -> np.ndarray:
    return np.any(a != b, axis=-1)  # (H, W) bool


def _same_state(envs, seed, steps=0):
    for env in envs.values():
        env.reset(seed)
    for _ in range(steps):
        action = envs["sawyer"].expert_action()
        for env in envs.values():
            env.step(action, render=False)


def test_unknown_embodiment_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown embodiment 'robot'; expected one of: sawyer, hand, recolored"):
        MetaWorldEnv(TASK, embodiment="robot")


def test_sawyer_is_the_model_as_shipped(envs):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    shipped = ALL_V3_ENVIRONMENTS[TASK]().model
    model = envs["sawyer"]._env.model
    np.testing.assert_array_equal(model.geom_group, shipped.geom_group)
    np.testing.assert_array_equal(model.geom_rgba, shipped.geom_rgba)


def test_physics_and_expert_are_the_same_in_every_embodiment(envs):
    observations = {name: env.reset(SEED) for name, env in envs.items()}
    for _ in range(40):
        action = envs["sawyer"].expert_action()
        for name, env in envs.items():
            np.testing.assert_array_equal(env.expert_action(), action, err_msg=name)
            observations[name] = env.step(action)[0]
        for name, obs in observations.items():
            np.testing.assert_array_equal(obs.raw, observations["sawyer"].raw, err_msg=name)


def test_hand_hides_the_arm_and_keeps_the_objects(envs):
    _same_state(envs, SEED)
    sawyer, hand = envs["sawyer"].render(), envs["hand"].render()
    model = envs["sawyer"]._env.model
    empty = _hidden_render(envs["sawyer"], robot_geoms(model))  # the scene without any robot
    arm = _differs(sawyer, empty)  # where the Sawyer is seen
    drawn = _differs(hand, empty)  # where the hand is drawn
    assert arm.mean() > 0.03, "the Sawyer should cover a good part of the image"
    assert drawn.sum() > 100, "the hand should be visible"
    # Every arm pixel looks different with the hand: the background, or the sleeve where it crosses the arm.
    assert _differs(hand, sawyer)[arm].mean() > 0.97
    assert (arm & ~drawn).sum() > 0.4 * arm.sum()
    np.testing.assert_array_equal(hand[~drawn], empty[~drawn])
    # The object (the puck) looks the same wherever neither the arm nor the hand covers it.
    obj = [g for g in range(model.ngeom) if model.geom_bodyid[g] == model.body("obj").id]
    puck = _differs(empty, _hidden_render(envs["sawyer"], obj)) & ~arm & ~drawn
    assert puck.sum() > 20
    np.testing.assert_array_equal(hand[puck], sawyer[puck])


def test_recolored_changes_only_the_arm(envs):
    _same_state(envs, SEED, steps=20)
    sawyer, recolored = envs["sawyer"].render(), envs["recolored"].render()
    arm = _differs(sawyer, _hidden_render(envs["sawyer"], robot_geoms(envs["sawyer"]._env.model)))
    changed = _differs(sawyer, recolored)
    assert changed[arm].mean() > 0.5
    assert not changed[~arm].any()


def _centroid(mask) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


def test_hand_moves_with_the_end_effector(envs):
    env = envs["hand"]
    env.reset(SEED)
    offsets, centroids = [], []
    for action in ([0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0]):
        for _ in range(12):
            env.step(np.array(action), render=False)
        palm = hand_geoms(env._env.data)[0]["pos"]
        offsets.append(palm - env.ee_position)
        image = env.render()
        centroids.append(_centroid(_skin(image)))
    np.testing.assert_allclose(offsets, [offsets[0]] * 3, atol=0.005)  # the palm stays on the end effector
    assert min(np.linalg.norm(centroids[i + 1] - centroids[i]) for i in range(2)) > 3  # and it moves on screen


def _skin(image) -> np.ndarray:
    r, g, b = (image[..., c].astype(int) for c in range(3))
    return (r > 170) & (g > 110) & (b > 80) & (r > g + 20) & (g > b)  # (H, W): the hand's skin colour


def test_fingers_follow_the_gripper(envs):
    import cv2

    env = envs["hand"]
    gaps, blobs = {}, {}
    for name, gripper in (("open", -1.0), ("closed", 1.0)):
        env.reset(SEED)
        for _ in range(15):
            env.step(np.array([0.0, 0.0, 0.0, gripper]), render=False)
        fingers = hand_geoms(env._env.data)[1:3]
        gaps[name] = np.linalg.norm(fingers[0]["pos"] - fingers[1]["pos"])
        skin = _skin(env.render())
        rows = np.flatnonzero(skin.any(axis=1))
        tips = skin[int(rows[0] + 0.6 * (rows[-1] - rows[0])):]  # the lowest 40% of the hand: the fingers
        blobs[name] = cv2.connectedComponents(tips.astype(np.uint8))[0] - 1
    assert gaps["open"] > gaps["closed"] + 0.05, gaps  # metres between the finger centres
    assert blobs["open"] >= 2 and blobs["closed"] == 1, blobs  # two fingers apart on screen, or one closed


def test_cli_embodiment_writes_an_action_free_set(tmp_path):
    from lapa_learning.data.reader import EpisodeDataset

    run = lambda *a: subprocess.run([sys.executable, "-m", "lapa_learning.cli", "data", "generate", *a],  # noqa
                                    capture_output=True, text=True, timeout=300)
    out = tmp_path / "hand"
    res = run("--out", str(out), "--tasks", TASK, "--episodes-per-task", "1", "--max-steps", "20",
              "--embodiment", "hand")
    assert res.returncode == 0, res.stderr
    ds = EpisodeDataset(out)
    assert not ds.has_actions and len(ds) == 1
    info = json.loads((out / "meta/info.json").read_text())
    assert info["robot_type"] == "hand_metaworld" and "action" not in info["features"]
    res = run("--out", str(tmp_path / "x"), "--tasks", TASK, "--embodiment", "robot")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == ("lapa: error: --embodiment: unknown embodiment 'robot'; "
                                                   "expected one of: sawyer, hand, recolored")
    res = run("--out", str(out), "--append", "--tasks", TASK, "--episodes-per-task", "1", "--max-steps", "20")
    assert res.returncode == 2 and "holds embodiment robot_type 'hand_metaworld'" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_expert_succeeds_as_often_with_the_hand(task):
    from lapa_learning.sim.rollout import expert_episode

    episodes = {}
    for name in ("sawyer", "hand"):
        with MetaWorldEnv(task, max_steps=200, embodiment=name) as env:
            episodes[name] = [expert_episode(env, seed=train_seed(0, i)) for i in range(3)]
    for sawyer, hand in zip(episodes["sawyer"], episodes["hand"]):
        assert hand.success == sawyer.success
        np.testing.assert_array_equal(hand.states, sawyer.states)
        assert np.abs(hand.frames.astype(int) - sawyer.frames).mean() > 1  # other pictures, same motion
    assert sum(ep.success for ep in episodes["hand"]) >= 2
