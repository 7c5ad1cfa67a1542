"""sensor_msgs/JointState -> numpy in the robot's joint order, with a reason for anything wrong.

Shared by the nodes that read /mbrl/state or JointState commands: the joint order of a message
is looked up once per distinct name list (messages usually repeat the same names).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mbrl_ros.ros.conversions import stamp_to_sec


@dataclass
class JointSample:
    stamp: float                 # header stamp [s]
    q: Optional[np.ndarray]      # (dof,) positions (state) or None
    qd: Optional[np.ndarray]     # (dof,) velocities (state) or None
    effort: Optional[np.ndarray]  # (dof,) efforts (command) or None


class JointStateReader:
    def __init__(self, joint_names):
        self.names = list(joint_names)
        self.dof = len(self.names)
        self._index: dict = {}

    def _order(self, names) -> Optional[np.ndarray]:
        key = tuple(names)
        if key not in self._index:
            where = {n: i for i, n in enumerate(key)}
            # Exactly the robot's joints, in any order: an unknown extra joint means the sender
            # is configured for another robot (the state_estimator strips extras upstream).
            ok = len(where) == len(key) == self.dof and all(n in where for n in self.names)
            self._index[key] = np.array([where[n] for n in self.names]) if ok else None
        return self._index[key]

    def _stamp(self, msg) -> Optional[float]:
        t = stamp_to_sec(msg.header.stamp)
        return t if math.isfinite(t) and t > 0.0 else None

    def _field(self, msg, values, what):
        """`values` in robot order; an empty name list means the robot's order already."""
        if len(msg.name) == 0:
            if len(values) != self.dof:
                return None, f'{len(values)} {what} without joint names, expected {self.dof}'
            v = np.asarray(values, dtype=np.float64)
        else:
            idx = self._order(msg.name)
            if idx is None:
                return None, f'joint names {list(msg.name)[:12]} do not match {self.names}'
            if len(values) != len(msg.name):
                return None, f'{len(values)} {what} for {len(msg.name)} joint names'
            v = np.asarray(values, dtype=np.float64)[idx]
        if not np.all(np.isfinite(v)):
            return None, f'non-finite {what}'
        return v, None

    def state(self, msg) -> tuple[Optional[JointSample], Optional[str]]:
        """Positions and velocities (a /mbrl/state message); names are required."""
        if len(msg.name) == 0:
            return None, 'no joint names'
        t = self._stamp(msg)
        if t is None:
            return None, 'no valid header stamp'
        q, why = self._field(msg, msg.position, 'positions')
        if q is None:
            return None, why
        qd, why = self._field(msg, msg.velocity, 'velocities')
        if qd is None:
            return None, why
        return JointSample(t, q, qd, None), None

    def command(self, msg) -> tuple[Optional[JointSample], Optional[str]]:
        """The effort field of a JointState command (names may be empty: robot order)."""
        t = self._stamp(msg)
        if t is None:
            return None, 'no valid header stamp'
        u, why = self._field(msg, msg.effort, 'efforts')
        if u is None:
            return None, why
        return JointSample(t, None, None, u), None
