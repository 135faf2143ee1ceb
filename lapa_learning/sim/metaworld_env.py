"""Meta-World v3 as a small robot: an RGB camera, an end-effector state, and 4-dim delta actions.

    env = MetaWorldEnv("drawer-open-v3", camera="front", image_size=64)
    obs = env.reset(seed=3)                 # obs.image (64, 64, 3) uint8, upright
    obs, success, done = env.step(env.expert_action())

Action: (dx, dy, dz, gripper) in [-1, 1]; Meta-World moves the end-effector mocap by action * 1 cm per step
(80 steps per second) and closes the gripper for positive values.
State: (x, y, z) of the hand (end-effector) in metres, and the gripper opening (0 closed .. 1 open).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from lapa_learning.errors import ConfigError
from lapa_learning.sim.embodiment import HIDDEN_GROUP, apply_to_model, get_embodiment, hand_geoms

# MuJoCo picks its OpenGL backend when it is first imported: headless EGL unless the user chose one.
os.environ.setdefault("MUJOCO_GL", "egl")

FPS = 80  # Meta-World: frame_skip 5 x timestep 2.5 ms
MAX_EPISODE_STEPS = 500  # Meta-World refuses to step past this
ACTION_NAMES = ("dx", "dy", "dz", "gripper")
STATE_NAMES = ("x", "y", "z", "gripper_opening")

# Tasks whose scripted expert succeeds reliably and whose objects are clearly visible from the `front` view
# at 64 px (checked by eye on frames saved with scripts/save_task_frames.py; see docs/simulator.md).
DEFAULT_TASKS = ("push-v3", "pick-place-v3", "sweep-into-v3", "peg-insert-side-v3")

# What results recorded with this simulator can be pooled with: 1 = before the first frame showed the episode's
# layout (reset() did not recompute positions; results files without this field), 2 = since.
SIMULATOR_VERSION = 2


@dataclass(frozen=True)
class LookAtView:
    """A camera placed at `position` looking at `target` (world metres), image up = world +z."""

    position: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy: float  # vertical field of view, degrees


# Views made for this project: in front of the table, facing the robot, so the arm never hides the objects.
VIEWS: dict[str, LookAtView] = {
    "front": LookAtView(position=(0.55, 1.15, 0.65), target=(0.0, 0.62, 0.06), fovy=40.0),
    "front_left": LookAtView(position=(-0.55, 1.15, 0.65), target=(0.0, 0.62, 0.06), fovy=40.0),
    "front_center": LookAtView(position=(0.0, 1.3, 0.75), target=(0.0, 0.6, 0.05), fovy=40.0),
}
NATIVE_CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
_VIEW_SLOT = "corner"  # the model camera whose pose a LookAtView overwrites (per environment instance)


def task_names() -> list[str]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return list(ALL_V3_ENVIRONMENTS)


def parse_task_list(text: str, flag: str = "--tasks") -> list[str]:
    """'push-v3, drawer-open-v3' -> ['push-v3', 'drawer-open-v3']; ConfigError naming `flag` for an unknown or
    repeated task, or for an empty list."""
    return check_tasks([t.strip() for t in text.split(",") if t.strip()], flag)


def check_tasks(tasks, what: str, repeats: bool = False) -> list[str]:
    """The Meta-World task names `tasks` as a list; ConfigError naming `what` (a flag or parameter) for an unknown
    task, an empty list, or (unless `repeats`) a task given twice."""
    tasks = list(tasks)
    known = set(task_names())
    unknown = [t for t in tasks if t not in known]
    if unknown or not tasks:
        raise ConfigError(f"{what}: unknown Meta-World task(s) {unknown or '(none given)'}; "
                          f"expected names like push-v3 (all: {', '.join(sorted(known))})")
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated and not repeats:
        raise ConfigError(f"{what}: task(s) {repeated} given more than once")
    return tasks


def camera_names() -> list[str]:
    return [*VIEWS, *NATIVE_CAMERAS]


def check_max_steps(max_steps, flag: str = "--max-steps") -> None:
    """ConfigError naming `flag` unless max_steps is a whole number of steps in [1, MAX_EPISODE_STEPS]."""
    import numbers

    if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or \
            not 1 <= max_steps <= MAX_EPISODE_STEPS:
        raise ConfigError(f"{flag} {max_steps!r}: expected a step limit per episode in [1, {MAX_EPISODE_STEPS}] "
                          f"(Meta-World stops every episode at {MAX_EPISODE_STEPS})")


def simulator_camera(camera: str | None, flag: str = "--camera") -> str | None:
    """A camera as the simulator names it: a video key (observation.images.front) is read as its last part;
    ConfigError naming `flag` for a camera the simulator does not have (None stays None)."""
    if camera is None:
        return None
    name = camera[len("observation.images."):] if camera.startswith("observation.images.") else camera
    if name not in camera_names():
        raise ConfigError(f"{flag} {camera}: the simulator has no such camera; expected one of "
                          f"{', '.join(camera_names())} (or observation.images.<name>)")
    return name


@dataclass
class Observation:
    image: np.ndarray | None  # (H, W, 3) uint8 RGB, upright; None when not rendered (render=False)
    state: np.ndarray  # (4,) float32: hand x, y, z (m), gripper opening
    raw: np.ndarray  # (39,) Meta-World observation vector (what the scripted expert reads)


class MetaWorldEnv:
    def __init__(self, task: str, camera: str = "front", image_size: int = 64, max_steps: int = MAX_EPISODE_STEPS,
                 fovy: float | None = None, render: bool = True, embodiment: str = "sawyer"):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ML1_ARGS_KWARGS
        from metaworld.policies import ENV_POLICY_MAP

        self.embodiment = get_embodiment(embodiment)  # ConfigError naming the known ones
        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task {task!r}; expected one of: {', '.join(ALL_V3_ENVIRONMENTS)}")
        if camera not in VIEWS and camera not in NATIVE_CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; expected one of: {', '.join(camera_names())}")
        if not 16 <= int(image_size) <= 1024:
            raise ValueError(f"image_size must be in [16, 1024] pixels, got {image_size}")
        if not 1 <= max_steps <= MAX_EPISODE_STEPS:
            raise ValueError(f"max_steps must be in [1, {MAX_EPISODE_STEPS}], got {max_steps}")
        self.task, self.camera, self.image_size, self.max_steps = task, camera, int(image_size), int(max_steps)
        self.renders = bool(render)  # False: observations carry no image (state-only rollouts are much faster)

        slot = _VIEW_SLOT if camera in VIEWS else camera
        self._env = ALL_V3_ENVIRONMENTS[task](render_mode="rgb_array", camera_name=slot,
                                              width=self.image_size, height=self.image_size)
        # Let reset() draw a fresh object/goal layout from the seeded generator (what MT1's task list does).
        kwargs = dict(ML1_ARGS_KWARGS[task]["kwargs"])
        kwargs.pop("task_id", None)
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True  # draw layouts from the env's seeded generator, not global np.random
        self._env._set_task_called = True
        self._env._set_task_inner(**kwargs)
        # The goal position is part of the observation (as in MT1): the scripted experts read it from there.
        self._env._partially_observable = False
        self._env.__dict__.pop("sawyer_observation_space", None)
        model = self._env.model
        model.vis.quality.shadowsize = 0  # shadows and multisampling off: ~8x faster small renders
        model.vis.quality.offsamples = 0
        # Reflections off (floor, window glass): the reflective pass re-drew the scene's ~67k mesh triangles, a
        # third of the time of a 64 px software-rendered (llvmpipe) frame; images change by < 0.01 grey levels
        # on average (bench/render_speed.py).
        model.mat_reflectance[:] = 0.0
        self._camera_id = _camera_id(model, slot)
        if camera in VIEWS:
            _place_camera(model, self._camera_id, VIEWS[camera])
        if fovy is not None:
            model.cam_fovy[self._camera_id] = float(fovy)
        apply_to_model(model, self.embodiment)  # visual edits only: groups and colours
        self._expert = ENV_POLICY_MAP[task]()
        self._obs: np.ndarray | None = None
        self._flip: bool | None = None
        self.steps = 0

    # ------------------------------------------------------------------ episode API
    def reset(self, seed: int) -> Observation:
        import mujoco

        self._env.seed(int(seed))  # seeds the generator that reset() draws the object/goal layout from
        self._obs, _ = self._env.reset()
        # Meta-World's reset moves the goal marker without recomputing where sites are, so the first frame drew it
        # where the previous episode left it (push-v3, push-back-v3: a frame that depended on the env's history).
        # Positions only: the physics (velocities, solver warm start) is untouched, so trajectories do not change.
        unwrapped = self._env.unwrapped
        mujoco.mj_kinematics(unwrapped.model, unwrapped.data)
        mujoco.mj_camlight(unwrapped.model, unwrapped.data)
        self.steps = 0
        return self._observation()

    def step(self, action: np.ndarray, render: bool | None = None) -> tuple[Observation, bool, bool]:
        """Apply one 4-dim action; returns (observation, success, done). done = success or step limit.

        render=False skips the camera image of this step (observation.image is None): rendering is most of the
        cost of a step, and a chunked policy reads an image only when it re-plans. None: the env's setting."""
        if self._obs is None:
            raise RuntimeError("call reset(seed) before step()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (4,):
            raise ValueError(f"action must have 4 values (dx, dy, dz, gripper), got shape {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        self._obs, _reward, _terminated, _truncated, info = self._env.step(np.clip(action, -1.0, 1.0))
        self.steps += 1
        success = bool(info["success"] > 0)
        return self._observation(render), success, success or self.steps >= self.max_steps

    def expert_action(self) -> np.ndarray:
        """The shipped scripted expert's action for the current state, clipped to the valid range."""
        if self._obs is None:
            raise RuntimeError("call reset(seed) before expert_action()")
        with warnings.catch_warnings():  # the experts' gains exceed 1 by design; the env clips, and so do we
            warnings.filterwarnings("ignore", message="Constant")
            action = self._expert.get_action(self._obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def render(self) -> np.ndarray:
        viewer = self._env.mujoco_renderer._get_viewer("rgb_array")
        # Every env has its own OpenGL context, and gymnasium makes it current only when it is created: with several
        # envs in one process (batched evaluation, the sim node's task cycle) the newest context would draw this
        # env's scene with another model's meshes. So each frame makes ours current and (EGL) releases it again,
        # which also lets another thread draw next (a context can be current in one thread only).
        viewer.make_context_current()
        try:
            if self.embodiment.draw_hand:
                # gymnasium's viewer adds these "markers" to the scene between mjv_updateScene and mjr_render.
                viewer.vopt.geomgroup[HIDDEN_GROUP] = 0
                for geom in hand_geoms(self._env.data):
                    viewer.add_marker(**geom)
            image = self._env.render()
        finally:
            _release_context()
        if self._flip is None:
            self._flip = _camera_upside_down(self._env, self._camera_id)
        return np.ascontiguousarray(image[::-1, ::-1] if self._flip else image)

    @property
    def ee_position(self) -> np.ndarray:
        """End-effector (hand) position in metres, as in the state."""
        if self._obs is None:
            raise RuntimeError("call reset(seed) before reading ee_position")
        return np.asarray(self._obs[:3], dtype=np.float32)

    def close(self) -> None:
        try:
            self._env.close()
        except Exception:  # EGL teardown can fail at interpreter exit; nothing is lost
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _observation(self, render: bool | None = None) -> Observation:
        raw = np.asarray(self._obs, dtype=np.float32)
        render = self.renders if render is None else render
        return Observation(image=self.render() if render else None, state=raw[:4].copy(), raw=raw)


def _release_context() -> None:
    """Make no OpenGL context current in this thread (EGL only; other backends keep theirs)."""
    if os.environ.get("MUJOCO_GL") == "egl":
        from mujoco import egl

        if egl.EGL_DISPLAY is not None:
            egl.EGL.eglMakeCurrent(egl.EGL_DISPLAY, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_SURFACE,
                                   egl.EGL.EGL_NO_CONTEXT)


def _camera_id(model, name: str) -> int:
    import mujoco

    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    if cid < 0:
        raise ValueError(f"camera {name!r} not found in the Meta-World model")
    return cid


def _place_camera(model, cid: int, view: LookAtView) -> None:
    import mujoco

    pos = np.asarray(view.position, dtype=np.float64)
    forward = np.asarray(view.target, dtype=np.float64) - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    # MuJoCo cameras look along their -z axis with +y up in the image.
    rotation = np.stack([right, up, -forward], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rotation.flatten())
    model.cam_pos[cid] = pos
    model.cam_quat[cid] = quat
    model.cam_fovy[cid] = view.fovy
    model.cam_mode[cid] = mujoco.mjtCamLight.mjCAMLIGHT_FIXED


def _camera_upside_down(env, cid: int) -> bool:
    """Some Meta-World cameras (e.g. `corner`) have image-up pointing at the floor: rotate those by 180 deg."""
    up_axis = np.asarray(env.data.cam_xmat[cid]).reshape(3, 3)[:, 1]
    return bool(up_axis[2] < 0)
