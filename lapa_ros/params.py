"""Node parameters, read once into frozen dataclasses.

Each field is one ROS parameter (same name, the field's default, the comment as its description). Values are
declared with dynamic typing and converted here, so that `control_rate: 10` in YAML works for a float field.
Bad values raise ConfigError naming the parameter; the nodes exit with that one line at start-up.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields

from lapa_learning.errors import ConfigError


def _p(default, help: str):
    """A dataclass field with a ROS parameter description."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


IMAGE_TRANSPORTS = ("raw", "compressed")  # sensor_msgs/Image, or sensor_msgs/CompressedImage (JPEG/PNG)


def _transport(obj) -> None:
    if obj.image_transport not in IMAGE_TRANSPORTS:
        raise ConfigError(f"parameter image_transport must be raw (sensor_msgs/Image) or compressed "
                          f"(sensor_msgs/CompressedImage, JPEG or PNG), got {obj.image_transport!r}")


def _positive(obj, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"parameter {name} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class PolicyParams:
    checkpoint: str = _p("", "checkpoint directory of a finetuned LAPA policy (required)")
    device: str = _p("auto", "torch device: auto, cpu, cuda, cuda:1, mps")
    replan_every: int = _p(0, "chunk_blend off: run the model every N actions (0 = the checkpoint's default)")
    chunk_blend: str = _p("ensemble", "chunk policies: ensemble (temporal ensembling), switch, or off (re-plan when "
                                      "the chunk runs out: the robot waits for the model)")
    chunk_decay: float = _p(0.5, "ensemble weight exp(-decay * steps the chunk looked ahead); 0 = plain mean")
    chunk_prefetch: int = _p(2, "start the next model call when the current chunk covers this many steps or fewer")
    enabled: bool = _p(False, "send motion commands (else zero twists); switch with ~/enable")
    infer_when_disabled: bool = _p(False, "run the model while disabled and publish ~/proposed_twist (dry run)")
    image_topic: str = _p("camera/image_raw", "camera input: sensor_msgs/Image, or CompressedImage (image_transport)")
    image_transport: str = _p("raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage, JPEG or PNG "
                                     "(image_transport's <camera topic>/compressed)")
    instruction_topic: str = _p("instruction", "std_msgs/String input (transient local)")
    twist_topic: str = _p("servo_node/delta_twist_cmds", "geometry_msgs/TwistStamped output (MoveIt Servo)")
    gripper_topic: str = _p("gripper/command", "std_msgs/Float64 gripper output, dataset units")
    frame_id: str = _p("base_link", "frame of the twist (MoveIt Servo: the planning frame or the EE frame)")
    control_rate: float = _p(10.0, "Hz: model calls at most this often (once per new image)")
    publish_rate: float = _p(30.0, "Hz: the current command (or zero) is re-sent this often; 0 = only on change")
    linear_scale: float = _p(0.1, "m/s per dataset unit of dx, dy, dz")
    angular_scale: float = _p(0.5, "rad/s per dataset unit of droll, dpitch, dyaw")
    max_linear_speed: float = _p(0.1, "m/s clamp on the norm of the linear velocity")
    max_angular_speed: float = _p(0.5, "rad/s clamp on the norm of the angular velocity")
    gripper_min: float = _p(-1.0, "lower clamp of the gripper command")
    gripper_max: float = _p(1.0, "upper clamp of the gripper command")
    image_timeout: float = _p(0.5, "s: older images (and commands computed from them) give zero twists")
    instruction_timeout: float = _p(0.0, "s: an older instruction stops the arm (0 = valid until replaced)")
    max_instruction_chars: int = _p(300, "a longer instruction stops the arm and is never handed to the model")
    status_rate: float = _p(1.0, "Hz of ~/status (diagnostic_msgs/DiagnosticArray)")
    publish_preview: bool = _p(False, "publish ~/latent_preview: the frame next to the LAQ decoder's picture of "
                                      "frame t+H for the predicted latent tokens (needs a latent head and the LAQ)")
    preview_rate: float = _p(2.0, "Hz: the latent preview is drawn at most this often, off the command path")
    preview_laq: str = _p("", "LAQ checkpoint for the preview (empty = the one the checkpoint's record names)")

    def __post_init__(self):
        _transport(self)
        _positive(self, "control_rate", "linear_scale", "angular_scale", "status_rate", "preview_rate")
        if not (math.isfinite(self.publish_rate) and self.publish_rate >= 0):
            raise ConfigError(f"parameter publish_rate must be >= 0 (0 = only on change), got {self.publish_rate}")
        if self.max_instruction_chars < 1:
            raise ConfigError(f"parameter max_instruction_chars must be >= 1, got {self.max_instruction_chars}")
        if self.chunk_blend not in ("ensemble", "switch", "off"):
            raise ConfigError(f"parameter chunk_blend must be ensemble, switch or off, got {self.chunk_blend!r}")
        if not (math.isfinite(self.chunk_decay) and self.chunk_decay >= 0):
            raise ConfigError(f"parameter chunk_decay must be >= 0, got {self.chunk_decay}")
        if self.chunk_prefetch < 0:
            raise ConfigError(f"parameter chunk_prefetch must be >= 0, got {self.chunk_prefetch}")
        if self.replan_every < 0:
            raise ConfigError(f"parameter replan_every must be >= 0, got {self.replan_every}")


@dataclass(frozen=True)
class RecorderParams:
    dataset_root: str = _p("", "episode dataset folder (created, or appended to)")
    fps: float = _p(10.0, "Hz: frames sampled per second (the dataset fps)")
    image_topic: str = _p("camera/image_raw", "camera input: sensor_msgs/Image, or CompressedImage (image_transport)")
    image_transport: str = _p("raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage, JPEG or PNG "
                                     "(image_transport's <camera topic>/compressed)")
    twist_topic: str = _p("servo_node/delta_twist_cmds", "geometry_msgs/TwistStamped teleop command")
    gripper_topic: str = _p("gripper/command", "std_msgs/Float64 teleop gripper command")
    instruction_topic: str = _p("instruction", "std_msgs/String: the task being demonstrated")
    image_max_age: float = _p(0.2, "s: a frame whose newest image is older is dropped")
    twist_max_age: float = _p(0.2, "s: a frame whose newest twist is older is dropped")
    gripper_max_age: float = _p(0.0, "s: same for the gripper (0 = hold the last command forever)")
    gripper_default: float = _p(-1.0, "gripper value before any gripper command (Meta-World: -1 = open)")
    image_size: list = _p([0, 0], "[height, width] stored; [0, 0] = the camera's size")
    video_key: str = _p("observation.images.front", "dataset video feature name")
    action_names: list = _p(["dx", "dy", "dz", "gripper"], "dataset action order")
    linear_scale: float = _p(0.1, "m/s per dataset unit (the inverse of the policy node's scaling: use its value)")
    angular_scale: float = _p(0.5, "rad/s per dataset unit (the policy node's angular_scale)")
    action_limit: float = _p(1.0, "clip actions to +-this (dataset units; 0 = no clipping)")
    max_episode_seconds: float = _p(300.0, "an episode longer than this is stopped and saved")
    min_episode_frames: int = _p(2, "shorter episodes are discarded with a warning")
    max_instruction_chars: int = _p(300, "~/start refuses an episode whose instruction is longer")

    def __post_init__(self):
        if not self.dataset_root:
            raise ConfigError("parameter dataset_root is required: the episode dataset folder to write")
        _transport(self)
        _positive(self, "fps", "image_max_age", "twist_max_age", "linear_scale", "angular_scale",
                  "max_episode_seconds")
        if self.max_instruction_chars < 1:
            raise ConfigError(f"parameter max_instruction_chars must be >= 1, got {self.max_instruction_chars}")
        if self.gripper_max_age < 0:
            raise ConfigError(f"parameter gripper_max_age must be >= 0 (0 = hold), got {self.gripper_max_age}")
        if len(self.image_size) != 2 or any(int(v) < 0 for v in self.image_size):
            raise ConfigError(f"parameter image_size must be [height, width] >= 0, got {list(self.image_size)}")


@dataclass(frozen=True)
class SimParams:
    tasks: list = _p(["push-v3"], "Meta-World tasks; ~/reset goes to the next one (round robin)")
    camera: str = _p("front", "camera view (see lapa_learning.sim.metaworld_env.camera_names)")
    image_size: int = _p(64, "square image size in pixels")
    max_steps: int = _p(200, "steps per episode before it ends unsuccessfully")
    seed: int = _p(0, "seed of the first episode; each reset adds 1")
    step_rate: float = _p(40.0, "Hz of wall time: simulation steps per second (each step is 1/80 s of sim time)")
    publish_every: int = _p(1, "publish the camera image every N steps")
    publish_clock: bool = _p(True, "publish /clock (sim time) for nodes run with use_sim_time")
    command_timeout: float = _p(0.25, "s (sim time): older commands are ignored (zero motion, gripper held)")
    reset_on_start: bool = _p(True, "start the first episode at start-up")
    image_topic: str = _p("camera/image_raw", "sensor_msgs/Image output (rgb8)")
    instruction_topic: str = _p("instruction", "std_msgs/String output (transient local), set at each reset")
    twist_topic: str = _p("servo_node/delta_twist_cmds", "geometry_msgs/TwistStamped end-effector velocity in")
    gripper_topic: str = _p("gripper/command", "std_msgs/Float64 gripper in (-1 open .. +1 close)")
    expert_topic: str = _p("sim/expert_action", "std_msgs/Float32MultiArray: the scripted expert's action")
    camera_frame: str = _p("sim_camera", "frame_id of the images")

    def __post_init__(self):
        if not self.tasks:
            raise ConfigError("parameter tasks must name at least one Meta-World task")
        from lapa_learning.sim.metaworld_env import MAX_EPISODE_STEPS, camera_names, check_tasks

        check_tasks(self.tasks, "parameter tasks", repeats=True)  # round robin: a repeated task gets more episodes
        if self.camera not in camera_names():
            raise ConfigError(f"parameter camera: unknown camera {self.camera!r}; expected one of "
                              f"{', '.join(camera_names())}")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"parameter image_size must be in [16, 1024] pixels, got {self.image_size}")
        if not 1 <= self.max_steps <= MAX_EPISODE_STEPS:
            raise ConfigError(f"parameter max_steps must be in [1, {MAX_EPISODE_STEPS}] (Meta-World's limit), "
                              f"got {self.max_steps}")
        _positive(self, "step_rate", "command_timeout")
        if not 0 <= self.seed < 2**32 - 10**6:  # numpy seeds are >= 0; each reset adds 1
            raise ConfigError(f"parameter seed must be an integer in [0, {2**32 - 10**6}), got {self.seed}")
        if self.publish_every < 1:
            raise ConfigError(f"parameter publish_every must be >= 1, got {self.publish_every}")


