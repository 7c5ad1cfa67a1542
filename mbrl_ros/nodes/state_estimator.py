"""state_estimator: /joint_states -> /mbrl/state (filtered q, qd in the robot's joint order).

Wiring only; validation and filtering live in mbrl_ros.core.estimation. The output is
published from the subscription callback itself (no timer hop) with the input's header
stamp, so downstream latency is measurable from the driver's stamp. A timer only watches
for stale input (-> ERROR on /diagnostics; nothing is published without fresh input).
"""
from __future__ import annotations

import time

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from mbrl_ros.core.estimation import DROP_KINDS, REJECT_KINDS, FilterConfig, JointStateEstimator
from mbrl_ros.ros.control_loop import control_priority_param, prioritise_process, report_priority
from mbrl_ros.ros.conversions import SENSOR, stamp_to_sec
from mbrl_ros.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.ros.hang_watchdog import hang_timeout_param, start_hang_watchdog
from mbrl_ros.ros.node_main import StartupError, main_for
from mbrl_ros.ros.parameters import Param, ParameterHandler
from mbrl_ros.ros.robot_param import load_robot, robot_params, robot_source
from mbrl_ros.topics import JOINT_STATES_TOPIC, STATE_TOPIC

FILTER_PARAMS = ('process_noise', 'position_noise_std', 'velocity_noise_std', 'gap_timeout_s')

SPECS = [
    *robot_params(),  # robot_description, base_link, tip_link, ee_offset, ee_site, package_paths
    Param('robot', 'arm7', 'built-in robot name (arm7, arm3) or MJCF or URDF path; gives the joint order',
          dynamic=False),
    Param('joint_names', None, 'joint order of /mbrl/state; overrides the robot model when set',
          dynamic=False, type_hint='string_array'),
    Param('ignore_unknown_joints', False,
          'accept /joint_states carrying extra joints (e.g. a gripper) and ignore them; '
          'false: such messages are rejected', dynamic=False),
    Param('stale_timeout_s', 0.1, 'no valid /joint_states for this long -> stale (ERROR, no output)',
          range=(0.005, 60.0)),
    Param('use_measured_velocity', True,
          'use the driver\'s velocity when it sends one; false: estimate it from positions only'),
    Param('process_noise', FilterConfig.process_noise,
          'filter: white-acceleration spectral density (rad^2/s^3); larger tracks faster, smooths less',
          range=(1e-6, 1e6)),
    Param('position_noise_std', FilterConfig.position_noise_std,
          'filter: position measurement noise std (rad)', range=(1e-9, 1.0)),
    Param('velocity_noise_std', FilterConfig.velocity_noise_std,
          'filter: velocity measurement noise std (rad/s)', range=(1e-9, 100.0)),
    Param('gap_timeout_s', FilterConfig.gap_timeout_s,
          'filter: a longer gap between samples restarts the filter instead of extrapolating',
          range=(1e-3, 60.0)),
    hang_timeout_param(),
    control_priority_param('every thread of the process (executor, DDS)'),
]

# Best effort matches both reliable and best-effort publishers (a driver's choice), and a
# lost joint state is better skipped than retransmitted late.
INPUT_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.BEST_EFFORT)
STALE_CHECK_PERIOD_S = 0.02


