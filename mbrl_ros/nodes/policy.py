"""policy: the distilled fast policy (policy.onnx of the announced bundle) at `control_rate_hz`.

/mbrl/state (latest wins) + /mbrl/goal + /mbrl/world_model/active_model (latched) ->
/mbrl/policy/command (JointState, effort field, header stamp = the stamp of the state it was
computed from), one per period, so the safety filter always has a fresh fallback when the MPC
is late or gone.

A bundle without policy.onnx (or none yet) -> no commands and a WARN status saying so. A
stale/malformed state or no goal -> no command for that period. The work is one onnxruntime
call (mbrl_ros.core.policy.PolicyRuntime); the loop runs in its own paced thread
(mbrl_ros.ros.control_loop) and the single-threaded executor only stores inputs; bundles are
validated on a worker thread (BackgroundBundleFollower), as in mpc_controller.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Optional

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mbrl_ros.ros.command_limits import LimitsFollower
from mbrl_ros.ros.control_loop import control_priority_param
from mbrl_ros.ros.controller_node import ControllerNode
from mbrl_ros.ros.conversions import CONTROL, LATCHED
from mbrl_ros.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.ros.hang_watchdog import hang_timeout_param, start_hang_watchdog
from mbrl_ros.ros.model_source import follower_params
from mbrl_ros.ros.node_main import main_for
from mbrl_ros.ros.parameters import Param, ParameterHandler
from mbrl_ros.ros.robot_param import robot_params
from mbrl_ros.topics import ACTIVE_MODEL_TOPIC, GOAL_TOPIC, POLICY_COMMAND_TOPIC, STATE_TOPIC


SPECS = [
    *robot_params(),  # robot_description, base_link, tip_link, ee_offset, ee_site, package_paths
    Param('robot', 'arm7', 'built-in robot name (arm7, arm3) or MJCF or URDF path', dynamic=False),
    *follower_params(),
    Param('control_rate_hz', 50.0, 'commands per second (one per period, from the latest state)',
          range=(1.0, 1000.0)),
    Param('state_timeout_s', 0.1, 'a state older than this is stale: no command', range=(0.001, 10.0)),
    Param('stats_window', 2000, 'periods in the inference-time percentiles on /diagnostics',
          range=(10, 100000), dynamic=False),
    hang_timeout_param(),
    control_priority_param(),
]


class PolicyNode(ControllerNode, Node):
    def __init__(self):
        super().__init__('policy')
        self.params = ParameterHandler(self, SPECS, on_applied=self._follow_rate)
        self._load_robot()
        from mbrl_ros.core.workspace import Workspace
        self.workspace = Workspace.from_robot(self.robot)
        self._follow_models()
        self.runtime = None              # PolicyRuntime of the current bundle (None: no policy)
        self._no_policy = 'no model yet (waiting for /mbrl/world_model/active_model)'
        self._state = None               # (JointSample, stamp msg), latest
        self._goal: Optional[np.ndarray] = None
        self._ms: deque = deque(maxlen=self.params['stats_window'])
        self.counts = {'commands': 0, 'no_command': 0, 'bad_states': 0, 'stale_states': 0, 'bad_goals': 0,
                       'model_loads': 0, 'refused_models': 0, 'policy_errors': 0, 'internal_errors': 0}
        self._last = {'no_command': 'none', 'bad_input': 'none', 'error': 'none'}
        self._pub = self.create_publisher(JointState, POLICY_COMMAND_TOPIC, CONTROL)
        self.create_subscription(JointState, STATE_TOPIC, self._on_state, CONTROL)
        self.create_subscription(PointStamped, GOAL_TOPIC, self._on_goal, 10)
        self.create_subscription(String, ACTIVE_MODEL_TOPIC, self._on_active_model, LATCHED)
        # The safety filter's limits: commands clamped and rate-limited as it would, so that what the
        # network asks for is what the arm gets when the policy takes over.
        self.limits = LimitsFollower(self, self.robot.joint_names)
        self._last_cmd = None            # (effort, node time) of the last command published
        self.loop = self._make_loop(self._tick, 'policy')
        self._start_loop()
        self.diagnostics = Diagnostics(self, self._status, period_s=1.0)
        self.hang_watchdog = start_hang_watchdog(self, self.params['hang_timeout_s'])
        self.get_logger().info(f"policy for {self.robot.name} at {self.params['control_rate_hz']:g} Hz; "
                               f'waiting for /mbrl/world_model/active_model; model roots: {", ".join(self.roots)}')

    def _model_loaded(self, bundle) -> None:
        from mbrl_ros.core.policy import PolicyRuntime
        self.counts['model_loads'] += 1
        if bundle.policy_path is None:
            self.runtime = None
            self._no_policy = f'bundle {bundle.path} has no policy.onnx (distil one: mbrl-ros distill)'
            self.get_logger().warning(f'{self._no_policy}: no commands')
            return
        try:
            runtime = PolicyRuntime(bundle.policy_path)
        except Exception as exc:   # validated by load_bundle, so unexpected: keep running, say why
            self.runtime = None
            self._no_policy = f'cannot load {bundle.policy_path}: {exc}'
            self._error(self._no_policy)
            return
        if runtime.dof != self.robot.dof:
            self.runtime = None
            self._no_policy = f'{bundle.policy_path} is for {runtime.dof} joints, robot has {self.robot.dof}'
            self._error(self._no_policy)
            return
        self.runtime = runtime   # one reference: the next period uses it
        self.get_logger().info(f'policy {bundle.policy_path} ({bundle.identity})')

    # ---- one control period ---------------------------------------------------------------
    def _tick(self) -> None:
        if not self.context.ok():
            return
        self._run_period(self._act_once, 'policy step')

    def _act_once(self) -> None:
        runtime, state, goal = self.runtime, self._state, self._goal
        why = self._why_no_command(runtime, state, goal)
        if why:
            return self._no_command(why)
        sample, stamp = state
        from mbrl_ros.core.policy import PolicyError
        t0 = time.perf_counter()
        try:
            u = runtime.act(sample.q, sample.qd, goal)
        except PolicyError as exc:
            self.counts['policy_errors'] += 1
            return self._no_command(f'policy refused: {exc}')
        self._ms.append(1e3 * (time.perf_counter() - t0))
        limits = self.limits.limits
        if limits is not None:
            u = limits.bound(u, self._command_in_force())
        out = JointState(name=self.robot.joint_names, effort=[float(v) for v in u])
        out.header.stamp = stamp
        self._pub.publish(out)
        self._last_cmd = (np.asarray(u, dtype=np.float64), self._now())
        self.counts['commands'] += 1
        self._last['no_command'] = 'none'

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _command_in_force(self) -> Optional[np.ndarray]:
        """What the filter last sent (it rate-limits from that; the MPC's while the MPC is in charge),
        else this node's last command if recent, else None (only the effort bound applies)."""
        timeout = self.params['state_timeout_s']
        sent = self.limits.last_sent(timeout)
        if sent is None and self._last_cmd is not None and 0.0 <= self._now() - self._last_cmd[1] <= timeout:
            sent = self._last_cmd[0]
        return sent

    def _why_no_command(self, runtime, state, goal) -> Optional[str]:
        if runtime is None:
            return self._no_policy
        if goal is None:
            return 'no goal'
        if state is None:
            return 'no state'
        age = self.get_clock().now().nanoseconds * 1e-9 - state[0].stamp
        if abs(age) > self.params['state_timeout_s']:
            self.counts['stale_states'] += 1
            return f"stale state ({age * 1e3:.0f} ms old, timeout {self.params['state_timeout_s'] * 1e3:.0f} ms)"
        return None

    def _no_command(self, why: str) -> None:
        self.counts['no_command'] += 1
        # Log once per kind of reason: a stale state's age changes every period (no 50 Hz log spam).
        if why.split(' (')[0] != self._last['no_command'].split(' (')[0]:
            self.get_logger().info(f'no command: {why}')
        self._last['no_command'] = why

    # ---- health ---------------------------------------------------------------------------
    def _status(self):
        t = np.array(self._ms) if self._ms else None
        values = {'robot': self.robot.name, 'model': self.follower.identity,
                  'policy': str(self.runtime.path) if self.runtime is not None else 'none',
                  'control_rate_hz': self.params['control_rate_hz'],
                  'inference_ms_p50': float(np.percentile(t, 50)) if t is not None else 'n/a',
                  'inference_ms_p99': float(np.percentile(t, 99)) if t is not None else 'n/a',
                  'goal': 'none' if self._goal is None else np.round(self._goal, 4).tolist(),
                  'last_no_command': self._last['no_command'], 'last_bad_input': self._last['bad_input'],
                  'last_refused_model': self.follower.last_refusal,
                  'superseded_models': self.follower.superseded,
                  'model_roots': ', '.join(self.roots), 'last_error': self._last['error'],
                  'control_thread': self.loop.scheduling,
                  'command_limits': (self.limits.limits.describe() if self.limits.limits is not None
                                     else "the robot's full limits (none from the safety filter)"),
                  'refused_limits': self.limits.refused, 'last_refused_limits': self.limits.last_refusal,
                  'loop_cycles': self.loop.cycles, 'loop_resyncs': self.loop.resyncs, **self.counts}
        if self.counts['internal_errors']:
            return ERROR, f"errors: {self._last['error']}", values
        if self.runtime is None:
            return WARN, f'no policy: {self._no_policy}', values
        if self._goal is None:
            return OK, 'ok (idle: no goal)', values
        if self._last['no_command'] != 'none':
            return WARN, f"no command: {self._last['no_command']}", values
        return OK, f"ok ({self.counts['commands']} commands, inference p99 {values['inference_ms_p99']:.3f} ms)" \
            if t is not None else 'ok', values

    def close(self) -> None:
        if self.hang_watchdog is not None:  # shutting down: a slow exit is not a hang
            self.hang_watchdog.close()
        self.loop.stop()
        self.follower.close()


def main():
    main_for(PolicyNode, threads=1)


if __name__ == '__main__':
    main()
