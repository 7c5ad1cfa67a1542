"""Sending a goal the way a user's node would, for tests and tools."""
from __future__ import annotations

import threading
import time

from geometry_msgs.msg import PointStamped

from mbrl_ros.ros.conversions import sec_to_stamp
from mbrl_ros.topics import GOAL_TOPIC


def goal_msg(xyz, frame: str = 'world') -> PointStamped:
    g = PointStamped()
    g.header.frame_id = frame
    g.header.stamp = sec_to_stamp(time.time())
    g.point.x, g.point.y, g.point.z = (float(v) for v in xyz)
    return g


class GoalSender:
    """Re-sends `goal` on /mbrl/goal twice a second from a thread of its own, so a subscriber
    discovered late still gets it. `goal` may be changed while it runs."""

    def __init__(self, probe, goal, period_s: float = 0.5):
        self.pub = probe.publisher(GOAL_TOPIC, PointStamped, 10)
        self.goal = goal
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.pub.publish(goal_msg(self.goal))
            self._stop.wait(self._period)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