class StateEstimatorNode(Node):
    def __init__(self):
        super().__init__('state_estimator')
        self.params = ParameterHandler(self, SPECS, on_applied=self._on_params)
        names = self._joint_names()
        try:
            self.estimator = JointStateEstimator(
                names, self._filter_config(), stale_timeout_s=self.params['stale_timeout_s'],
                ignore_unknown_joints=self.params['ignore_unknown_joints'])
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self._names = list(self.estimator.joint_names)
        self._stale = True
        self._ever_accepted = False
        self._last_reason = ''
        self._internal_errors = 0
        self._published = 0
        self._window = {'n': 0, 'rejected': 0, 'proc_sum': 0.0, 'proc_max': 0.0, 't0': time.monotonic()}
        self._pub = self.create_publisher(JointState, STATE_TOPIC, SENSOR)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_states, INPUT_QOS)
        # Steady clock: with use_sim_time a dead simulator also stops /clock, and a sim-time
        # timer would then never notice that the input went stale.
        self.create_timer(STALE_CHECK_PERIOD_S, self._check_stale,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.diagnostics = Diagnostics(self, self._status, period_s=1.0)
        self.hang_watchdog = start_hang_watchdog(self, self.params['hang_timeout_s'])
        # On the state path to every controller: a state that waits behind other processes is old.
        self.scheduling = prioritise_process(self.params['control_thread_priority'])
        report_priority(self.scheduling, self.get_logger(), 'threads')
        self.get_logger().info(f'estimating {len(names)} joints {names}; waiting for /joint_states')

    # ---- configuration ------------------------------------------------------------------
    def _joint_names(self) -> list[str]:
        override = self.params['joint_names']
        if override:
            return [str(n) for n in override]
        try:
            return list(load_robot(self.params).joint_names)
        except Exception as exc:  # unknown name, unreadable MJCF: say which
            raise StartupError(f"cannot load robot {robot_source(self.params)}: {exc}") from exc

    def _filter_config(self) -> FilterConfig:
        return FilterConfig(**{k: float(self.params[k]) for k in FILTER_PARAMS})

    def _on_params(self, changes: dict) -> None:
        if any(k in changes for k in FILTER_PARAMS):
            self.estimator.config = self._filter_config()
        if 'stale_timeout_s' in changes:
            self.estimator.stale_timeout_s = float(changes['stale_timeout_s'])

    # ---- the hot path -------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        t_in = time.monotonic()
        try:
            result = self.estimator.update(
                msg.name, stamp_to_sec(msg.header.stamp), msg.position,
                msg.velocity if self.params['use_measured_velocity'] else None,
                msg.effort, received=t_in)
            if not result.accepted:
                self._last_reason = result.reason
                self._window['rejected'] += 1
                self.get_logger().warn(f'/joint_states {result.kind}: {result.reason}',
                                       throttle_duration_sec=2.0)
                return
            est = result.estimate
            out = JointState()
            out.header = msg.header  # the driver's stamp: latency stays measurable downstream
            out.name = self._names
            out.position = est.position.tolist()
            out.velocity = est.velocity.tolist()
            if est.effort is not None:
                out.effort = est.effort.tolist()
            self._pub.publish(out)
            self._published += 1
            if self._stale:
                first = not self._ever_accepted
                self._ever_accepted = True
                self._set_stale(False, first)
        except Exception as exc:  # a malformed message must never take the node down
            self._internal_errors += 1
            self._last_reason = f'internal error: {exc!r}'
            self.get_logger().error(f'/joint_states callback failed: {exc!r}', throttle_duration_sec=2.0)
        finally:
            dt = time.monotonic() - t_in
            w = self._window
            w['n'] += 1
            w['proc_sum'] += dt
            w['proc_max'] = max(w['proc_max'], dt)

    def close(self) -> None:
        if self.hang_watchdog is not None:  # shutting down: a slow exit is not a hang
            self.hang_watchdog.close()

    # ---- health -------------------------------------------------------------------------
    def _check_stale(self) -> None:
        if self.estimator.is_stale(time.monotonic()) and not self._stale and self._ever_accepted:
            self._set_stale(True)

    def _set_stale(self, stale: bool, first: bool = False) -> None:
        self._stale = stale
        if stale:
            self.get_logger().error(
                f'/joint_states stale: nothing valid for {self.params["stale_timeout_s"]} s; '
                'not publishing /mbrl/state')
            # No reset here: on resume the estimator's gap_timeout_s restarts the filter, and
            # keeping the last stamp still drops old samples replayed after the outage.
        else:
            self.get_logger().info('/joint_states ' + ('received' if first else 'fresh again')
                                   + '; publishing /mbrl/state')
        self.diagnostics.publish()  # tell monitors now, not at the next period

    def _status(self):
        now = time.monotonic()
        est = self.estimator
        w = self._window
        span = max(now - w['t0'], 1e-9)
        values = {
            'joints': len(self._names),
            'threads': self.scheduling,
            'published': self._published,
            'input_rate_hz': w['n'] / span,
            'callback_mean_ms': 1e3 * w['proc_sum'] / w['n'] if w['n'] else 0.0,
            'callback_max_ms': 1e3 * w['proc_max'],
            'velocity_source': ('none yet' if est.last is None else
                                'measured' if est.last.velocity_measured else 'estimated'),
            'rejected_total': est.rejected_total,
            'dropped_total': est.dropped_total,
            'internal_errors': self._internal_errors,
            **{k: est.counters[k] for k in ('accepted', *REJECT_KINDS, *DROP_KINDS, 'reinitialised',
                                            'clock_jumps', 'effort_dropped')},
        }
        age = est.age(now)
        values['input_age_s'] = 'never' if age is None else age
        values['last_rejection'] = self._last_reason or 'none'
        rejected_recently = w['rejected'] > 0
        self._window = {'n': 0, 'rejected': 0, 'proc_sum': 0.0, 'proc_max': 0.0, 't0': now}
        if not self._ever_accepted:
            if est.rejected_total + est.dropped_total + self._internal_errors:
                return ERROR, f'every /joint_states so far refused: {self._last_reason}', values
            return WARN, 'waiting for /joint_states', values
        if self._stale:
            return ERROR, f'stale: no valid /joint_states for {age:.2f} s', values
        if rejected_recently:
            return WARN, f'rejecting some /joint_states: {self._last_reason}', values
        return OK, 'ok', values


def main():
    main_for(StateEstimatorNode)


if __name__ == '__main__':
    main()
