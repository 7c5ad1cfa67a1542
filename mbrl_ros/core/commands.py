"""Validation of joint commands before they may reach an actuator.

A command that is the wrong length, non-finite or beyond the robot's limits is refused, not
clamped: a malformed command means something upstream is broken, and silently repairing it
would hide that. (The safety filter clamps *well-formed* commands to the limits.)
"""
from __future__ import annotations

import threading

import numpy as np

INTERFACES = ('effort', 'velocity')


def check_command(values, robot, interface: str = 'effort', tolerance: float = 1e-9) -> str | None:
    """Why `values` cannot be applied to `robot` through `interface`, or None if it can.

    `values` is a sequence of floats (e.g. a Float64MultiArray's data), one per joint in the
    robot's joint order; limits are `robot.effort_max` (Nm) or `robot.qd_max` (rad/s).
    """
    if interface not in INTERFACES:
        return f"unknown command interface {interface!r} (expected one of {', '.join(INTERFACES)})"
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return f'command is not a sequence of numbers: {exc}'
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.size != robot.dof:
        return f'command has {a.size} values, expected {robot.dof} (one per joint of {robot.name})'
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        return 'command has non-finite values at ' + ', '.join(
            f'{robot.joint_names[i]}={a[i]}' for i in bad)
    limit = robot.effort_max if interface == 'effort' else robot.qd_max
    unit = 'Nm' if interface == 'effort' else 'rad/s'
    over = np.flatnonzero(np.abs(a) > limit + tolerance)
    if over.size:
        return f'{interface} command beyond limits at ' + ', '.join(
            f'{robot.joint_names[i]}={a[i]:.6g} (limit {limit[i]:g} {unit})' for i in over)
    return None


class CommandWatchdog:
    """The latest good command and the watchdog over it, shared between a subscriber thread
    (`accept`) and a control loop (`current`), like ros2_control's real-time buffer plus a
    command timeout: a command older than `timeout_s` is no longer in force and zero is.
    """

    def __init__(self, dof: int, timeout_s: float):
        self.zero = np.zeros(int(dof))
        self.timeout_s = float(timeout_s)
        self.trips = 0          # fresh -> stale transitions
        self.tripped = True     # nothing in force yet
        self._cmd: np.ndarray | None = None
        self._time = 0.0
        self._lock = threading.Lock()

    def accept(self, values, now: float) -> None:
        """Hold `values` (already checked with check_command) from time `now` on."""
        a = np.array(values, dtype=np.float64)
        with self._lock:
            self._cmd, self._time = a, now

    def clear(self) -> None:
        """Drop the held command (e.g. after a reset it must not push the arm on)."""
        with self._lock:
            self._cmd = None

    def age(self, now: float) -> float | None:
        with self._lock:
            return None if self._cmd is None else now - self._time

    def current(self, now: float) -> tuple[np.ndarray, bool]:
        """(command in force, whether the watchdog has just tripped)."""
        with self._lock:
            cmd, t = self._cmd, self._time
        fresh = cmd is not None and now - t <= self.timeout_s
        just_tripped = not fresh and not self.tripped
        if just_tripped:
            self.trips += 1
        self.tripped = not fresh
        return (cmd if fresh else self.zero), just_tripped
