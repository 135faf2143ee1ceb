"""What the policy node may command, decided without ROS.

`CommandGate` holds the node's inputs (enable flag, newest image time, instruction, newest model action) and
answers, at any time `now`, with the command to send and, when it must not move, the reason. Every reason gives
a zero twist; the gripper command is withheld (not sent) so that a stop never drops what the gripper holds.

Reasons, in the order they are checked:
    "not ready: ..."            the model failed to load or crashed
    "disabled"                  `enabled` is false (the default) or was switched off by ~/enable
    "image rejected: ..."       no usable image, and the newest one (within image_timeout) could not be read
    "no image received"         no valid image yet
    "image stale"               the newest image is older than image_timeout
    "no instruction"            nothing on the instruction topic yet
    "instruction empty"         the instruction is an empty or blank string
    "instruction too long"      longer than max_instruction_chars (it is never handed to the model)
    "instruction stale"         instruction older than instruction_timeout (when that is > 0)
    "model output not finite"   the last action had NaN/inf values (it is dropped, never clamped)
    "waiting for first action"  inputs fine, the model has not answered yet
    "command stale"             the newest action was computed from an image older than image_timeout
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from lapa_learning.data.sync import TwistActionMap
from lapa_learning.errors import ConfigError

ZERO3 = np.zeros(3)


@dataclass(frozen=True)
class Limits:
    max_linear_speed: float = 0.1  # m/s, bound on the norm of the linear velocity
    max_angular_speed: float = 0.5  # rad/s, bound on the norm of the angular velocity
    gripper_min: float = -1.0
    gripper_max: float = 1.0
    image_timeout: float = 0.5  # s: images (and commands computed from them) older than this stop the arm
    instruction_timeout: float = 0.0  # s: 0 = an instruction stays valid until replaced
    max_instruction_chars: int = 300  # longer instructions stop the arm

    def __post_init__(self):
        for key in ("max_linear_speed", "max_angular_speed", "image_timeout"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{key} must be a positive number, got {v!r}")
        if not (math.isfinite(self.instruction_timeout) and self.instruction_timeout >= 0):
            raise ConfigError(f"instruction_timeout must be >= 0 (0 = never), got {self.instruction_timeout!r}")
        if self.max_instruction_chars < 1:
            raise ConfigError(f"max_instruction_chars must be >= 1, got {self.max_instruction_chars!r}")
        if not (self.gripper_min <= self.gripper_max):
            raise ConfigError(f"gripper_min {self.gripper_min} must be <= gripper_max {self.gripper_max}")


@dataclass(frozen=True)
class Command:
    linear: np.ndarray  # (3,) m/s
    angular: np.ndarray  # (3,) rad/s
    gripper: float | None  # dataset units; None = do not send

    @property
    def is_zero(self) -> bool:
        return not (np.any(self.linear) or np.any(self.angular))


STOP = Command(ZERO3, ZERO3, None)


def clamp_norm(v: np.ndarray, limit: float) -> np.ndarray:
    """Scale v down so that ||v|| <= limit (direction kept)."""
    n = float(np.linalg.norm(v))
    return v * (limit / n) if n > limit else v


def action_to_command(values, mapping: TwistActionMap, limits: Limits) -> Command | None:
    """Scaled and clamped command from a policy action; None when any value is not finite."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        return None
    linear, angular, gripper = mapping.to_twist(v)
    linear = clamp_norm(linear, limits.max_linear_speed)
    angular = clamp_norm(angular, limits.max_angular_speed)
    if gripper is not None:
        gripper = float(min(max(gripper, limits.gripper_min), limits.gripper_max))
    return Command(linear, angular, gripper)


def scale_mismatch(mapping: TwistActionMap, data_scales: dict | None) -> str:
    """'' when the node turns actions into velocities with the scales its checkpoint's finetuning data was recorded
    with (or the data did not record them); else what differs and what that does to the arm's speed."""
    from lapa_learning.data.sync import ANGULAR_NAMES, LINEAR_NAMES

    if not data_scales:
        return ""
    used = [("linear_scale", LINEAR_NAMES, "m/s"), ("angular_scale", ANGULAR_NAMES, "rad/s")]
    diffs = [f"{key} {getattr(mapping, key):g} {unit} per unit, recorded with {data_scales[key]:g} "
             f"({getattr(mapping, key) / data_scales[key]:.3g}x the demonstrated speed)"
             for key, names, unit in used
             if key in data_scales and data_scales[key] > 0 and set(names) & set(mapping.action_names)
             and not math.isclose(getattr(mapping, key), data_scales[key], rel_tol=1e-6)]
    if not diffs:
        return ""
    return ("the checkpoint's finetuning data was recorded with other action scales: " + "; ".join(diffs)
            + ". Set linear_scale/angular_scale to the recorded values (lapa data info shows them)")


