"""sim_node: a Meta-World task exposed as a robot (stands in for Gazebo in tests and demos).

Each step (at `step_rate` Hz of wall time, 1/80 s of sim time) it applies the newest end-effector twist and
gripper command as a Meta-World delta action (zero motion when the twist is older than `command_timeout`; the
gripper holds its last command), then publishes /clock, the camera image, the episode status and the scripted
expert's next action. ~/reset starts the next episode with the next task of `tasks` and publishes its instruction.

Twist -> Meta-World action follows the physics: the mocap moves action * 1 cm per step at 80 steps/s, so
action = v / 0.8 m/s on each axis (clipped to [-1, 1]); angular velocity is ignored (the Sawyer tasks have none).

The expert's action is privileged information (it reads the simulator's true object poses). It is published on
`expert_topic` only for expert_teleop, the stand-in for a human with a teleop device; the policy never sees it.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32MultiArray, Float64, String
from std_srvs.srv import Trigger

from lapa_ros import qos
from lapa_ros.converters import rgb_to_image, twist_to_arrays
from lapa_ros.params import SimParams, declare_and_read
from lapa_ros.runtime import run_node

METERS_PER_UNIT_STEP = 0.01  # Meta-World moves the mocap by action * 1 cm per step


def twist_to_metaworld(linear: np.ndarray, gripper: float, fps: float) -> np.ndarray:
    """(dx, dy, dz, gripper) in [-1, 1] from a linear velocity (m/s) and a gripper command."""
    xyz = np.asarray(linear, dtype=np.float64) / (METERS_PER_UNIT_STEP * fps)
    return np.clip(np.append(xyz, gripper), -1.0, 1.0).astype(np.float32)


def _time_msg(seconds: float) -> Time:
    """builtin_interfaces/Time from seconds, via whole nanoseconds (1.9999999999999996 s is 2 s, not 1 s)."""
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return Time(sec=int(sec), nanosec=int(nanosec))


class SimNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("sim_node", **node_kwargs)
        from lapa_learning.sim.metaworld_env import FPS

        self.params = p = declare_and_read(self, SimParams)
        self.fps = float(FPS)
        self.sim_time = 1.0  # seconds; grows by 1/fps per step and never goes back, across episodes too
        self.envs: dict = {}
        self.env = None
        self.episode = -1  # index of the current episode
        self.task, self.instruction, self.seed = "", "", p.seed - 1
        self.active = self.success = False
        self.twist, self.twist_time = np.zeros(3), -1.0
        self.gripper = -1.0  # open until told otherwise

        self.image_pub = self.create_publisher(Image, p.image_topic, qos.camera_publisher())
        self.instruction_pub = self.create_publisher(String, p.instruction_topic, qos.instruction())
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", qos.clock()) if p.publish_clock else None
        self.success_pub = self.create_publisher(Bool, "sim/success", qos.latched())
        self.status_pub = self.create_publisher(DiagnosticArray, "sim/status", qos.status())
        self.expert_pub = self.create_publisher(Float32MultiArray, p.expert_topic, qos.command())
        self.create_subscription(TwistStamped, p.twist_topic, self.twist_callback, qos.command())
        self.create_subscription(Float64, p.gripper_topic, self.gripper_callback, qos.command())
        self.create_service(Trigger, "~/reset", self.reset_callback)
        # Steps follow the wall clock even when this node is started with use_sim_time (it *is* the clock).
        self.create_timer(1.0 / p.step_rate, self.step_callback, clock=Clock(clock_type=ClockType.STEADY_TIME))
        if p.reset_on_start:
            self.start_episode()

    # ------------------------------------------------------------------ callbacks
    def twist_callback(self, msg: TwistStamped) -> None:
        linear, _angular = twist_to_arrays(msg)
        if np.all(np.isfinite(linear)):
            self.twist, self.twist_time = linear, self.sim_time

    def gripper_callback(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self.gripper = float(msg.data)

    def reset_callback(self, request, response):
        try:
            self.start_episode()
        except Exception as err:  # a task that fails to load must not kill the robot
            response.success, response.message = False, f"reset failed: {err}"
            return response
        response.success = True
        response.message = f"episode {self.episode}: {self.task} seed {self.seed}: {self.instruction}"
        return response

    def step_callback(self) -> None:
        if not self.active:
            self.publish_clock()
            return
        fresh = self.sim_time - self.twist_time <= self.params.command_timeout
        action = twist_to_metaworld(self.twist if fresh else np.zeros(3), self.gripper, self.fps)
        obs, success, done = self.env.step(action)
        self.sim_time += 1.0 / self.fps
        self.success = self.success or success
        self.active = not done
        self.publish_observation(obs.image)

    # ------------------------------------------------------------------ episode
    def start_episode(self) -> None:
        from lapa_learning.sim.instructions import instruction_for
        from lapa_learning.sim.metaworld_env import MetaWorldEnv

        p = self.params
        self.episode += 1
        self.seed += 1
        self.task = p.tasks[self.episode % len(p.tasks)]
        if self.task not in self.envs:
            self.envs[self.task] = MetaWorldEnv(self.task, camera=p.camera, image_size=p.image_size,
                                                max_steps=p.max_steps)
        self.env = self.envs[self.task]
        obs = self.env.reset(self.seed)
        self.instruction = instruction_for(self.task)
        self.active, self.success = True, False
        self.twist, self.twist_time, self.gripper = np.zeros(3), -1.0, -1.0
        self.instruction_pub.publish(String(data=self.instruction))
        self.get_logger().info(f"episode {self.episode}: {self.task} (seed {self.seed}): {self.instruction!r}")
        self.publish_observation(obs.image)

    def publish_clock(self) -> None:
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=_time_msg(self.sim_time)))

    def publish_observation(self, image: np.ndarray) -> None:
        stamp = _time_msg(self.sim_time)
        self.publish_clock()
        if self.env.steps % self.params.publish_every == 0 or not self.active:
            self.image_pub.publish(rgb_to_image(image, stamp=stamp, frame_id=self.params.camera_frame))
        if self.active:
            self.expert_pub.publish(Float32MultiArray(data=self.env.expert_action().tolist()))
        self.success_pub.publish(Bool(data=self.success))
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name="lapa_sim", hardware_id="metaworld",
                                  message="running" if self.active else ("success" if self.success else "failed"))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("episode", self.episode), ("task", self.task), ("seed", self.seed), ("step", self.env.steps),
            ("success", self.success), ("done", not self.active), ("instruction", self.instruction))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = stamp
        self.status_pub.publish(array)

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


def main(args=None) -> int:
    return run_node("sim_node", SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
