"""policy_node: camera image + instruction -> LAPA policy -> end-effector twist (MoveIt Servo) + gripper.

Callbacks only store the newest image (counting frames replaced before the model saw them as dropped) and the
instruction; compressed images are decoded on their own thread (lapa_ros.decoding), newest first, so a slow
decode never holds the executor. One worker thread runs `policy.act` on the newest image, at most `control_rate`
times per second, and publishes the result at once (under use_sim_time, `control_rate` is paced by the sim
clock); a timer re-sends the current command (or a zero twist) at `publish_rate`, or with publish_rate 0 decides
again every control period and sends the command only when it changed (so a stale image or an emptied
instruction still stops the arm). ~/status runs on the steady clock and reports the decision as of now; under
use_sim_time, until /clock arrives the node commands nothing ("waiting for /clock").
Chunk policies (T actions per call) run in chunk mode unless chunk_blend is off: a step timer at `control_rate`
commands one action per step from lapa_learning.vla.chunking.ChunkBlender (newest chunk, or temporal
ensembling of the overlapping ones) and asks the worker for the next chunk `chunk_prefetch` steps before the
current one runs out, so the robot does not wait for the model at chunk boundaries.
With publish_preview, a third thread draws ~/latent_preview (lapa_learning.vla.preview.LatentPreview: the frame
next to the LAQ decoder's picture of frame t+H for the newest predicted latent tokens) at most `preview_rate`
times per second; it only reads what the worker hands it, so it never delays a command.
What may be commanded is decided by lapa_ros.safety.CommandGate: disabled, stale or missing image, missing or
empty instruction, non-finite model output -> zero twist, with the reason in ~/status.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, Int32MultiArray, MultiArrayDimension, String
from std_srvs.srv import SetBool, Trigger

from lapa_learning.data.sync import TwistActionMap
from lapa_learning.errors import CheckpointError, InputError
from lapa_learning.vla.chunking import ChunkBlender
from lapa_ros import qos
from lapa_ros.converters import converter_name, fill_twist, image_input, rgb_to_image
from lapa_ros.decoding import NewestImageDecoder
from lapa_ros.instruction import subscribe_instruction
from lapa_ros.params import PolicyParams, declare_and_read
from lapa_ros.runtime import run_node
from lapa_ros.safety import STOP, Command, CommandGate, Limits, scale_mismatch, shorten, too_long
from lapa_ros.status import ERROR, OK, WARN, ProblemLog, policy_level, status_instruction

WAITING_FOR_CLOCK = "waiting for /clock"  # use_sim_time and no /clock yet (ROS time 0)


def _custom_messages():
    """lapa_ros.msg (ActionChunk, LatentActionTokens) when colcon generated it, else None (pip installs)."""
    try:
        from lapa_ros import msg
    except ImportError:
        return None
    return msg


def load_policy(params: PolicyParams):
    """The one call into the learning side; raises CheckpointError with a clear message."""
    if not params.checkpoint:
        raise CheckpointError("parameter checkpoint is empty: set it to a finetuned LAPA checkpoint directory")
    from lapa_learning.vla.policy import Policy

    return Policy.load(params.checkpoint, device=params.device, replan_every=params.replan_every or None)


def load_preview(policy, params: PolicyParams):
    """publish_preview: the LAQ decoder behind ~/latent_preview; CheckpointError when the policy cannot have one."""
    if getattr(policy, "num_latent_tokens", None) is None:
        raise CheckpointError("parameter publish_preview: the checkpoint has no latent head (no latent tokens to "
                              "preview); set publish_preview false")
    from lapa_learning.vla.preview import LatentPreview

    return LatentPreview.load(policy, laq=params.preview_laq or None)


class PolicyNode(Node):
    def __init__(self, policy=None, **node_kwargs):
        super().__init__("policy_node", **node_kwargs)
        self.params = p = declare_and_read(self, PolicyParams)
        self.policy = policy if policy is not None else load_policy(p)
        mapping = TwistActionMap(tuple(self.policy.action_names), p.linear_scale, p.angular_scale, action_limit=0)
        limits = Limits(p.max_linear_speed, p.max_angular_speed, p.gripper_min, p.gripper_max,
                        p.image_timeout, p.instruction_timeout, p.max_instruction_chars)
        self.gate = CommandGate(mapping, limits, enabled=p.enabled)
        self.gate.set_ready(None)
        self.period = 1.0 / p.control_rate
        # Chunk policies (chunk_blend != "off"): a step timer commands one blended action per control step and asks
        # the worker for the next chunk `chunk_prefetch` steps before the current one runs out.
        self.blender = None
        if getattr(self.policy, "chunk_size", 1) > 1 and p.chunk_blend != "off":
            prefetch = min(p.chunk_prefetch, self.policy.chunk_size - 1)
            if prefetch != p.chunk_prefetch:
                self.get_logger().warning(f"chunk_prefetch {p.chunk_prefetch} does not fit in the checkpoint's "
                                          f"chunks of {self.policy.chunk_size}: using {prefetch}")
            self.blender = ChunkBlender(self.policy.chunk_size, p.chunk_blend, p.chunk_decay, prefetch)
        self._step = 0  # control steps so far (chunk mode)
        self._want_chunk = False  # the step timer asks the worker for a chunk

        # Shared between callbacks and the worker (guarded by self._cond).
        self._cond = threading.Condition()
        self._image: tuple[np.ndarray, float] | None = None  # newest unprocessed (rgb, receive time)
        self._generation = 0  # bumped by reset/instruction change: results of older calls are thrown away
        self._stopping = False
        self._policy_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self.instruction = ""
        self.received = self.dropped = self.rejected = self.inferences = self.errors = 0
        self.latency_ms = float("nan")
        self.last_reason = "starting"
        self._sent: Command | None = None  # the last command published (publish_rate 0: publish on change only)
        self.problems = ProblemLog()  # the newest problem and when, for ~/status
        # The latent preview thread: the worker leaves it (rgb, tokens) of its newest call, it draws at preview_rate.
        self.preview = load_preview(self.policy, p) if p.publish_preview else None
        self._preview_cond = threading.Condition()
        self._preview_input: tuple[np.ndarray, np.ndarray] | None = None
        self.previews, self.preview_ms = 0, float("nan")

        self.twist_pub = self.create_publisher(TwistStamped, p.twist_topic, qos.command())
        self.gripper_pub = self.create_publisher(Float64, p.gripper_topic, qos.command())
        self.proposed_pub = self.create_publisher(TwistStamped, "~/proposed_twist", qos.status())
        self.tokens_pub = self.create_publisher(Int32MultiArray, "~/latent_tokens", qos.status())
        self.status_pub = self.create_publisher(DiagnosticArray, "~/status", qos.status())
        if self.preview is not None:
            self.preview_pub = self.create_publisher(Image, "~/latent_preview", qos.status())
        self.custom = _custom_messages()  # this package's interfaces, when built by colcon
        if self.custom is not None:
            self.chunk_pub = self.create_publisher(self.custom.ActionChunk, "~/action", qos.status())
            self.latent_pub = self.create_publisher(self.custom.LatentActionTokens, "~/latent_action", qos.status())
        image_type, self._to_rgb = image_input(p.image_transport)
        self._decoder = (NewestImageDecoder(self._to_rgb, self._on_rgb, self._on_bad_image)
                         if p.image_transport == "compressed" else None)
        self.create_subscription(image_type, p.image_topic, self.image_callback, qos.camera())
        subscribe_instruction(self, p.instruction_topic, self.instruction_callback)  # any publisher durability
        self.create_service(SetBool, "~/enable", self.enable_callback)
        self.create_service(Trigger, "~/reset", self.reset_callback)
        if self.blender is not None:
            self.create_timer(self.period, self.step_callback)
        if p.publish_rate > 0:  # MoveIt Servo halts when commands stop coming: keep streaming
            self.create_timer(1.0 / p.publish_rate, self.control_callback)
        else:  # only on change, but decided every control period: a stale image or instruction still stops the arm
            self.create_timer(self.period, self.change_callback)
        # Status on the steady clock: it keeps coming under use_sim_time before /clock does (and says so).
        self.create_timer(1.0 / p.status_rate, self.status_callback, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._worker_loop, name="policy_worker", daemon=True)
        self._worker.start()
        self._preview_thread = None
        if self.preview is not None:
            self._preview_thread = threading.Thread(target=self._preview_loop, name="latent_preview", daemon=True)
            self._preview_thread.start()
        self.scale_warning = scale_mismatch(mapping, getattr(self.policy, "action_scales", None))
        if self.scale_warning:  # the arm would move faster or slower than in the demonstrations
            self.get_logger().warning(self.scale_warning)
        self.get_logger().info(f"policy {self.policy.name} on {self.policy.device}, actions "
                               f"{tuple(self.policy.action_names)}; enabled={p.enabled}; images: "
                               f"{converter_name() if p.image_transport == 'raw' else 'CompressedImage via OpenCV'}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _waiting_for_clock(self) -> bool:
        """use_sim_time and no /clock message yet: ROS time is 0, so no age can be judged; command nothing."""
        clock = self.get_clock()
        return clock.ros_time_is_active and clock.now().nanoseconds == 0

    def _pace_now(self) -> float:
        """The time the worker paces model calls by: the node's clock under use_sim_time (control_rate is then in
        sim seconds), else the monotonic wall clock (immune to system clock steps)."""
        return self._now() if self.get_clock().ros_time_is_active else time.monotonic()

    def _decide(self) -> tuple[Command, str]:
        if self._waiting_for_clock():
            return STOP, WAITING_FOR_CLOCK
        return self.gate.decide(self._now())

    @property
    def last_problem(self) -> str:
        return self.problems.text

    # ------------------------------------------------------------------ callbacks
    def image_callback(self, msg) -> None:  # sensor_msgs/Image or CompressedImage (image_transport)
        now = self._now()
        if self._decoder is not None:  # decoded on its thread; one replaced before decoding was never seen
            if self._decoder.submit(msg, now):
                with self._cond:
                    self.received += 1  # the replaced one: received, never used
                    self.dropped += 1
            return
        try:
            rgb = self._to_rgb(msg)
        except InputError as err:
            self._on_bad_image(err, now)
            return
        self._on_rgb(rgb, now)

    def _on_rgb(self, rgb: np.ndarray, received: float) -> None:
        """A readable image, received at `received` (node clock): the newest one the worker will use."""
        self.gate.on_image(received)
        with self._cond:
            self.received += 1
            if self._image is not None:
                self.dropped += 1  # the model never saw the previous one
            self._image = (rgb, received)
            self._cond.notify()

    def _on_bad_image(self, err: InputError, received: float) -> None:
        self.rejected += 1
        self.gate.on_rejected_image(str(err), received)
        self._problem(f"rejected image: {err}")

    def instruction_callback(self, msg: String) -> None:
        if self.gate.on_instruction(msg.data, self._now()):
            self.instruction = msg.data
            self._reset_policy()
            self.get_logger().info(f"instruction: {shorten(msg.data)}")
            problem = too_long(msg.data, self.params.max_instruction_chars)
            if problem:
                self._problem(problem)
        # a new, empty or too long instruction stops the arm now, not at the next tick (publish_rate 0: on change)
        self.publish_decision(only_on_change=self.params.publish_rate == 0)

    def enable_callback(self, request, response):
        self.gate.set_enabled(request.data)
        self.publish_decision()  # stop at once, not at the next tick
        response.success, response.message = True, "enabled" if request.data else "disabled"
        self.get_logger().info(response.message)
        return response

    def reset_callback(self, request, response):
        self._reset_policy()
        self.publish_decision()
        response.success, response.message = True, "policy reset (action chunk and history cleared)"
        return response

    def control_callback(self) -> None:
        self.publish_decision()

    def change_callback(self) -> None:
        """publish_rate 0: decide again each control period; publish only when the command changed."""
        self.publish_decision(only_on_change=True)

    def status_callback(self) -> None:
        if self._waiting_for_clock():  # the ROS-clock timers do not run yet: send the stop from here
            self.publish_decision(only_on_change=True)
        self.publish_status()

    def step_callback(self) -> None:
        """Chunk mode: one control step. Command the blended action for it; ask for the next chunk early."""
        with self._cond:
            self._step += 1
            values = self.blender.action(self._step)
            if self.blender.needs_chunk(self._step) and not self._want_chunk:
                self._want_chunk = True
                self._cond.notify()
            image_time = self.gate.image_time
        if values is not None and image_time is not None:
            command = self.gate.on_action(values, image_time)  # stale once the camera stops, as without chunks
            self.publish_decision()  # stamped now: one command per step
            if command is not None:
                self.proposed_pub.publish(self._twist_msg(command))
            else:
                self._problem(f"model output not finite: {values.tolist()}")

    # ------------------------------------------------------------------ worker
    def _worker_loop(self) -> None:
        last_start = -float("inf")
        while True:
            with self._cond:
                while not self._stopping and (self._idle() or self._wait_s(last_start) > 0):
                    self._cond.wait(None if self._idle() else self._wait_s(last_start, poll=True))
                if self._stopping:
                    return
                rgb, image_time = self._image
                self._image = None
                generation, start_step = self._generation, self._step
            if (not self._waiting_for_clock() and not self.gate.input_problem(self._now())
                    and (self.gate.enabled or self.params.infer_when_disabled)):
                last_start = self._pace_now()
                if self.blender is not None:
                    self._infer_chunk(rgb, image_time, generation, start_step)
                else:
                    self._infer(rgb, image_time, generation)
            with self._cond:
                self._want_chunk = False  # only now: the step timer must not ask again while the model runs

    def _wait_s(self, last_start: float, poll: bool = False) -> float:
        """Seconds until the next model call may start (<= 0: now). Under use_sim_time the remaining sim seconds
        are no wall-clock wait, so the worker (poll=True) looks again every 10 ms at most."""
        now = self._pace_now()
        if now < last_start:  # the sim clock went back (a restarted simulator): do not wait for the old time
            return 0.0
        remaining = self.period - (now - last_start)
        return min(remaining, 0.01) if poll and self.get_clock().ros_time_is_active else remaining

    def _idle(self) -> bool:
        """(under self._cond) Nothing to do: no new image, or in chunk mode no chunk asked for."""
        return self._image is None or (self.blender is not None and not self._want_chunk)

    def _infer_chunk(self, rgb: np.ndarray, image_time: float, generation: int, start_step: int) -> None:
        """Chunk mode: predict T actions from this image; they start at the step the image was taken for."""
        try:
            with self._policy_lock:
                t0 = time.perf_counter()
                actions, tokens = self.policy.predict_chunk(rgb[None], [self.instruction])  # (1, T, A), (1, K)
                self.latency_ms = (time.perf_counter() - t0) * 1e3
        except Exception as err:  # keep running: the gate stops the arm and the status says why
            self._model_error(err, image_time)
            return
        with self._cond:
            if generation != self._generation:
                return  # reset or new instruction while the model ran
            self.blender.add(start_step, actions[0])
            self.inferences += 1
        if tokens is not None:
            self._publish_tokens(tokens[0])
            self._offer_preview(rgb, tokens[0])
        if self.custom is not None:
            self._publish_custom(actions[0], start_step, None if tokens is None else tokens[0])

    def _model_error(self, err: Exception, image_time: float) -> None:
        self.errors += 1
        self.gate.on_action([float("nan")], image_time)
        self._problem(f"model error: {type(err).__name__}: {err}", error=True)

    def _infer(self, rgb: np.ndarray, image_time: float, generation: int) -> None:
        try:
            with self._policy_lock:
                t0 = time.perf_counter()
                action = self.policy.act(rgb, self.instruction)
                self.latency_ms = (time.perf_counter() - t0) * 1e3
        except Exception as err:  # keep running: the gate stops the arm and the status says why
            self._model_error(err, image_time)
            return
        if generation != self._generation:
            return  # reset or new instruction while the model ran
        self.inferences += 1
        command = self.gate.on_action(action.values, image_time)
        self.publish_decision()  # the command first; the debug topics below must not delay it
        if command is None:
            self._problem(f"model output not finite: {np.asarray(action.values).tolist()}")
        else:
            self.proposed_pub.publish(self._twist_msg(command))
        if action.latent_tokens is not None:
            self._publish_tokens(action.latent_tokens)
            self._offer_preview(rgb, action.latent_tokens)
        if self.custom is not None:
            self._publish_custom(np.asarray(action.values)[None], action.chunk_index, action.latent_tokens)

    # ------------------------------------------------------------------ latent preview
    def _offer_preview(self, rgb: np.ndarray, tokens) -> None:
        """The worker's newest (frame, latent tokens), for the preview thread; costs the worker nothing else."""
        if self.preview is not None:
            with self._preview_cond:
                self._preview_input = (rgb, np.asarray(tokens))
                self._preview_cond.notify()

    def _preview_loop(self) -> None:
        period = 1.0 / self.params.preview_rate
        try:  # Linux: the lowest CPU priority for this thread only, so the model and the commands come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while True:
            with self._preview_cond:
                while not self._stopping and self._preview_input is None:
                    self._preview_cond.wait()
                if self._stopping:
                    return
                (rgb, tokens), self._preview_input = self._preview_input, None
            t0 = time.perf_counter()
            try:
                strip = self.preview.render(rgb, tokens)  # (H, 2W, 3) uint8
            except Exception as err:  # keep commanding: the preview is for people, not for the arm
                self._problem(f"latent preview: {type(err).__name__}: {err}", error=True)
            else:
                self.preview_ms = (time.perf_counter() - t0) * 1e3
                self.preview_pub.publish(rgb_to_image(strip, self.get_clock().now().to_msg(), self.params.frame_id))
                self.previews += 1
            with self._preview_cond:  # the rate limit: wait out the rest of the period (or stop)
                self._preview_cond.wait_for(lambda: self._stopping, max(0.0, period - (time.perf_counter() - t0)))

    def _problem(self, text: str, error: bool = False) -> None:
        """Remember (for ~/status, with its time) and log what went wrong (status.ProblemLog says when)."""
        if not self.problems.report(text, self._now()):
            return
        if error:  # two call sites: rclpy fixes a call site's severity
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    def _reset_policy(self) -> None:
        with self._cond:
            self._generation += 1
            if self.blender is not None:
                self.blender.reset()
        with self._policy_lock:
            self.policy.reset()
        self.gate.reset()

    # ------------------------------------------------------------------ outputs
    def _twist_msg(self, command: Command) -> TwistStamped:
        return fill_twist(TwistStamped(), command.linear, command.angular, stamp=self.get_clock().now().to_msg(),
                          frame_id=self.params.frame_id)

    def publish_decision(self, only_on_change: bool = False) -> None:
        """Publish what the gate allows now. Deciding under the lock orders it after any enable/disable.

        only_on_change: publish only when the command differs from the last one sent (a stop after a motion is a
        change; the same stop again with another reason is not)."""
        with self._publish_lock:
            command, reason = self._decide()
            self.last_reason = reason or "commanding"
            if only_on_change and command is self._sent:
                return
            self._sent = command
            self._publish(command)

    def _publish(self, command: Command) -> None:
        self.twist_pub.publish(self._twist_msg(command))
        if command.gripper is not None:
            self.gripper_pub.publish(Float64(data=command.gripper))

    def _publish_tokens(self, tokens) -> None:
        msg = Int32MultiArray(data=[int(t) for t in np.asarray(tokens).reshape(-1)])
        msg.layout.dim = [MultiArrayDimension(label=f"tokens(codebook={self.policy.codebook_size})",
                                              size=len(msg.data), stride=len(msg.data))]
        self.tokens_pub.publish(msg)

    def _publish_custom(self, values: np.ndarray, start_index: int, latent_tokens) -> None:
        """values (num_steps, A): one action, or a whole chunk in chunk mode (start_index = its first step)."""
        stamp = self.get_clock().now().to_msg()
        chunk = self.custom.ActionChunk(action_names=list(self.policy.action_names), num_steps=len(values),
                                        values=[float(v) for v in np.asarray(values).reshape(-1)],
                                        start_index=int(start_index))
        chunk.header.stamp, chunk.header.frame_id = stamp, self.params.frame_id
        chunk.time_step.sec, chunk.time_step.nanosec = int(self.period), int(self.period % 1 * 1e9)
        self.chunk_pub.publish(chunk)
        if latent_tokens is not None:
            latent = self.custom.LatentActionTokens(tokens=[int(t) for t in np.asarray(latent_tokens)],
                                                    codebook_size=int(self.policy.codebook_size or 0))
            latent.header.stamp = stamp
            self.latent_pub.publish(latent)

    def publish_status(self) -> None:
        reason = self._decide()[1] or "commanding"  # what holds now, not what was last published
        level = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}[policy_level(reason)]
        status = DiagnosticStatus(level=level, name="lapa_policy", hardware_id=str(self.policy.device),
                                  message=reason)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("ready", self.gate.not_ready is None and reason != WAITING_FOR_CLOCK), ("enabled", self.gate.enabled), ("model", self.policy.name),
            ("device", self.policy.device), ("checkpoint", self.params.checkpoint),
            ("action_names", ",".join(self.policy.action_names)),
            ("action_scales_warning", self.scale_warning),
            ("instruction", status_instruction(self.instruction)),
            ("instruction_chars", len(self.instruction)),
            ("last_inference_ms", f"{self.latency_ms:.2f}"), ("inferences", self.inferences),
            ("chunk_mode", "off" if self.blender is None else self.blender.blend),
            ("preview", "off" if self.preview is None else str(self.preview.laq_dir)),
            ("previews", self.previews), ("last_preview_ms", f"{self.preview_ms:.2f}"),
            ("images_received", self.received),
            ("dropped_frames", self.dropped), ("rejected_images", self.rejected), ("model_errors", self.errors),
            ("not_commanding_because", "" if reason == "commanding" else reason),
            ("last_problem", self.problems.text), ("last_problem_age_s", self.problems.age(self._now())))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(array)

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.stop()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        with self._preview_cond:
            self._preview_cond.notify_all()
        self._worker.join(timeout=5.0)
        if self._preview_thread is not None:
            self._preview_thread.join(timeout=5.0)
        try:
            with self._publish_lock:
                self._publish(STOP)  # leave the arm with a zero command
        except Exception:  # the context may already be shut down
            pass


def main(args=None) -> int:
    return run_node("policy_node", PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
