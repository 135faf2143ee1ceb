"""The Meta-World wrapper: images, orientation, seeding, actions, instructions."""

import numpy as np
import pytest

from lapa_learning.errors import ConfigError
from lapa_learning.sim.instructions import INSTRUCTIONS, instruction_for
from lapa_learning.sim.metaworld_env import DEFAULT_TASKS, MetaWorldEnv, task_names
from lapa_learning.sim.seeds import eval_seed, train_seed


def test_every_task_has_paraphrased_instructions():
    assert set(INSTRUCTIONS) == set(task_names())
    assert len(INSTRUCTIONS) == 50
    for task, phrases in INSTRUCTIONS.items():
        assert len(phrases) >= 3 and len(set(phrases)) == len(phrases), task
    assert instruction_for("drawer-open-v3") == "open the drawer"
    with pytest.raises(KeyError, match="no instruction for task"):
        instruction_for("fly-v3")


def test_train_and_eval_seeds_never_overlap():
    train = {train_seed(b, e) for b in range(5) for e in range(2000)}
    evaluation = {eval_seed(b, e) for b in range(5) for e in range(2000)}
    assert not train & evaluation


@pytest.fixture(scope="module")
def env():
    with MetaWorldEnv("push-v3", camera="front", image_size=64, max_steps=60) as e:
        yield e


def test_render_shape_and_state(env):
    obs = env.reset(seed=0)
    assert obs.image.shape == (64, 64, 3) and obs.image.dtype == np.uint8
    assert obs.state.shape == (4,) and obs.state.dtype == np.float32
    np.testing.assert_allclose(obs.state[:3], env.ee_position, atol=1e-2)


def test_state_only_env_gives_the_same_states_without_images(env):
    with MetaWorldEnv("push-v3", max_steps=60, render=False) as blind:
        a, b = env.reset(seed=2), blind.reset(seed=2)
        assert b.image is None
        np.testing.assert_array_equal(a.raw, b.raw)
        action = env.expert_action()
        np.testing.assert_array_equal(action, blind.expert_action())
        np.testing.assert_array_equal(env.step(action)[0].raw, blind.step(action)[0].raw)
        # Per step: render=False skips this step's image, render=True renders it even in a blind env.
        seen, unseen = env.step(action, render=False)[0], blind.step(action, render=True)[0]
        assert seen.image is None and unseen.image.shape == (64, 64, 3)
        np.testing.assert_array_equal(seen.raw, unseen.raw)
        assert env.step(action)[0].image.shape == (64, 64, 3)  # the env's own setting again


def test_envs_of_different_tasks_in_one_process_draw_their_own_scenes():
    """Each env has its own OpenGL context; drawing one after another env was created must still show its own
    scene (gymnasium leaves the newest context current: batched evaluation drew garbage for the older envs)."""
    first = MetaWorldEnv("button-press-topdown-v3", image_size=32, max_steps=5)
    alone = first.reset(1).image
    second = MetaWorldEnv("plate-slide-v3", image_size=32, max_steps=5)
    other = second.reset(1).image
    try:
        np.testing.assert_array_equal(first.render(), alone)
        np.testing.assert_array_equal(second.render(), other)
        assert np.abs(alone.astype(int) - other).mean() > 5  # really two different scenes
    finally:
        first.close()
        second.close()


def test_same_seed_same_layout_other_seed_other_layout(env):
    a = env.reset(seed=4).raw.copy()
    b = env.reset(seed=4).raw.copy()
    c = env.reset(seed=6).raw.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_action_moves_end_effector_and_step_limit(env):
    env.reset(seed=0)
    start = env.ee_position.copy()
    for _ in range(10):
        _, success, done = env.step(np.array([0.0, 0.0, 1.0, 0.0]))
    assert env.ee_position[2] > start[2] + 0.02  # +dz lifts the hand
    for _ in range(50):
        _, _, done = env.step(np.zeros(4))
    assert done and env.steps == 60
    with pytest.raises(ValueError, match="4 values"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0]))


def _finger_row(image):
    """Mean image row of the gripper's cyan finger pad (low red, high green and blue)."""
    r, g, b = (image[..., c].astype(int) for c in range(3))
    rows, _ = np.nonzero((r < 90) & (g > 150) & (b > 150))
    assert len(rows) > 0, "the gripper finger is not visible"
    return rows.mean()


@pytest.mark.parametrize("camera", ["front", "corner"])
def test_images_are_upright(camera):
    """Lifting the hand (+z) moves it up in an upright image (towards row 0)."""
    with MetaWorldEnv("push-v3", camera=camera, image_size=128) as e:
        before = _finger_row(e.reset(seed=0).image)
        for _ in range(15):
            obs, _, _ = e.step(np.array([0.0, 0.0, 1.0, -1.0]))
        after = _finger_row(obs.image)
    assert after < before - 3, (before, after)


def test_bad_task_camera_and_size_are_named():
    with pytest.raises(ValueError, match="unknown Meta-World task 'fly-v3'"):
        MetaWorldEnv("fly-v3")
    with pytest.raises(ValueError, match="unknown camera 'nowhere'"):
        MetaWorldEnv("push-v3", camera="nowhere")
    with pytest.raises(ValueError, match="image_size"):
        MetaWorldEnv("push-v3", image_size=4)
    with pytest.raises(ConfigError, match="unknown embodiment 'arm'; expected one of: sawyer, hand"):
        MetaWorldEnv("push-v3", embodiment="arm")


@pytest.mark.slow
@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_expert_succeeds_on_default_tasks(task):
    from lapa_learning.sim.rollout import expert_episode

    with MetaWorldEnv(task, image_size=64, max_steps=200) as e:
        wins = sum(expert_episode(e, seed=train_seed(0, i)).success for i in range(3))
    assert wins >= 2


@pytest.mark.parametrize("task", ["window-open-v3", "push-v3"])
def test_the_first_frame_shows_this_episodes_layout_whatever_ran_before(task):
    """Meta-World's reset moves objects and the goal marker without recomputing positions: the first frame showed
    them where the model's default layout or the previous episode had them (window-open: 30% of its pixels off,
    results/first_frame_fix.json). reset() recomputes them, so the frame is the layout's and history-free."""
    import mujoco

    from lapa_learning.sim.rollout import expert_episode

    with MetaWorldEnv(task, image_size=32) as used, MetaWorldEnv(task, image_size=32) as fresh:
        expert_episode(used, train_seed(0, 0))  # some history
        frame = used.reset(train_seed(0, 1)).image
        np.testing.assert_array_equal(frame, fresh.reset(train_seed(0, 1)).image)
        unwrapped = used._env.unwrapped
        mujoco.mj_forward(unwrapped.model, unwrapped.data)  # every position as the physics has it
        np.testing.assert_array_equal(frame, used._observation().image)
