"""Goal driver: a new random reachable goal every `period_s` on /mbrl/goal, re-sent twice a
second in between (as mbrl_ros.testing.goals.GoalSender does), so a controller that restarts
mid-goal gets it again at once.

Goals come from mbrl_ros.core.report.reachable_goals (FK of random configurations away from the
joint limits, above the floor, inside the controllers' Workspace, each a real move from the
previous one), seeded: the same seed gives the same sequence.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PointStamped

from mbrl_ros.core.report import reachable_goals
from mbrl_ros.core.workspace import Workspace
from mbrl_ros.testing.goals import goal_msg
from mbrl_ros.topics import GOAL_TOPIC


class GoalDriver:
    def __init__(self, probe, robot, period_s: float = 3.0, seed: int = 0, resend_s: float = 0.5,
                 batch: int = 200):
        self.robot = robot
        self.period_s = float(period_s)
        self.resend_s = float(resend_s)
        self._rng = np.random.default_rng(seed)
        self._ws = Workspace.from_robot(robot)
        self._batch = batch
        self._queue: list[np.ndarray] = []
        self._last = robot.fk(robot.home_q)
        self.pub = probe.publisher(GOAL_TOPIC, PointStamped, 10)
        self.sent: list[tuple[float, tuple]] = []     # (time.time() of the first send, goal)
        self.goal = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name='goal_driver')

    def next_goal(self) -> np.ndarray:
        if not self._queue:
            self._queue = list(reachable_goals(self.robot, self._rng, self._batch, start=self._last,
                                               workspace=self._ws))
        self._last = self._queue.pop(0)
        return self._last

    def start(self) -> 'GoalDriver':
        self._thread.start()
        return self

    def _run(self) -> None:
        t_next = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= t_next:
                self.goal = self.next_goal()
                self.sent.append((time.time(), tuple(float(v) for v in self.goal)))
                t_next += self.period_s
                if t_next < now:      # fell far behind (a stalled process): no burst of goals
                    t_next = now + self.period_s
            self.pub.publish(goal_msg(self.goal))
            self._stop.wait(min(self.resend_s, max(0.0, t_next - time.monotonic())))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
