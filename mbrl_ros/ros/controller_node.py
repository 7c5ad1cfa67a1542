"""What the controller nodes share (mpc_controller, policy, safety_filter): the robot and the
state reader, following the announced model bundle, the control loop's start, and the input callbacks.

Inputs: the executor only reads a message and stores the latest good value; the control loop thread
uses it. What is refused is counted (`bad_states`, `bad_goals`), kept for /diagnostics
(`last_bad_input`) and logged, and the last good value stays in force.

The node provides `params` (with `robot`, `model_roots`, `model_dir`, `control_rate_hz`,
`control_thread_priority`), `counts`, `_last`, `_model_loaded`/`_model_refused` and, for goals,
`workspace` and `_goal`."""
from __future__ import annotations

import numpy as np

from mbrl_ros.ros.control_loop import ControlLoop, prioritise_process, report_scheduling
from mbrl_ros.ros.goal import read_goal
from mbrl_ros.ros.joint_state import JointStateReader
from mbrl_ros.ros.model_source import configured_roots, node_follower
from mbrl_ros.ros.node_main import StartupError
from mbrl_ros.ros.robot_param import load_robot


class ControllerNode:
    """A mixin before the rclpy Node class: `class PolicyNode(ControllerNode, Node)`."""

    def _load_robot(self) -> None:
        """`robot` and `reader` (a StartupError that says why when the robot cannot be loaded)."""
        try:
            self.robot = load_robot(self.params)
        except Exception as exc:
            raise StartupError(f"cannot load robot '{self.params['robot']}': {exc}") from exc
        self.reader = JointStateReader(self.robot.joint_names)

    def _follow_models(self) -> None:
        """`roots` and `follower`: bundles announced on active_model, validated off the executor."""
        # Confined like world_model: whoever can publish active_model must not choose any directory.
        self.roots = configured_roots(self.params['model_roots'], self.params['model_dir'], self.robot.name)
        self.follower = node_follower(self, self.robot, self._model_loaded, self._model_refused, self.roots,
                                      loop=lambda: self.loop)

    def _make_loop(self, tick, name: str, demote_after: float = 0.0) -> ControlLoop:
        return ControlLoop(tick, self.params['control_rate_hz'], name=name,
                           priority=self.params['control_thread_priority'], demote_after=demote_after)

    def _error(self, what: str) -> None:
        """An exception a callback caught: counted and shown on /diagnostics, logged at most every 2 s."""
        self.counts['internal_errors'] += 1
        self._last['error'] = what
        self.get_logger().error(what, throttle_duration_sec=2.0)

    def _run_period(self, once, what: str) -> None:
        """One control period: the loop must survive anything (no command this period, an error on
        /diagnostics); after SIGINT shut rclpy down under it, an exception is not an error."""
        try:
            once()
        except Exception as exc:
            if self.context.ok():
                self._error(f'{what} failed: {exc!r}')

    def _start_loop(self) -> None:
        # The executor and DDS threads too: a state waiting there is as old as one waiting upstream.
        # (Before the loop starts: an overrun guard runs one step above the loop.)
        prioritise_process(self.params['control_thread_priority'])
        self.loop.start()
        report_scheduling(self.loop, self.get_logger())

    def _on_state(self, msg) -> None:
        sample = self._read_state(msg)
        if sample is not None:
            self._state = (sample, msg.header.stamp)

    def _on_active_model(self, msg) -> None:
        self.follower.submit(msg.data)   # validated on the loader thread: the executor never stalls

    def _model_refused(self, text: str, why: str) -> None:
        self.counts['refused_models'] += 1
        self.get_logger().error(f'refused model {text[:200]!r}: {why}; keeping {self.follower.identity}')

    def _follow_rate(self, changes: dict) -> None:
        """A live control_rate_hz takes effect from the loop's next cycle."""
        if 'control_rate_hz' in changes:
            self.loop.set_rate(changes['control_rate_hz'])

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
