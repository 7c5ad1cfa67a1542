"""The reliability monitor: a ROS node that watches the running stack from the outside.

It subscribes to what reaches the arm and to what tells how the stack is doing:

- /forward_effort_controller/commands: every command's arrival time and the mode in force, and
  whether it is within the robot's effort limits (length, finite, |u| <= effort_max);
- /mbrl/safety/mode, /mbrl/goal (a new goal = a point different from the previous one),
  /mbrl/sim/ee_position (kept at <= 50 Hz), /diagnostics (plan times of mpc_controller, the sim's
  watchdog, the filter's period counters);
- optionally, the liveness of each node's output topic (raw subscriptions: no deserialisation),
  which the chaos check uses to see a restarted node working again.

Arrival times are the middleware's receive timestamps (rmw message info, wall clock), not the
time this process's executor got round to the callback: a busy monitor must not invent gaps in
the command stream. (Falls back to time.time() where the middleware gives no timestamp.) The
publisher's send timestamps are kept too: missed periods counted on them are the filter's own,
free of delivery and of this process's scheduling.

`MemorySampler` records the RSS (psutil) of every node process of the stack, by node name.
"""
from __future__ import annotations

import threading
import time
from array import array
from typing import Callable, Optional

import numpy as np
import psutil
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from mbrl_ros.reliability.analysis import command_violation
from mbrl_ros.ros.conversions import LATCHED
from mbrl_ros.topics import (
    COMMAND_TOPIC, DIAGNOSTICS_TOPIC, EE_POSITION_TOPIC, GOAL_TOPIC, JOINT_STATES_TOPIC,
    MPC_COMMAND_TOPIC, POLICY_COMMAND_TOPIC, SAFETY_MODE_TOPIC, STATE_TOPIC, UNCERTAINTY_TOPIC
)
from mbrl_ros.ros.diagnostics import status_values

# Reliable and deep: nothing the filter sends is lost on the way to the monitor's queue.
_DEEP = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
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


def _arrival(info, key: str = 'received_timestamp') -> float:
    try:
        t = int(info[key])
    except (KeyError, TypeError, ValueError):
        t = 0
    return t * 1e-9 if t > 0 else time.time()