@dataclass(frozen=True)
class TeleopParams:
    expert_topic: str = _p("sim/expert_action", "std_msgs/Float32MultiArray in: the expert's (dx, dy, dz, gripper)")
    twist_topic: str = _p("servo_node/delta_twist_cmds", "geometry_msgs/TwistStamped out")
    gripper_topic: str = _p("gripper/command", "std_msgs/Float64 out")
    frame_id: str = _p("world", "frame of the twist")
    linear_scale: float = _p(0.8, "m/s per unit of expert action (Meta-World: 0.8)")
    noise: float = _p(0.0, "std of Gaussian noise added to the expert action (units), for more varied data")
    seed: int = _p(0, "seed of the noise")

    def __post_init__(self):
        _positive(self, "linear_scale")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ConfigError(f"parameter noise must be >= 0, got {self.noise}")


# ----------------------------------------------------------------------------------------------------------------
# String parameters whose value `off` reaches the node as boolean false: ROS reads parameter files (and
# `-p name:=off`) as YAML 1.1, where a bare off / no / false is a boolean.
OFF_WORDS = ("chunk_blend",)

# Parameters that every node takes besides its dataclass's: ROS's own, and runtime.py's executor.
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service", "executor")
ROS_PARAMETER_PREFIXES = ("qos_overrides.",)


