"""The language instruction: one subscription call that works with every publisher's durability.

DDS matches a subscription only with publishers whose durability is at least its own. A transient-local
subscription therefore never hears a default-QoS (volatile) publisher, and a volatile subscription is not sent
the message a transient-local publisher latched before it joined. `subscribe_instruction` makes both:

    volatile         matches volatile and transient-local publishers; receives what is published from now on
    transient local  matches transient-local publishers only; also receives the message they latched earlier

A transient-local publisher's live messages arrive twice (once per subscription, in publishing order), so the
callback must treat a repeated text as no change, as both nodes do. The publisher-side DDS warning about the
second subscription ("requesting incompatible QoS ... DURABILITY") is harmless; on our side it is logged at debug
level instead of as a warning.
"""

from __future__ import annotations

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

DEPTH = 5  # a burst of instructions is not lost before the executor reads it (the newest wins anyway)


def subscribe_instruction(node, topic: str, callback) -> list:
    """Subscribe `callback(msg: String)` to `topic` with both durabilities; returns the two subscriptions."""
    subs = []
    for durability in (DurabilityPolicy.VOLATILE, DurabilityPolicy.TRANSIENT_LOCAL):
        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                             durability=durability)
        events = None
        if durability == DurabilityPolicy.TRANSIENT_LOCAL:
            def incompatible(_event, log=node.get_logger()):
                log.debug("a volatile publisher on the instruction topic: its messages come through the volatile "
                          "subscription")
            events = SubscriptionEventCallbacks(incompatible_qos=incompatible)
        subs.append(node.create_subscription(String, topic, callback, profile, event_callbacks=events))
    return subs

