"""The stack observer: what a running stack sends the robot and says about itself, seen from outside.

One observer for every tool that watches the stack (demo, reliability checks, ROS bench, fuzzer):

- the commands to the robot (COMMAND_TOPIC): arrival and send times, the mode in force, and each
  checked with `core.commands.check_command` (count, first bad examples); optionally only those of
  one publishing node (told apart by publisher gid) and without the caller's own (`ignore`);
- the safety mode, goals (a re-sent goal is the same goal), the end effector (thinned to
  `ee_min_dt`), the active model, the MPC's commands (their state stamps: the delay to the robot);
- /diagnostics: each node's latest (t, level, message, values), mpc_controller's plan times,
  sim_robot's watchdog, and optionally every status in order (`status_log`);
- optionally each node's output topic (raw: no deserialisation), to see a restarted node work again.

Times are the middleware's receive timestamps (rmw message info, wall clock), not when this
process's executor got round to a callback: a busy observer must not invent gaps in the command
stream (time.time() where the middleware gives none). The publisher's send times are kept too.

`watch` picks what is subscribed; a caller that already receives the messages (the demo's bag
recorder) makes the observer with `subscribe=False` and hands them to `take(topic, msg, t)`.
"""
from __future__ import annotations

import threading
import time
from array import array
from typing import Callable, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from mbrl_ros.core.commands import check_command
from mbrl_ros.ros.conversions import LATCHED
from mbrl_ros.ros.diagnostics import status_values
from mbrl_ros.topics import (
    ACTIVE_MODEL_TOPIC, COMMAND_TOPIC, DIAGNOSTICS_TOPIC, EE_POSITION_TOPIC, GOAL_TOPIC, JOINT_STATES_TOPIC,
    MPC_COMMAND_TOPIC, POLICY_COMMAND_TOPIC, SAFETY_MODE_TOPIC, STATE_TOPIC, UNCERTAINTY_TOPIC
)

# Reliable and deep: nothing the filter sends is lost on the way to the observer's queue.
DEEP = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                  durability=DurabilityPolicy.VOLATILE)

# Each node's own output: seeing it flow again means the node is back at work.
LIVENESS = {
    'sim_robot': (JOINT_STATES_TOPIC, JointState),
    'state_estimator': (STATE_TOPIC, JointState),
    'world_model': (UNCERTAINTY_TOPIC, Float64),
    'mpc_controller': (MPC_COMMAND_TOPIC, JointState),
    'policy': (POLICY_COMMAND_TOPIC, JointState),
    'safety_filter': (COMMAND_TOPIC, Float64MultiArray),
}

# what can be watched: topic, type, QoS
WATCH = {
    'commands': (COMMAND_TOPIC, Float64MultiArray, DEEP),
    'mode': (SAFETY_MODE_TOPIC, String, LATCHED),
    'goals': (GOAL_TOPIC, PointStamped, 10),
    'ee': (EE_POSITION_TOPIC, PointStamped, 50),
    'active_model': (ACTIVE_MODEL_TOPIC, String, LATCHED),
    'mpc': (MPC_COMMAND_TOPIC, JointState, 50),
    'diagnostics': (DIAGNOSTICS_TOPIC, DiagnosticArray, 100),
}
RELIABILITY_WATCH = ('commands', 'mode', 'goals', 'ee', 'diagnostics')


def arrival(info, key: str = 'received_timestamp') -> float:
    """A message's time from its rmw info (or a time already in seconds); now if it has none."""
    if isinstance(info, float):
        return info
    try:
        t = int(info[key])
    except (KeyError, TypeError, ValueError):
        t = 0
    return t * 1e-9 if t > 0 else time.time()


def node_name(status_name: str) -> str:
    """'safety_filter' for a status named '/safety_filter' (or 'prefix: /safety_filter')."""
    return status_name.split(':')[-1].strip().lstrip('/')


def _stamp(header) -> float:
    return header.stamp.sec + 1e-9 * header.stamp.nanosec