def unknown_parameters(given, known) -> str:
    """The problem with parameter names in `given` that are not in `known` (nor ROS's own); "" when none.

    Each unknown name is listed with the nearest known names, so a typo in a parameter file or a `-p` does not
    go unnoticed (ROS itself ignores overrides that the node never declares)."""
    known = sorted(set(known) | set(ROS_PARAMETERS))
    bad = sorted(n for n in given if n not in known and not n.startswith(ROS_PARAMETER_PREFIXES))
    if not bad:
        return ""
    parts = []
    for name in bad:
        near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        parts.append(f"{name} (did you mean {' or '.join(near)}?)" if near else f"{name} (no similar name)")
    return (f"unknown parameter{'s' if len(bad) > 1 else ''} {', '.join(parts)}: not a parameter of this node "
            f"(see docs/ros.md); fix the name in the parameter file or -p")


def _convert(name: str, value, kind: str):
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind == "str":
            if value is False and name in OFF_WORDS:  # YAML 1.1 (ROS) reads a bare `off` / `no` as false
                return "off"
            if not isinstance(value, str):
                raise TypeError
            return value
        if kind == "list":
            if isinstance(value, (str, bytes)):
                raise TypeError
            return tuple(value)
    except (TypeError, ValueError, OverflowError):
        pass
    raise ConfigError(f"parameter {name} must be a {kind}, got {value!r}")


def defaults(cls) -> dict:
    out = {}
    for f in fields(cls):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def declare_and_read(node, cls):
    """Declare every field of `cls` as a parameter of `node` and return the filled dataclass."""
    from rcl_interfaces.msg import ParameterDescriptor

    problem = unknown_parameters(getattr(node, "_parameter_overrides", {}), [f.name for f in fields(cls)])
    if problem:
        raise ConfigError(problem)
    values = {}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else list(f.default_factory())
        desc = ParameterDescriptor(description=f.metadata.get("help", ""), dynamic_typing=True)
        node.declare_parameter(f.name, default, desc)
        values[f.name] = _convert(f.name, node.get_parameter(f.name).value, str(f.type))
    return cls(**values)
