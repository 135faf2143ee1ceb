"""recorder_node: records teleop demonstrations into the project's episode dataset (for finetuning).

At `fps` it samples, as of now, the newest image, teleop twist and gripper command (lapa_learning.data.sync:
stale streams drop the frame and are counted; a command newer than the sample time is never used). The twist
becomes a dataset action with the inverse of the policy node's scaling. Services:
    ~/start    std_srvs/Trigger   begin an episode (its instruction: the one in force at its first frame)
    ~/stop     std_srvs/SetBool   end it and write it atomically; data = success. If the write fails, the
                                  frames are kept (the reply says why): ~/stop again retries, ~/discard drops
    ~/discard  std_srvs/Trigger   drop the episode being recorded (or the one whose write failed)
~/status (DiagnosticArray) reports recording state, frames, drops and the last save or error.
The dataset root is checked at start-up (EpisodeRecorder.check_root): the node exits with one line (code 2) when
episodes could not be written there, instead of failing at the first ~/stop after a demonstration.
"""

from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from std_msgs.msg import Float64, String
from std_srvs.srv import SetBool, Trigger

from lapa_learning.data.sync import AsOfSampler, TwistActionMap
from lapa_learning.errors import InputError
from lapa_ros import qos
from lapa_ros.converters import image_input, twist_to_arrays
from lapa_ros.decoding import NewestImageDecoder
from lapa_ros.instruction import subscribe_instruction
from lapa_ros.params import RecorderParams, declare_and_read
from lapa_ros.recording import EpisodeRecorder, RecordingError
from lapa_ros.runtime import run_node
from lapa_ros.safety import shorten
from lapa_ros.status import ProblemLog, status_instruction


class RecorderNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("recorder_node", **node_kwargs)
        self.params = p = declare_and_read(self, RecorderParams)
        self.mapping = TwistActionMap(tuple(p.action_names), p.linear_scale, p.angular_scale, p.action_limit)
        gripper_age = p.gripper_max_age if p.gripper_max_age > 0 else math.inf
        self.sampler = AsOfSampler(("image", "twist", "gripper"), defaults={"gripper": p.gripper_default},
                                   max_age={"image": p.image_max_age, "twist": p.twist_max_age,
                                            "gripper": gripper_age},
                                   horizon=max(5.0, 2 * max(p.image_max_age, p.twist_max_age)))
        self.recorder = EpisodeRecorder(p.dataset_root, fps=p.fps, mapping=self.mapping,
                                        image_size=tuple(int(v) for v in p.image_size), video_key=p.video_key,
                                        max_frames=int(p.max_episode_seconds * p.fps),
                                        min_frames=p.min_episode_frames,
                                        max_instruction_chars=p.max_instruction_chars)
        self.instruction: str | None = None
        self.rejected_images = 0
        self.images_received = 0
        self.skipped_no_instruction = 0
        self.last_event = "idle"
        self.problems = ProblemLog()  # the newest problem and when, for ~/status

        image_type, self._to_rgb = image_input(p.image_transport)
        self._decoder = (NewestImageDecoder(self._to_rgb, self._on_rgb, self._on_bad_image)
                         if p.image_transport == "compressed" else None)
        self.create_subscription(image_type, p.image_topic, self.image_callback, qos.camera())
        self.create_subscription(TwistStamped, p.twist_topic, self.twist_callback, qos.command())
        self.create_subscription(Float64, p.gripper_topic, self.gripper_callback, qos.command())
        subscribe_instruction(self, p.instruction_topic, self.instruction_callback)  # any publisher durability
        self.create_service(Trigger, "~/start", self.start_callback)
        self.create_service(SetBool, "~/stop", self.stop_callback)
        self.create_service(Trigger, "~/discard", self.discard_callback)
        self.status_pub = self.create_publisher(DiagnosticArray, "~/status", qos.status())
        self.create_timer(1.0 / p.fps, self.sample_callback)
        self.create_timer(1.0, self.publish_status)
        self.get_logger().info(f"recording to {p.dataset_root} at {p.fps} Hz; call ~/start to begin an episode")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @property
    def images_replaced(self) -> int:
        """Compressed images replaced by a newer one before they were decoded (the decoder counts them)."""
        return self._decoder.superseded if self._decoder is not None else 0

    # ------------------------------------------------------------------ inputs
    def image_callback(self, msg) -> None:  # sensor_msgs/Image or CompressedImage (image_transport)
        now = self._now()
        if self._decoder is not None:  # decoded on its own thread (newest first): the executor never waits on it
            if self._decoder.submit(msg, now):  # the one it replaced was received, never decoded nor sampled
                self.images_received += 1
            return
        try:
            rgb = self._to_rgb(msg)
        except InputError as err:
            self._on_bad_image(err, now)
            return
        self._on_rgb(rgb, now)

    def _on_rgb(self, rgb, received: float) -> None:
        self.images_received += 1
        self.sampler.add("image", received, rgb)  # as of the time it was received, not decoded

    def _on_bad_image(self, err: InputError, received: float) -> None:
        self.rejected_images += 1
        self._problem(f"rejected image: {err}")

    def twist_callback(self, msg: TwistStamped) -> None:
        self.sampler.add("twist", self._now(), twist_to_arrays(msg))

    def gripper_callback(self, msg: Float64) -> None:
        self.sampler.add("gripper", self._now(), float(msg.data))

    def instruction_callback(self, msg: String) -> None:
        if msg.data != self.instruction:
            self.get_logger().info(f"instruction: {shorten(msg.data)}")
        self.instruction = msg.data

    def sample_callback(self) -> None:
        if not self.recorder.recording:
            return
        t = self._now()
        frame = self.sampler.sample(t)
        if frame is None:
            return
        linear, angular = frame["twist"]
        action = self.mapping.to_action(linear, angular, frame["gripper"])
        try:
            more = self.recorder.add_frame(t, frame["image"], action, self.instruction)
        except RecordingError as err:
            self.skipped_no_instruction += 1
            self._problem(str(err))
            return
        if not more:
            self.get_logger().warning("episode reached max_episode_seconds: saving it")
            self._stop(success=None)

    # ------------------------------------------------------------------ services
    def start_callback(self, request, response):
        try:
            response.message = self.recorder.start(self.instruction)
            self.sampler.dropped = {k: 0 for k in self.sampler.dropped}
            response.success = True
        except RecordingError as err:
            response.success, response.message = False, str(err)
        self._event(response.message, error=not response.success)
        return response

    def stop_callback(self, request, response):
        response.success, response.message = self._stop(bool(request.data))
        return response

    def discard_callback(self, request, response):
        try:
            response.success, response.message = True, self.recorder.discard()
        except RecordingError as err:
            response.success, response.message = False, str(err)
        self._event(response.message, error=not response.success)
        return response

    def _stop(self, success: bool | None) -> tuple[bool, str]:
        dropped = dict(self.sampler.dropped)
        try:
            _index, message = self.recorder.stop(success)
            message += f"; frames dropped for stale inputs: {dropped}"
            ok = True
        except RecordingError as err:
            ok, message = False, str(err)
        self._event(message, error=not ok)
        return ok, message

    # ------------------------------------------------------------------ status
    def _problem(self, text: str) -> None:
        """Remember (for ~/status, with its time) and log what went wrong (status.ProblemLog says when)."""
        if self.problems.report(text, self._now()):
            self.get_logger().warning(text)

    def _event(self, message: str, error: bool = False) -> None:
        self.last_event = message
        if error:
            self.problems.report(message, self._now())
            self.get_logger().error(message)
        else:
            self.get_logger().info(message)
        self.publish_status(error=error)

    def publish_status(self, error: bool = False) -> None:
        rec = self.recorder
        status = DiagnosticStatus(name="lapa_recorder", hardware_id=self.params.dataset_root,
                                  level=DiagnosticStatus.ERROR if error else DiagnosticStatus.OK,
                                  message=self.last_event)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("recording", rec.recording), ("frames", rec.num_frames), ("unsaved_episode", rec.unsaved),
            ("episodes_saved", rec.saved),
            ("episodes_discarded", rec.discarded), ("dropped", self.sampler.dropped),
            ("images_received", self.images_received), ("images_replaced_before_decoding", self.images_replaced),
            ("rejected_images", self.rejected_images),
            ("no_instruction", self.skipped_no_instruction),
            ("instruction", status_instruction(self.instruction)),
            ("instruction_chars", len(self.instruction or "")),
            ("last_problem", self.problems.text), ("last_problem_age_s", self.problems.age(self._now())))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(array)

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.stop()
        message = self.recorder.close()
        if message:
            self.get_logger().warning(message)


def main(args=None) -> int:
    return run_node("recorder_node", RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
