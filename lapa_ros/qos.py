"""One QoS profile per kind of stream (see docs/ros.md for why)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def camera() -> QoSProfile:
    """Subscribing to images: best effort, newest only (works with reliable and best-effort publishers)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def camera_publisher() -> QoSProfile:
    """Publishing images: the sensor-data profile (best effort, a short queue)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def instruction() -> QoSProfile:
    """Publishing the language instruction: reliable and latched, so a node that starts later still gets it.

    Subscribers use lapa_ros.instruction.subscribe_instruction, which also hears volatile (default-QoS) publishers.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def command() -> QoSProfile:
    """End-effector and gripper commands: reliable, newest only (MoveIt Servo subscribes reliable)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def status() -> QoSProfile:
    """Diagnostics and debug streams."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched() -> QoSProfile:
    """Episode events a late subscriber still needs (the last one is kept)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def clock() -> QoSProfile:
    """/clock as published by simulators (rclpy subscribes best effort, depth 1)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