def too_long(text: str, max_chars: int) -> str:
    """The problem with an instruction longer than `max_chars` ("" when it fits)."""
    if len(text) <= max_chars:
        return ""
    return f"instruction too long ({len(text)} chars, max_instruction_chars {max_chars})"


def shorten(text: str, width: int = 80) -> str:
    """A log-friendly form of a text: repr of the first `width` characters, with the full length when cut."""
    if len(text) <= width:
        return repr(text)
    return f"{text[:width]!r}... ({len(text)} chars)"


class CommandGate:
    """Thread-safe state of the policy node's inputs; `decide(now)` -> (Command, reason or "")."""

    def __init__(self, mapping: TwistActionMap, limits: Limits, enabled: bool = False):
        self.mapping, self.limits = mapping, limits
        self._lock = threading.Lock()
        self.enabled = enabled
        self.not_ready: str | None = "model not loaded"
        self.image_time: float | None = None
        self.rejected: tuple[str, float] | None = None  # (reason, time) of the newest unreadable image
        self.instruction: str | None = None
        self.instruction_time: float | None = None
        self.command: Command | None = None
        self.command_image_time: float | None = None
        self.last_nonfinite = False

    # -- inputs -------------------------------------------------------------------------------------------
    def set_ready(self, error: str | None = None) -> None:
        with self._lock:
            self.not_ready = error

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            self.enabled = bool(enabled)

    def on_image(self, now: float) -> None:
        with self._lock:
            self.image_time = now

    def on_rejected_image(self, reason: str, now: float) -> None:
        with self._lock:
            self.rejected = (reason, now)

    def on_instruction(self, text: str, now: float) -> bool:
        """Store an instruction; returns True when it differs from the previous one (the policy must reset)."""
        with self._lock:
            changed = text != self.instruction
            self.instruction, self.instruction_time = text, now
            if changed:
                self.command, self.command_image_time, self.last_nonfinite = None, None, False
            return changed

    def on_action(self, values, image_time: float) -> Command | None:
        """Store the model's action for an image received at image_time; None (and STOP) if not finite."""
        cmd = action_to_command(values, self.mapping, self.limits)
        with self._lock:
            self.last_nonfinite = cmd is None
            self.command = cmd
            self.command_image_time = image_time
        return cmd

    def reset(self) -> None:
        with self._lock:
            self.command, self.command_image_time, self.last_nonfinite = None, None, False

    # -- decisions ----------------------------------------------------------------------------------------
    def input_problem(self, now: float) -> str:
        """Why the model should not run now ("" when image and instruction are usable)."""
        with self._lock:
            return self._input_problem(now)

    def _input_problem(self, now: float) -> str:
        lim = self.limits
        if self.not_ready is not None:
            return f"not ready: {self.not_ready}"
        if self.image_time is None or now - self.image_time > lim.image_timeout:
            if self.rejected is not None and now - self.rejected[1] <= lim.image_timeout:
                return f"image rejected: {self.rejected[0]}"
            if self.image_time is None:
                return "no image received"
            return f"image stale ({now - self.image_time:.2f} s old, limit {lim.image_timeout} s)"
        if self.instruction is None:
            return "no instruction"
        if not self.instruction.strip():
            return "instruction empty"
        if len(self.instruction) > lim.max_instruction_chars:
            return too_long(self.instruction, lim.max_instruction_chars)
        if lim.instruction_timeout > 0 and now - self.instruction_time > lim.instruction_timeout:
            return f"instruction stale ({now - self.instruction_time:.1f} s old, limit {lim.instruction_timeout} s)"
        return ""

    def decide(self, now: float) -> tuple[Command, str]:
        with self._lock:
            if self.not_ready is not None:
                return STOP, f"not ready: {self.not_ready}"
            if not self.enabled:
                return STOP, "disabled"
            problem = self._input_problem(now)
            if problem:
                return STOP, problem
            if self.last_nonfinite:
                return STOP, "model output not finite"
            if self.command is None:
                return STOP, "waiting for first action"
            age = now - self.command_image_time
            if age > self.limits.image_timeout:
                return STOP, f"command stale (from an image {age:.2f} s old, limit {self.limits.image_timeout} s)"
            return self.command, ""