class StackObserver:
    def __init__(self, probe, robot, watch=RELIABILITY_WATCH, *, subscribe: bool = True,
                 liveness: bool = False, ee_min_dt: float = 0.018, keep_violations: int = 50,
                 command_from: Optional[str] = None, ignore: Optional[Callable] = None,
                 status_log: bool = False, on_status: Optional[Callable] = None):
        """`command_from`: count only the commands of this node (others: `other_commands`);
        `ignore(msg)`: True for commands not to count at all; `on_status(name, status, values, t)`:
        called for every /diagnostics status."""
        self.probe = probe
        self.node = probe.node
        self.robot = robot
        self.lock = threading.Lock()
        self.t_start = time.time()
        # commands
        self.cmd_t = array('d')
        self.cmd_sent_t = array('d')     # the publisher's send time (rmw source timestamp)
        self.cmd_mode: list[str] = []
        self.violations = 0
        self.violation_examples: list[tuple[float, str]] = []
        self.other_commands = 0
        self._keep = keep_violations
        self._command_from = command_from
        self._gids: set = set()
        self._ignore = ignore
        # modes, goals, end effector, model, MPC
        self.mode: Optional[str] = None
        self.mode_t = array('d')
        self.modes: list[str] = []
        self.goal_t = array('d')
        self.goals: list[tuple] = []
        self.ee_t = array('d')
        self.ee_stamp = array('d')
        self.ee = array('d')
        self._ee_min_dt = ee_min_dt
        self.active_model: Optional[str] = None
        self.mpc: list[tuple[float, float]] = []          # (arrival, state stamp) of the MPC's commands
        self.delay_ms: list[tuple[float, float]] = []     # (arrival, ms from that stamp to the robot)
        # diagnostics
        self.diag: dict[str, tuple[float, int, str, dict]] = {}   # node -> (t, level, message, values)
        self.plan_ms: list[tuple[float, float, float]] = []       # (t, p50, p99) of mpc_controller
        self.watchdog: list[tuple[float, int, bool]] = []          # (t, trips, active) of sim_robot
        self.statuses: Optional[list] = [] if status_log else None  # (t, node, level, message, values)
        self._on_status = on_status
        # liveness: node -> arrival time of its latest output
        self.alive_t: dict[str, float] = {}

        self._handlers = {'commands': self._on_command, 'mode': self._on_mode, 'goals': self._on_goal,
                          'ee': self._on_ee, 'active_model': self._on_active, 'mpc': self._on_mpc,
                          'diagnostics': self._on_diag}
        self._by_topic = {WATCH[w][0]: self._handlers[w] for w in watch}
        if command_from:
            self.refresh_publishers()
        if subscribe:
            for w in watch:
                topic, typ, qos = WATCH[w]
                self.node.create_subscription(typ, topic, self._handlers[w], qos)
        if liveness:
            for name, (topic, typ) in LIVENESS.items():
                if topic != COMMAND_TOPIC:   # commands are timed already
                    self.node.create_subscription(typ, topic, lambda m, info, k=name: self._on_alive(k, info),
                                                  10, raw=True)

    def take(self, topic: str, msg, t: float) -> None:
        """A message received elsewhere at time t (s)."""
        fn = self._by_topic.get(topic)
        if fn is not None:
            fn(msg, float(t))

    # ---- callbacks (executor thread) ----------------------------------------------------------
    def refresh_publishers(self) -> int:
        infos = self.node.get_publishers_info_by_topic(COMMAND_TOPIC)
        self._gids = {bytes(i.endpoint_gid) for i in infos if i.node_name == self._command_from}
        return len(self._gids)

    def _from_watched_node(self, info) -> bool:
        gid = info.get('publisher_gid') if isinstance(info, dict) else None
        gid = bytes(gid['data']) if gid else b''
        # gid lengths differ between the endpoint info and the message info: compare the common prefix
        if any(gid[:len(g)] == g or g[:len(gid)] == gid for g in self._gids if gid):
            return True
        return not self._gids and bool(self.refresh_publishers()) and self._from_watched_node(info)

    def _on_command(self, msg, info) -> None:
        if self._ignore is not None and self._ignore(msg):
            return
        if self._command_from and not self._from_watched_node(info):
            with self.lock:
                self.other_commands += 1
            return
        t = arrival(info)
        why = check_command(msg.data, self.robot, 'effort')
        with self.lock:
            self.cmd_t.append(t)
            self.cmd_sent_t.append(arrival(info, 'source_timestamp'))
            self.cmd_mode.append(self.mode or 'none')
            self.alive_t['safety_filter'] = t
            if self.mpc and t - self.mpc[-1][0] < 0.1:
                self.delay_ms.append((t, 1e3 * (t - self.mpc[-1][1])))
            if why is not None:
                self.violations += 1
                if len(self.violation_examples) < self._keep:
                    self.violation_examples.append((t, why))

    def _on_mode(self, msg, info) -> None:
        with self.lock:
            self.mode = msg.data
            self.mode_t.append(arrival(info))
            self.modes.append(msg.data)

    def _on_goal(self, msg, info) -> None:
        g = (msg.point.x, msg.point.y, msg.point.z)
        with self.lock:
            if not self.goals or self.goals[-1] != g:
                self.goal_t.append(arrival(info))
                self.goals.append(g)

    def _on_ee(self, msg, info) -> None:
        t = arrival(info)
        with self.lock:
            if self.ee_t and t - self.ee_t[-1] < self._ee_min_dt:
                return
            self.ee_t.append(t)
            self.ee_stamp.append(_stamp(msg.header))
            self.ee.extend((msg.point.x, msg.point.y, msg.point.z))
            self.alive_t['sim_ee'] = t

    def _on_active(self, msg, info) -> None:
        self.active_model = msg.data

    def _on_mpc(self, msg, info) -> None:
        with self.lock:
            self.mpc.append((arrival(info), _stamp(msg.header)))

    def _on_alive(self, name: str, info) -> None:
        self.alive_t[name] = arrival(info)

    def _on_diag(self, msg, info) -> None:
        t = arrival(info)
        for st in msg.status:
            name = node_name(st.name)
            values = status_values(st)
            level = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
            with self.lock:
                self.diag[name] = (t, level, st.message, values)
                self.alive_t[f'diag:{name}'] = t
                if self.statuses is not None:
                    self.statuses.append((t, name, level, st.message, values))
                try:
                    if name.endswith('mpc_controller'):
                        self.plan_ms.append((t, float(values['plan_ms_p50']), float(values['plan_ms_p99'])))
                    elif name.endswith('sim_robot'):
                        self.watchdog.append((t, int(values['watchdog_trips']), values['watchdog_active'] == 'True'))
                except (KeyError, ValueError):
                    pass  # 'n/a' before the first plan
            if self._on_status is not None:
                self._on_status(name, st, values, t)

    # ---- reading (any thread) -----------------------------------------------------------------
    def snapshot(self) -> tuple[int, int, str]:
        """(commands, outside the limits, the first bad one's reason)."""
        with self.lock:
            first = self.violation_examples[0][1] if self.violation_examples else ''
            return len(self.cmd_t), self.violations, first

    def commands(self, t0: float = 0.0, t1: float = float('inf')) -> tuple[np.ndarray, list[str]]:
        """Arrival times of the commands in [t0, t1] and the mode in force at each."""
        with self.lock:
            t = np.frombuffer(self.cmd_t, dtype=np.float64).copy()
            modes = list(self.cmd_mode[:len(t)])
        m = (t >= t0) & (t <= t1)
        return t[m], [x for x, keep in zip(modes, m) if keep]

    def sent_times(self, t0: float = 0.0, t1: float = float('inf')) -> np.ndarray:
        """Send times of the commands (the filter's clock), for the same figures free of delivery delay."""
        with self.lock:
            t = np.frombuffer(self.cmd_sent_t, dtype=np.float64).copy()
        return t[(t >= t0) & (t <= t1)]

    def mpc_times(self, t0: float = 0.0, t1: float = float('inf')) -> np.ndarray:
        with self.lock:
            t = np.array([a for a, _ in self.mpc], dtype=np.float64)
        return t[(t >= t0) & (t <= t1)]

    def delays_ms(self, t0: float = 0.0) -> np.ndarray:
        """State stamp of the MPC command last received -> command to the robot, from t0 on."""
        with self.lock:
            return np.array([ms for t, ms in self.delay_ms if t >= t0], dtype=np.float64)

    def mode_changes(self, t0: float = 0.0) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, m) for t, m in zip(self.mode_t, self.modes) if t >= t0]

    def goal_record(self) -> tuple[np.ndarray, list[tuple]]:
        with self.lock:
            return np.frombuffer(self.goal_t, dtype=np.float64).copy(), list(self.goals)

    def ee_record(self, by_stamp: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(times (n,), positions (n, 3)); times are arrivals, or the messages' stamps."""
        with self.lock:
            t = np.frombuffer(self.ee_stamp if by_stamp else self.ee_t, dtype=np.float64).copy()
            p = np.frombuffer(self.ee, dtype=np.float64).copy()
        n = min(len(t), len(p) // 3)
        return t[:n], p[:3 * n].reshape(n, 3)

    def forget_ee(self, before_stamp: float) -> None:
        """Drop the EE samples up to the first one stamped at or after `before_stamp`."""
        with self.lock:
            late = np.frombuffer(self.ee_stamp, dtype=np.float64) >= before_stamp
            k = int(np.argmax(late)) if late.any() else len(self.ee_stamp)
            del self.ee_t[:k], self.ee_stamp[:k], self.ee[:3 * k]

    def last_seen(self, key: str) -> Optional[float]:
        with self.lock:
            return self.alive_t.get(key)

    def diag_values(self, node: str) -> Optional[dict]:
        with self.lock:
            d = self.diag.get(node)
        return None if d is None else d[3]

    def status_count(self) -> int:
        with self.lock:
            return len(self.statuses or ())

    def statuses_since(self, k: int) -> list:
        with self.lock:
            return list((self.statuses or [])[k:])

    def wait(self, fn: Callable[[], object], timeout: float, period: float = 0.02):
        return self.probe.wait_until(fn, timeout, period)
