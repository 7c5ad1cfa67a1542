"""Live data collection over ROS topics: exploration commands out, a rosbag2 MCAP log in.

Runs against a running `sim_robot` or a real arm's ros2_control stack: every control period it
sends an exploration command (mbrl_ros.core.data.exploration, checked with check_command
before it is published) on /forward_effort_controller/commands, and records /joint_states
(the bytes as received) and each command sent into the bag. Nothing is sent while the joint
states are stale, and a zero command (hold: gravity compensation only) is sent when stopping,
because a forward command controller keeps applying its last command.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.core.commands import check_command
from mbrl_ros.core.data.bags import BagWriter
from mbrl_ros.core.data.exploration import Exploration
from mbrl_ros.ros.conversions import CONTROL
from mbrl_ros.topics import COMMAND_TOPIC, JOINT_STATES_TOPIC

# Best effort matches reliable and best-effort drivers alike; a deep queue so a busy recorder
# does not drop samples.
JOINT_STATES_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.BEST_EFFORT)


class LiveRecorder(Node):
    def __init__(self, robot, writer: BagWriter, exploration: Exploration, n_commands: int,
                 dt: float = 0.02, episode_len: int = 200, stale_timeout_s: float = 0.1,
                 on_command: Optional[Callable[[int], None]] = None, node_name: str = 'mbrl_collect'):
        super().__init__(node_name)
        self.robot, self.writer, self.expl = robot, writer, exploration
        self.n_commands, self.dt, self.episode_len = int(n_commands), float(dt), int(episode_len)
        self.stale_ns = int(stale_timeout_s * 1e9)
        self.on_command = on_command
        self.names = list(robot.joint_names)
        self._index: dict[tuple, Optional[np.ndarray]] = {}
        self._q = self._qd = None
        self._t_state = None
        self.sent = 0
        self.refused = 0
        self.stale_ticks = 0
        self.bad_states = 0
        self.done = False
        self._stopping_tick = None
        self._pub = self.create_publisher(Float64MultiArray, COMMAND_TOPIC, CONTROL)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_states, JOINT_STATES_QOS, raw=True)
        self._timer = self.create_timer(self.dt, self._tick)
        self.get_logger().info(f'exploring {robot.name} ({exploration.kind}, amplitude {exploration.amplitude}) '
                               f'for {n_commands} control periods of {dt} s; waiting for {JOINT_STATES_TOPIC}')

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_joint_states(self, raw: bytes) -> None:
        t = self._now_ns()
        self.writer.write_raw(JOINT_STATES_TOPIC, t, raw)  # the log keeps everything; the reader filters
        try:
            msg = deserialize_message(raw, JointState)
            key = tuple(msg.name)
            if key not in self._index:
                where = {n: i for i, n in enumerate(key)}
                self._index[key] = (np.array([where[n] for n in self.names])
                                    if all(n in where for n in self.names) else None)
            idx = self._index[key]
            q = np.asarray(msg.position, dtype=np.float64)
            qd = np.asarray(msg.velocity, dtype=np.float64)
            if idx is None or len(q) != len(key) or len(qd) != len(key):
                raise ValueError('joint names/lengths do not match the robot')
            q, qd = q[idx], qd[idx]
            if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
                raise ValueError('non-finite joint state')
        except Exception:  # a bad message is logged (it is in the bag) but never explored from
            self.bad_states += 1
            return
        self._q, self._qd, self._t_state = q, qd, t

    def _send(self, values: np.ndarray) -> bool:
        reason = check_command(values, self.robot, 'effort')
        if reason:
            self.refused += 1
            self.get_logger().error(f'not sending exploration command: {reason}')
            return False
        msg = Float64MultiArray(data=[float(v) for v in values])
        self._pub.publish(msg)
        self.writer.write_raw(COMMAND_TOPIC, self._now_ns(), serialize_message(msg))
        return True

    def _tick(self) -> None:
        if self.done:
            return
        if self.sent >= self.n_commands:
            # One more period so the state after the last command is recorded, then hold.
            if self._stopping_tick is None:
                self._stopping_tick = 0
            else:
                self.stop()
            return
        t = self._now_ns()
        if self._t_state is None or t - self._t_state > self.stale_ns:
            self.stale_ticks += 1
            return
        if self.sent % self.episode_len == 0:
            self.expl.reset(self.episode_len)
        if self._send(self.expl(self._q, self._qd)):
            self.sent += 1
            if self.on_command is not None:
                self.on_command(self.sent)

    def stop(self) -> None:
        """Send the hold command and stop exploring (idempotent)."""
        if self.done:
            return
        self.done = True
        self._timer.cancel()
        try:
            self._send(np.zeros(len(self.names)))
        except Exception as exc:  # shutting down: say so, the bag is still closed by the caller
            self.get_logger().warning(f'could not send the final hold command: {exc}')
