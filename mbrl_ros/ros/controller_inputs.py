"""The input callbacks the controller nodes share (mpc_controller, policy, safety_filter).

The executor only reads a message and stores the latest good value; the control loop thread uses
it. What is refused is counted (`bad_states`, `bad_goals`), kept for /diagnostics
(`last_bad_input`) and logged, and the last good value stays in force.

The node provides `reader` (a `JointStateReader`), `counts`, `_last` and, for goals, `workspace`
and `_goal`."""
from __future__ import annotations

import numpy as np

from mbrl_ros.ros.goal import read_goal


class ControllerInputs:
    def _refuse_input(self, what: str) -> None:
        self._last['bad_input'] = what
        self.get_logger().warning(f'ignoring {what}', throttle_duration_sec=2.0)

    def _read_state(self, msg):
        """The state sample of a /mbrl/state message, or None (refused: counted and logged)."""
        try:
            sample, why = self.reader.state(msg)
        except Exception as exc:  # a message no check foresaw: count it, keep running
            sample, why = None, f'unreadable: {exc!r}'
        if sample is None:
            self.counts['bad_states'] += 1
            self._refuse_input(f'state: {why}')
        return sample

    def _on_goal(self, msg) -> None:
        goal, why = read_goal(msg, self.workspace)
        if why:
            self.counts['bad_goals'] += 1
            self._last['bad_input'] = f'goal: {why}'
            kept = 'none' if self._goal is None else np.round(self._goal, 3).tolist()
            self.get_logger().warning(f'refused goal: {why}; keeping the previous goal {kept}')
            return
        if self._goal is None or not np.array_equal(goal, self._goal):
            self.get_logger().info(f'goal ({goal[0]:.3f}, {goal[1]:.3f}, {goal[2]:.3f})')
            self._goal = goal   # (a repeated goal keeps its object: the loop need not re-set it)
