"""expert_teleop: the simulator's scripted expert as a teleop device (stands in for a human with a SpaceMouse).

It turns each expert action (dx, dy, dz, gripper in [-1, 1], published by sim_node from the true simulator state)
into what a teleop driver publishes: a TwistStamped end-effector velocity (linear = action * linear_scale) and a
Float64 gripper command. The recorder cannot tell it from a person at a teleop device.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, Float64

from lapa_ros import qos
from lapa_ros.converters import fill_twist
from lapa_ros.params import TeleopParams, declare_and_read
from lapa_ros.runtime import run_node


class ExpertTeleop(Node):
    def __init__(self, **node_kwargs):
        super().__init__("expert_teleop", **node_kwargs)
        self.params = p = declare_and_read(self, TeleopParams)
        self.rng = np.random.default_rng(p.seed)
        self.twist_pub = self.create_publisher(TwistStamped, p.twist_topic, qos.command())
        self.gripper_pub = self.create_publisher(Float64, p.gripper_topic, qos.command())
        self.create_subscription(Float32MultiArray, p.expert_topic, self.expert_callback, qos.command())
        self.sent = 0

    def expert_callback(self, msg: Float32MultiArray) -> None:
        action = np.asarray(msg.data, dtype=np.float64)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            self.get_logger().warning(f"ignoring expert action {list(msg.data)}: expected 4 finite values",
                                   throttle_duration_sec=5.0)
            return
        if self.params.noise > 0:
            action = np.clip(action + self.rng.normal(0.0, self.params.noise, size=4), -1.0, 1.0)
        twist = fill_twist(TwistStamped(), action[:3] * self.params.linear_scale, np.zeros(3),
                           stamp=self.get_clock().now().to_msg(), frame_id=self.params.frame_id)
        self.twist_pub.publish(twist)
        self.gripper_pub.publish(Float64(data=float(action[3])))
        self.sent += 1


def main(args=None) -> int:
    return run_node("expert_teleop", ExpertTeleop, args)


if __name__ == "__main__":
    raise SystemExit(main())
