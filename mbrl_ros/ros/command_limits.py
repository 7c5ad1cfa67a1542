"""Following the safety filter's limits in the nodes that feed it (mpc_controller, policy).

`LimitsFollower` subscribes to the filter's latched SAFETY_LIMITS_TOPIC (what it clamps and
rate-limits to) and to what it sent the robot (COMMAND_TOPIC), so that a planner plans what the
arm will get: within the scaled effort limits, and each command within one rate-limit step of the
command in force. A malformed or non-finite limits message is logged, counted and ignored: the
last good limits stay (before any: none, the robot's full limits, as the filter's defaults are
not known). Callbacks only store references (single-threaded executor; the loop reads them).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.ros.conversions import CONTROL, LATCHED, limits_from_msg
from mbrl_ros.topics import COMMAND_TOPIC, SAFETY_LIMITS_TOPIC


class LimitsFollower:
    def __init__(self, node, joint_names):
        self.node = node
        self.names = list(joint_names)
        self.limits = None                       # CommandLimits, last good (None: none received)
        self.updates = 0
        self.refused = 0
        self.last_refusal = 'none'
        self._sent: Optional[tuple] = None       # (effort (dof,), node time received)
        self.subscriptions = [
            node.create_subscription(JointState, SAFETY_LIMITS_TOPIC, self._on_limits, LATCHED),
            node.create_subscription(Float64MultiArray, COMMAND_TOPIC, self._on_sent, CONTROL),
        ]

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_limits(self, msg: JointState) -> None:
        try:
            limits, why = limits_from_msg(msg, self.names)
        except Exception as exc:   # anything no check foresaw: still never the node's end
            limits, why = None, f'unreadable: {exc!r}'
        if limits is None:
            self.refused += 1
            self.last_refusal = why
            kept = self.limits.describe() if self.limits is not None else "the robot's full limits"
            self.node.get_logger().error(f'ignoring malformed {SAFETY_LIMITS_TOPIC}: {why}; keeping {kept}',
                                         throttle_duration_sec=1.0)   # a flood must not flood the log
            return
        if limits.same_as(self.limits):
            return
        self.limits = limits      # one reference: the loop takes it at its next cycle
        self.updates += 1
        self.node.get_logger().info(f'planning within the safety filter\'s limits: {limits.describe()}')

    def _on_sent(self, msg: Float64MultiArray) -> None:
        u = np.asarray(msg.data, dtype=np.float64) if len(msg.data) == len(self.names) else None
        if u is not None and np.all(np.isfinite(u)):
            self._sent = (u, self._now())

    def last_sent(self, max_age_s: float) -> Optional[np.ndarray]:
        """The command the filter last sent, if received within max_age_s (else None: unknown)."""
        sent = self._sent
        if sent is None or not (0.0 <= self._now() - sent[1] <= max_age_s):
            return None
        return sent[0]

    def destroy(self) -> None:
        for s in self.subscriptions:
            self.node.destroy_subscription(s)
        self.subscriptions = []
