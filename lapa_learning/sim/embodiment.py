"""What performs the Meta-World tasks on camera: the Sawyer arm, or something that does not look like it.

    env = MetaWorldEnv("push-v3", embodiment="hand")   # same physics and experts, other pictures

Embodiments change only what the camera sees, never the physics: the scripted experts move the same (invisible)
Sawyer arm, so states, successes and layouts are identical to `sawyer` for the same seeds and actions.

- `sawyer`: Meta-World as shipped (identical images to a MetaWorldEnv without an embodiment).
- `hand`: the whole robot (pedestal, arm, gripper) is hidden by moving its geoms to a geom group the renderer
  does not draw (groups change no physics); a human-like hand is drawn instead: a skin-coloured palm and two
  fingers placed on the gripper's finger pads (so they open and close with the gripper), and a blue sleeve
  from the wrist up and back, where the arm came from. The hand is added to the scene at render time
  (mjvGeoms, not model bodies), so it has no mass and no contacts.
- `recolored`: the same arm, recoloured: grey-blue links instead of red, black joints, yellow finger pads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lapa_learning.errors import ConfigError

HIDDEN_GROUP = 5  # a geom group that MuJoCo's default visual options do not render (0-2 are drawn)
ROBOT_ROOT = "base"  # Meta-World's Sawyer: every robot body (pedestal, arm, gripper) is below this one
SKIN = (0.92, 0.70, 0.56, 1.0)
SLEEVE = (0.16, 0.32, 0.78, 1.0)


@dataclass(frozen=True)
class Embodiment:
    name: str
    hide_robot: bool = False  # draw none of the robot's own geoms
    draw_hand: bool = False  # draw the human-like hand on the end effector
    link_rgba: tuple[float, ...] | None = None  # recolour the arm links (the red parts)
    joint_rgba: tuple[float, ...] | None = None  # recolour the dark parts (pedestal, joint covers)
    pad_rgba: tuple[float, ...] | None = None  # recolour the finger pads


EMBODIMENTS: dict[str, Embodiment] = {
    "sawyer": Embodiment("sawyer"),
    "hand": Embodiment("hand", hide_robot=True, draw_hand=True),
    "recolored": Embodiment("recolored", link_rgba=(0.62, 0.68, 0.74, 1.0), joint_rgba=(0.05, 0.05, 0.05, 1.0),
                            pad_rgba=(1.0, 0.85, 0.0, 1.0)),
}


def embodiment_names() -> list[str]:
    return list(EMBODIMENTS)


def get_embodiment(name: str) -> Embodiment:
    if name not in EMBODIMENTS:
        raise ConfigError(f"unknown embodiment {name!r}; expected one of: {', '.join(EMBODIMENTS)}")
    return EMBODIMENTS[name]


def robot_geoms(model) -> np.ndarray:
    """Ids of every geom on the robot (the subtree of body `base`), whatever their group."""
    import mujoco

    root = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, ROBOT_ROOT)
    if root < 0:
        raise ValueError(f"body {ROBOT_ROOT!r} not found in the Meta-World model")
    in_robot = np.zeros(model.nbody, dtype=bool)
    for body in range(model.nbody):  # parents come before children in a compiled model
        in_robot[body] = body == root or (body > 0 and in_robot[model.body_parentid[body]])
    return np.flatnonzero(in_robot[model.geom_bodyid])


def apply_to_model(model, embodiment: Embodiment) -> None:
    """Edit the model's visual fields (geom groups and colours only: nothing that the physics reads)."""
    geoms = robot_geoms(model)
    if embodiment.hide_robot:
        model.geom_group[geoms] = HIDDEN_GROUP
    shipped = {g: model.geom_rgba[g].copy() for g in geoms if model.geom_rgba[g, 3] > 0}  # visible colours
    for rgba, pick in ((embodiment.link_rgba, _is_link), (embodiment.joint_rgba, _is_dark),
                       (embodiment.pad_rgba, _is_pad)):
        if rgba is not None:
            model.geom_rgba[[g for g, colour in shipped.items() if pick(colour)]] = rgba


def _is_link(rgba) -> bool:  # Sawyer's red (0.5, 0.1, 0.1)
    return rgba[0] > 0.4 and rgba[1] < 0.2 and rgba[2] < 0.2


def _is_dark(rgba) -> bool:  # pedestal, torso, head (0.2 grey) and the black wrist ring
    return max(rgba[:3]) < 0.25


def _is_pad(rgba) -> bool:  # the white and cyan finger pads
    return rgba[1] > 0.9 and rgba[2] > 0.9


def hand_geoms(data) -> list[dict]:
    """The hand's mjvGeoms for the current state: dicts of (type, size, pos, mat, rgba) in world coordinates.

    Meta-World's `hand` body frame: x points from the wrist to the fingertips (down), y across the fingers."""
    import mujoco

    hand = data.body("hand")
    rotation = hand.xmat.reshape(3, 3)  # columns: the hand's x, y, z axes in world coordinates
    down = rotation[:, 0]
    palm_centre = hand.xpos - 0.045 * down  # just above the fingers' roots
    geoms = [dict(type=mujoco.mjtGeom.mjGEOM_BOX, size=np.array([0.035, 0.055, 0.022]), pos=palm_centre,
                  mat=rotation.flatten(), rgba=np.array(SKIN))]
    for pad in ("rightpad", "leftpad"):  # the fingers sit on the pads, so they follow the gripper
        centre = data.body(pad).xpos
        geoms.append(_capsule(centre - 0.03 * down, centre + 0.045 * down, 0.015, SKIN))
    wrist = palm_centre - 0.03 * down
    # The sleeve leaves the wrist up and towards the robot's base (world -y), where the Sawyer arm came from.
    back = np.array([0.0, -1.0, 0.0]) + down[1] * down  # world -y minus its part along `down`
    sleeve_dir = -0.8 * down + 0.6 * back / np.linalg.norm(back)
    geoms.append(_capsule(wrist, wrist + 0.32 * sleeve_dir, 0.032, SLEEVE))
    geoms.append(_capsule(wrist - 0.005 * down, wrist + 0.02 * sleeve_dir, 0.029, SKIN))  # the wrist itself
    return geoms


def _capsule(start: np.ndarray, end: np.ndarray, radius: float, rgba) -> dict:
    """A capsule from `start` to `end` (world points): MuJoCo capsules lie along their frame's z axis."""
    import mujoco

    axis = end - start
    length = float(np.linalg.norm(axis))
    quat = np.zeros(4)
    mujoco.mju_quatZ2Vec(quat, axis / length)
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return dict(type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=np.array([radius, length / 2, 0.0]),
                pos=(start + end) / 2, mat=mat, rgba=np.array(rgba))