class Monitor:
    def __init__(self, probe, effort_max: np.ndarray, liveness: bool = False, ee_min_dt: float = 0.018,
                 keep_violations: int = 50):
        self.probe = probe
        self.node = probe.node
        self.effort_max = np.asarray(effort_max, dtype=np.float64)
        self.lock = threading.Lock()
        self.t_start = time.time()
        # commands
        self.cmd_t = array('d')
        self.cmd_sent_t = array('d')     # the publisher's send time (rmw source timestamp)
        self.cmd_mode: list[str] = []
        self.violations = 0
        self.violation_examples: list[tuple[float, str]] = []
        self._keep = keep_violations
        self.max_effort_fraction = 0.0
        # modes
        self.mode: Optional[str] = None
        self.mode_t = array('d')
        self.modes: list[str] = []
        # goals and end effector
        self.goal_t = array('d')
        self.goals: list[tuple] = []
        self.ee_t = array('d')
        self.ee = array('d')
        self._ee_min_dt = ee_min_dt
        # diagnostics
        self.diag: dict[str, tuple[float, int, str, dict]] = {}   # node -> (t, level, message, values)
        self.plan_ms: list[tuple[float, float, float]] = []       # (t, p50, p99) of mpc_controller
        self.watchdog: list[tuple[float, int, bool]] = []          # (t, trips, active) of sim_robot
        # liveness: node -> arrival times of its output (bounded)
        self.alive_t: dict[str, float] = {}

        n = self.node
        n.create_subscription(Float64MultiArray, COMMAND_TOPIC, self._on_command, _DEEP)
        n.create_subscription(String, SAFETY_MODE_TOPIC, self._on_mode, LATCHED)
        n.create_subscription(PointStamped, GOAL_TOPIC, self._on_goal, 10)
        n.create_subscription(PointStamped, EE_POSITION_TOPIC, self._on_ee, 10)
        n.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diag, 50)
        if liveness:
            for node, (topic, typ) in LIVENESS.items():
                if topic == COMMAND_TOPIC:
                    continue  # already timed above
                n.create_subscription(typ, topic, lambda m, info, k=node: self._on_alive(k, info), 10, raw=True)

    # ---- callbacks (executor thread) ----------------------------------------------------------
    def _on_command(self, msg, info) -> None:
        t = _arrival(info)
        why = command_violation(msg.data, self.effort_max)
        with self.lock:
            self.cmd_t.append(t)
            self.cmd_sent_t.append(_arrival(info, 'source_timestamp'))
            self.cmd_mode.append(self.mode or 'none')
            self.alive_t['safety_filter'] = t
            if why is not None:
                self.violations += 1
                if len(self.violation_examples) < self._keep:
                    self.violation_examples.append((t, why))
            else:
                frac = float(np.max(np.abs(np.asarray(msg.data)) / self.effort_max))
                self.max_effort_fraction = max(self.max_effort_fraction, frac)

    def _on_mode(self, msg, info) -> None:
        with self.lock:
            self.mode = msg.data
            self.mode_t.append(_arrival(info))
            self.modes.append(msg.data)

    def _on_goal(self, msg, info) -> None:
        g = (msg.point.x, msg.point.y, msg.point.z)
        with self.lock:
            if not self.goals or self.goals[-1] != g:   # a re-sent goal is the same goal
                self.goal_t.append(_arrival(info))
                self.goals.append(g)

    def _on_ee(self, msg, info) -> None:
        t = _arrival(info)
        with self.lock:
            if self.ee_t and t - self.ee_t[-1] < self._ee_min_dt:
                return
            self.ee_t.append(t)
            self.ee.extend((msg.point.x, msg.point.y, msg.point.z))
            self.alive_t['sim_ee'] = t

    def _on_alive(self, node: str, info) -> None:
        self.alive_t[node] = _arrival(info)

    def _on_diag(self, msg, info) -> None:
        t = _arrival(info)
        for st in msg.status:
            name = st.name.lstrip('/')
            values = status_values(st)
            level = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
            with self.lock:
                self.diag[name] = (t, level, st.message, values)
                self.alive_t[f'diag:{name}'] = t
            try:
                if name.endswith('mpc_controller'):
                    with self.lock:
                        self.plan_ms.append((t, float(values['plan_ms_p50']), float(values['plan_ms_p99'])))
                elif name.endswith('sim_robot'):
                    with self.lock:
                        self.watchdog.append((t, int(values['watchdog_trips']),
                                              values['watchdog_active'] == 'True'))
            except (KeyError, ValueError):
                pass  # 'n/a' before the first plan

    # ---- reading (any thread) -----------------------------------------------------------------
    def commands(self, t0: float = 0.0, t1: float = float('inf')) -> tuple[np.ndarray, list[str]]:
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

    def mode_changes(self, t0: float = 0.0) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, m) for t, m in zip(self.mode_t, self.modes) if t >= t0]

    def goal_record(self) -> tuple[np.ndarray, list[tuple]]:
        with self.lock:
            return np.frombuffer(self.goal_t, dtype=np.float64).copy(), list(self.goals)

    def ee_record(self) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            t = np.frombuffer(self.ee_t, dtype=np.float64).copy()
            p = np.frombuffer(self.ee, dtype=np.float64).copy()
        n = min(len(t), len(p) // 3)
        return t[:n], p[:3 * n].reshape(n, 3)

    def last_seen(self, key: str) -> Optional[float]:
        with self.lock:
            return self.alive_t.get(key)

    def diag_values(self, node: str) -> Optional[dict]:
        with self.lock:
            d = self.diag.get(node)
        return None if d is None else d[3]

    def wait(self, fn: Callable[[], object], timeout: float, period: float = 0.02):
        return self.probe.wait_until(fn, timeout, period)


class MemorySampler:
    """RSS of every node process (pids from `pids_fn() -> {name: pid}`) every `period_s`, on a thread."""

    def __init__(self, pids_fn: Callable[[], dict], period_s: float = 10.0):
        self.pids_fn = pids_fn
        self.period_s = period_s
        self.samples: list[tuple[float, str, int, int]] = []   # (t, node, pid, rss bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name='memory_sampler')

    def start(self) -> 'MemorySampler':
        self._thread.start()
        return self

    def sample(self) -> None:
        t = time.time()
        for name, pid in self.pids_fn().items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.samples.append((t, name, pid, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()  # the end point
