"""mpc_controller (lifecycle): CEM/iCEM model-predictive control over the ensemble world model.

/mbrl/state (latest wins) + /mbrl/goal + /mbrl/world_model/active_model (latched) ->
/mbrl/mpc/command (JointState effort, stamped with the stamp of the state it planned from)
and, every `plan_publish_every` plans, /mbrl/mpc/plan (nav_msgs/Path, predicted EE path).

Threads (measured, see docs/mpc_controller.md): the control loop plans in its own thread
(mbrl_ros.ros.control_loop, paced against absolute deadlines); a single-threaded executor only
stores inputs and answers the parameter/lifecycle services; bundles are validated on a worker
thread (BackgroundBundleFollower). rclpy's MultiThreadedExecutor was far too slow with
/mbrl/state at 250 Hz. Everything handed to the loop (latest state, goal, new model, parameter
changes) is a single reference it picks up at the start of its next plan; only the loop touches
the planner. Deactivation stops the loop after the plan in flight.

The work is in mbrl_ros.core.planning.MpcController; goals are checked by
mbrl_ros.core.workspace.Workspace; bundles are followed by mbrl_ros.ros.model_source.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Optional

import numpy as np
from geometry_msgs.msg import PointStamped, PoseStamped
from nav_msgs.msg import Path as PathMsg
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mbrl_ros.core.estimation import DelayCompensator
from mbrl_ros.core.planning import CostWeights, PlannerConfig, from_mapping
from mbrl_ros.core.planning.mpc import ALIASES
from mbrl_ros.reliability.analysis import missed_in_gap
from mbrl_ros.ros.command_limits import LimitsFollower
from mbrl_ros.ros.control_loop import control_priority_param
from mbrl_ros.ros.controller_node import ControllerNode
from mbrl_ros.ros.conversions import CONTROL, LATCHED, SENSOR
from mbrl_ros.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.ros.hang_watchdog import hang_timeout_param, start_hang_watchdog
from mbrl_ros.ros.model_source import follower_params
from mbrl_ros.ros.node_main import StartupError, main_for
from mbrl_ros.ros.parameters import Param
from mbrl_ros.ros.robot_param import robot_params
from mbrl_ros.ros.settings_params import params_from_settings
from mbrl_ros.topics import ACTIVE_MODEL_TOPIC, GOAL_TOPIC, MPC_COMMAND_TOPIC, MPC_PLAN_TOPIC, STATE_TOPIC

_PLANNER_FIELDS = ('planner', 'horizon', 'num_samples', 'num_iterations', 'num_elites', 'time_budget_ms',
                   'alpha', 'init_std', 'min_std', 'noise_beta', 'population_decay', 'keep_elites_fraction',
                   'execute', 'shift_fill', 'std_carry', 'std_carry_radius', 'bias_gain')
_RENAME = {v: k for k, v in ALIASES.items()}   # uncertainty -> uncertainty_penalty
# A cycle still planning after this many periods has run away: it drops below the nodes that cover for it.
OVERRUN_DEMOTE_PERIODS = 2.0

CONTROLLERS = ('mpc', 'osc_pd')


def _gain_ok(v: float):
    return None if v == -1.0 or v >= 0.0 else 'must be >= 0 (or -1: the shipped value)'


SPECS = [
    *robot_params(),  # robot_description, base_link, tip_link, ee_offset, ee_site, package_paths
    Param('robot', 'arm7', 'built-in robot name (arm7, arm3) or MJCF or URDF path', dynamic=False),
    *follower_params(),
    Param('autostart', True, 'configure and activate at start (else wait for ~/change_state)', dynamic=False),
    Param('control_rate_hz', 50.0, 'plans (and commands) per second', range=(1.0, 500.0)),
    Param('state_timeout_s', 0.1, 'a state older than this is stale: no command', range=(0.001, 10.0)),
    Param('delay_compensation', True,
          'plan from the state predicted (world model, previous command) for the time the command '
          'will act: state age + expected plan time + command_delay_s; false: from the measured state'),
    Param('command_delay_s', 0.003, 'expected time from publishing a command to the arm applying it '
          '(transport, safety filter, the robot picking it up) [s]', range=(0.0, 0.5)),
    Param('plan_publish_every', 5, 'publish the predicted EE path every n-th plan (keeps the loop light)',
          range=(1, 1000)),
    Param('propagation', 'expectation', 'ensemble propagation (applies to the next model loaded)',
          choices=('expectation', 'ts1', 'tsinf'), dynamic=False),
    Param('num_particles', 1, 'particles per sample for ts1/tsinf', range=(1, 100), dynamic=False),
    Param('stats_window', 500, 'plans in the plan-time percentiles on /diagnostics', range=(10, 100000),
          dynamic=False),
    *params_from_settings(PlannerConfig, include=_PLANNER_FIELDS),
    *params_from_settings(CostWeights, rename=_RENAME),
    # The classical baseline through the identical stack (estimator, delay compensation, filter).
    Param('controller', 'mpc', 'mpc: plan with the ensemble; osc_pd: the operational-space PD baseline '
          '(mbrl_ros.core.baseline) on the same state, goal and delay compensation', choices=CONTROLLERS),
    *(Param(f'osc_{k}', -1.0, f'osc_pd {what}; -1 = the value for this robot in config/osc_pd.yaml '
            '(else the rule of baseline.default_gains), resolved at start', range=(-1.0, 1e5),
            validator=_gain_ok) for k, what in (('kp', 'task stiffness [N/m]'), ('kd', 'task damping [N s/m]'),
                                                ('kq', 'joint damping [N m s/rad]'))),
    hang_timeout_param(),
    control_priority_param(),
]


def settings_from(values: dict) -> tuple[list[str], PlannerConfig, CostWeights]:
    """(errors, config, weights) for a complete set of parameter values (validated as a batch)."""
    mapped = {ALIASES.get(k, k): v for k, v in values.items()}
    cfg, w = from_mapping(PlannerConfig, mapped), from_mapping(CostWeights, mapped)
    return cfg.errors() + w.errors(), cfg, w


class MpcControllerNode(ControllerNode, LifecycleNode):
    def __init__(self):
        super().__init__('mpc_controller')
        from mbrl_ros.ros.parameters import ParameterHandler
        self.params = ParameterHandler(self, SPECS, on_validate=self._validate, on_applied=self._applied)
        errs, _, _ = settings_from(self.params.values)
        if errs:
            raise StartupError('invalid planner parameters: ' + '; '.join(errs))
        self._load_robot()
        from mbrl_ros.core.workspace import Workspace
        self.workspace = Workspace.from_robot(self.robot)
        self._follow_models()
        self.mpc = None                  # MpcController, built when the first model arrives
        self._model_in_use = None        # identity of the bundle the planner runs
        self._state = None               # (JointSample, stamp msg) latest, set by the subscription
        self._goal: Optional[np.ndarray] = None
        self._goal_applied = None
        self._new_bundle = None          # validated bundle waiting for the loop
        self._param_changes: dict = {}   # accepted changes waiting for the loop
        self._param_lock = threading.Lock()
        self._active = False
        # demote_after: a plan running away (num_samples set huge) must not starve, at its own
        # priority, the state path and the policy that covers for it (control_loop.py).
        self.loop = self._make_loop(self._tick, 'mpc', demote_after=OVERRUN_DEMOTE_PERIODS)
        self._subs: list = []
        self._pub_cmd = self._pub_plan = None
        self._plan_ms: deque = deque(maxlen=self.params['stats_window'])
        self._recent_plan_s: deque = deque(maxlen=20)   # the expected plan time (delay compensation)
        self._predictor = None           # DelayCompensator of the model in use
        self._last_cmd = None            # (effort, ROS time published) of the last command
        self._limits = None              # LimitsFollower (the safety filter's limits), while configured
        self._limits_applied = None      # the CommandLimits the planner plans within now
        self.counts = {'plans': 0, 'commands': 0, 'overruns': 0, 'no_command': 0, 'bad_states': 0,
                       'stale_states': 0, 'bad_goals': 0, 'model_swaps': 0, 'refused_models': 0,
                       'internal_errors': 0, 'missed_periods': 0}
        self._sent_mono: Optional[float] = None   # when the last command went out (None: idle since)
        self._last = {'iterations': 0, 'samples': 0, 'goal_distance': float('nan'), 'no_command': 'none',
                      'compensated_ms': 0.0,
                      'bad_input': 'none', 'error': 'none'}
        self.osc = self._make_osc()
        self.diagnostics = Diagnostics(self, self._status, period_s=1.0)
        self.get_logger().info(f'model roots: {", ".join(self.roots)}')
        if self.params['autostart']:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError('autostart: configure failed')
            self.trigger_activate()
        # Whatever the lifecycle state: an unconfigured or inactive node still spins its executor.
        self.hang_watchdog = start_hang_watchdog(self, self.params['hang_timeout_s'])

    # ---- lifecycle ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._pub_cmd = self.create_lifecycle_publisher(JointState, MPC_COMMAND_TOPIC, CONTROL)
        self._pub_plan = self.create_lifecycle_publisher(PathMsg, MPC_PLAN_TOPIC, SENSOR)
        self._subs = [
            self.create_subscription(JointState, STATE_TOPIC, self._on_state, CONTROL),
            self.create_subscription(PointStamped, GOAL_TOPIC, self._on_goal, 10),
            self.create_subscription(String, ACTIVE_MODEL_TOPIC, self._on_active_model, LATCHED),
        ]
        self._limits = LimitsFollower(self, self.robot.joint_names)
        self.get_logger().info(f'configured for {self.robot.name} (reach {self.workspace.reach:.3f} m); '
                               'waiting for /mbrl/world_model/active_model' if self.mpc is None else 'configured')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        self._start_loop()
        self.get_logger().info(f"active: planning at {self.params['control_rate_hz']:g} Hz")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.loop.stop()  # waits for a plan in flight: no command after we report inactive
        self._sent_mono = None
        self.get_logger().info('inactive: no commands')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.loop.stop()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self._limits is not None:
            self._limits.destroy()
        self._limits, self._limits_applied = None, None
        for p in (self._pub_cmd, self._pub_plan):
            if p is not None:
                self.destroy_lifecycle_publisher(p)
        self._pub_cmd = self._pub_plan = None
        self.mpc, self.follower.current, self._model_in_use = None, None, None
        self._state, self._goal, self._goal_applied = None, None, None
        self._last_cmd, self._predictor = None, None
        self._recent_plan_s.clear()

    # ---- parameters -------------------------------------------------------------------
    def _validate(self, changes: dict) -> Optional[str]:
        errs, _, _ = settings_from({**self.params.values, **changes})
        return '; '.join(errs) if errs else None

    def _applied(self, changes: dict) -> None:
        with self._param_lock:
            self._param_changes.update(changes)
        self._follow_rate(changes)

    # ---- inputs (never block: store the latest and return) -------------------------------
    def _model_loaded(self, bundle) -> None:
        if not self._subs:
            return  # cleaned up while it was loading
        self._new_bundle = bundle  # the loop swaps it in between plans
        self.get_logger().info(f'loaded model {bundle.identity}')

    # ---- the control loop ---------------------------------------------------------------
    def _take_pending(self) -> None:
        bundle, self._new_bundle = self._new_bundle, None
        with self._param_lock:
            changes, self._param_changes = self._param_changes, {}
        if bundle is not None:
            self._swap_model(bundle)
        if changes.get('controller') == 'mpc' and self.mpc is not None:
            self.mpc.reset()   # back from osc_pd: the warm start is from another time
        if changes and self.mpc is not None:
            planner = {k: v for k, v in changes.items() if ALIASES.get(k, k) in _SETTINGS_FIELDS}
            reason = self.mpc.apply_parameters(planner) if planner else None
            if reason:  # validated already; this would be a bug, so say so loudly
                self._error(f'accepted parameters could not be applied: {reason}')
        limits = self._limits.limits if self._limits is not None else None
        if self.mpc is not None and limits is not self._limits_applied:
            try:
                self.mpc.set_command_limits(limits)
            except ValueError as exc:   # checked against the joint names already; say so if not
                self._error(f'cannot plan within the safety filter\'s limits: {exc}')
            self._limits_applied = limits
        if self._goal is not None and self._goal is not self._goal_applied and self.mpc is not None:
            self.mpc.set_goal(self._goal)
            self._goal_applied = self._goal

    def _swap_model(self, bundle) -> None:
        from mbrl_ros.core.planning import EnsembleDynamics, MpcController
        dyn = EnsembleDynamics(bundle.ensemble, propagation=self.params['propagation'],
                               num_particles=self.params['num_particles'])
        if self.mpc is None:
            _, cfg, w = settings_from(self.params.values)
            self.mpc = MpcController(self.robot, dyn, cfg, w, dt=bundle.dt)
            self._limits_applied = None   # a new planner plans within the robot's limits until told
        else:
            self.mpc.set_dynamics(dyn)
            self.mpc.dt = bundle.dt
        self._predictor = DelayCompensator(bundle.ensemble, bundle.dt)
        self._goal_applied = None
        self._model_in_use = bundle.identity
        self.counts['model_swaps'] += 1

    def _tick(self) -> None:
        if not self._active or not self.context.ok():
            return
        self._run_period(self._plan_once, 'plan')

    def _plan_once(self) -> None:
        self._take_pending()
        why = self._why_no_plan()
        if why:
            if self.mpc is None or self._goal is None:
                self._sent_mono = None   # idle, not missing periods
            return self._no_command(why)
        if self.params['controller'] == 'osc_pd':
            return self._osc_once()
        sample, stamp = self._state
        t0 = time.perf_counter()
        q, qd = self._state_at_actuation(sample)
        # the prediction's time comes out of the plan's budget
        res = self.mpc.compute(q, qd, now=sample.stamp, spent_ms=1e3 * (time.perf_counter() - t0),
                               last_action=self._command_in_force())
        ms = 1e3 * (time.perf_counter() - t0)
        self._plan_ms.append(ms)
        self._recent_plan_s.append(ms * 1e-3)
        self.counts['plans'] += 1
        budget = self.mpc.config.time_budget_ms
        if ms > 1e3 / self.params['control_rate_hz'] or (budget > 0 and ms > budget):
            self.counts['overruns'] += 1
        if res.plan is not None:
            self._last['iterations'] = res.plan.stats.iterations
            self._last['samples'] = res.plan.stats.samples_evaluated
        self._last['goal_distance'] = float(np.linalg.norm(self.robot.fk(sample.q) - self._goal))
        if res.command is None:
            return self._no_command(res.reason)
        out = JointState(name=self.robot.joint_names, effort=[float(u) for u in res.command])
        out.header.stamp = stamp
        self._pub_cmd.publish(out)
        self._last_cmd = (np.asarray(res.command, dtype=np.float64), self._now())
        self.counts['commands'] += 1
        self._count_missed_periods()
        # The predicted path is rolled out only when asked for (Plan): after the command is out.
        if self.counts['plans'] % self.params['plan_publish_every'] == 0 and res.plan.ee_path is not None:
            self._publish_plan(res.plan.ee_path, stamp)

    # ---- the osc_pd baseline (the law is in mbrl_ros.core.baseline) -------------------------
    def _make_osc(self):
        """OscPd with the gain parameters; -1 ones resolved to the shipped values and set on the node
        (so `ros2 param get` shows what runs)."""
        from rclpy.parameter import Parameter

        from mbrl_ros.core.baseline import OscPd, shipped_gains
        self._osc_shipped = shipped_gains(self.robot)
        resolved = [Parameter(f'osc_{k}', Parameter.Type.DOUBLE, float(getattr(self._osc_shipped, k)))
                    for k in ('kp', 'kd', 'kq') if self.params[f'osc_{k}'] == -1.0]
        if resolved:
            self.set_parameters(resolved)
        return OscPd(self.robot, self._osc_gains())

    def _osc_gains(self):
        from mbrl_ros.core.baseline import OscGains
        return OscGains(*(getattr(self._osc_shipped, k) if self.params[f'osc_{k}'] == -1.0 else self.params[f'osc_{k}']
                          for k in ('kp', 'kd', 'kq')))

    def _osc_once(self) -> None:
        """One osc_pd command from the same (delay-compensated) state the MPC would plan from.
        The safety filter judges it as an MPC command (its own ensemble disagreement at the state)."""
        gains = self._osc_gains()
        if gains != self.osc.gains:
            self.osc.set_gains(gains)
        sample, stamp = self._state
        t0 = time.perf_counter()
        q, qd = self._state_at_actuation(sample)
        u = self.osc(q, qd, self._goal)
        ms = 1e3 * (time.perf_counter() - t0)
        self._plan_ms.append(ms)
        self._recent_plan_s.append(ms * 1e-3)
        self.counts['plans'] += 1
        self._last['goal_distance'] = float(np.linalg.norm(self.robot.fk(sample.q) - self._goal))
        out = JointState(name=self.robot.joint_names, effort=[float(v) for v in u])
        out.header.stamp = stamp
        self._pub_cmd.publish(out)
        self._last_cmd = (u, self._now())
        self.counts['commands'] += 1
        self._count_missed_periods()
    def _command_in_force(self) -> Optional[np.ndarray]:
        """The start of the rate limit: what the safety filter last sent the robot (it rate-limits from
        that), else this node's last command if recent, else None (unknown: only the bounds apply)."""
        timeout = self.params['state_timeout_s']
        sent = self._limits.last_sent(timeout) if self._limits is not None else None
        if sent is None and self._last_cmd is not None and 0.0 <= self._now() - self._last_cmd[1] <= timeout:
            sent = self._last_cmd[0]
        return sent

    def _count_missed_periods(self) -> None:
        """Periods without a command, from this node's own send times (what a subscriber's receive
        times add, its delays, is not in it): the definition of mbrl_ros.reliability.analysis."""
        now = time.monotonic()
        if self._sent_mono is not None:
            self.counts['missed_periods'] += missed_in_gap(now - self._sent_mono, 1.0 / self.params['control_rate_hz'])
        self._sent_mono = now

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _state_at_actuation(self, sample) -> tuple[np.ndarray, np.ndarray]:
        """(q, qd) to plan from: the measured state, or (delay_compensation) its prediction for the
        time this plan's command will act, under the command acting until then (the last one sent,
        zero if none was sent within state_timeout_s: the robot side has timed it out or holds)."""
        if not self.params['delay_compensation'] or self._predictor is None:
            self._last['compensated_ms'] = 0.0
            return sample.q, sample.qd
        now = self._now()
        expected_plan = (float(np.median(self._recent_plan_s)) if self._recent_plan_s
                         else self.mpc.config.time_budget_ms * 1e-3)
        delay = max(now - sample.stamp, 0.0) + expected_plan + self.params['command_delay_s']
        u = np.zeros(self.robot.dof)
        if self._last_cmd is not None and now - self._last_cmd[1] <= self.params['state_timeout_s']:
            u = self._last_cmd[0]
        x = self._predictor.predict(np.concatenate([sample.q, sample.qd]), u, delay)
        self._last['compensated_ms'] = 1e3 * delay
        return x[:self.robot.dof], x[self.robot.dof:]

    def _why_no_plan(self) -> Optional[str]:
        if self.mpc is None:
            return 'no model yet (waiting for /mbrl/world_model/active_model)'
        if self._goal is None:
            return 'no goal'
        if self._state is None:
            return 'no state'
        age = self._now() - self._state[0].stamp
        if age > self.params['state_timeout_s'] or age < -self.params['state_timeout_s']:
            self.counts['stale_states'] += 1
            return f"stale state ({age * 1e3:.0f} ms old, timeout {self.params['state_timeout_s'] * 1e3:.0f} ms)"
        return None

    def _no_command(self, why: str) -> None:
        self.counts['no_command'] += 1
        if why != self._last['no_command']:
            self.get_logger().info(f'no command: {why}')
        self._last['no_command'] = why

    def _publish_plan(self, ee_path: np.ndarray, stamp) -> None:
        msg = PathMsg()
        msg.header.stamp = stamp
        msg.header.frame_id = 'world'
        for p in ee_path:
            pose = PoseStamped()
            pose.header = msg.header
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in p)
            pose.pose.orientation.w = 1.0
            msg.poses.append(pose)
        self._pub_plan.publish(msg)

    # ---- health -------------------------------------------------------------------------
    def _status(self):
        times = np.array(self._plan_ms) if self._plan_ms else None
        cfg = self.mpc.config if self.mpc is not None else settings_from(self.params.values)[1]
        values = {
            'lifecycle': 'active' if self._active else ('inactive' if self._subs else 'unconfigured'),
            # The model the planner uses now; a validated one waits for the next loop iteration.
            'model': self._model_in_use or 'none', 'robot': self.robot.name,
            'controller': self.params['controller'], 'horizon': cfg.horizon, 'num_samples': cfg.num_samples, 'planner': cfg.planner,
            'time_budget_ms': cfg.time_budget_ms, 'control_rate_hz': self.params['control_rate_hz'],
            'plan_ms_p50': float(np.percentile(times, 50)) if times is not None else 'n/a',
            'plan_ms_p99': float(np.percentile(times, 99)) if times is not None else 'n/a',
            'iterations_last': self._last['iterations'], 'samples_last': self._last['samples'],
            'compensated_delay_ms_last': self._last['compensated_ms'],
            'command_limits': (self._limits_applied.describe() if self._limits_applied is not None
                               else "the robot's full limits (none from the safety filter)"),
            'limits_updates': self._limits.updates if self._limits is not None else 0,
            'refused_limits': self._limits.refused if self._limits is not None else 0,
            'last_refused_limits': self._limits.last_refusal if self._limits is not None else 'none',
            'goal': 'none' if self._goal is None else np.round(self._goal, 4).tolist(),
            'goal_distance_m': self._last['goal_distance'],
            'last_no_command': self._last['no_command'], 'last_bad_input': self._last['bad_input'],
            'last_refused_model': self.follower.last_refusal,
            'superseded_models': self.follower.superseded,
            'model_roots': ', '.join(self.roots), 'last_error': self._last['error'],
            'control_thread': self.loop.scheduling,
            'loop_cycles': self.loop.cycles, 'loop_resyncs': self.loop.resyncs,
            'loop_demotions': self.loop.demotions,
            **self.counts,
        }
        if self.counts['internal_errors']:
            return ERROR, f"errors: {self._last['error']}", values
        if not self._active:
            return OK, values['lifecycle'], values
        if self.mpc is None:
            return WARN, 'no model (waiting for /mbrl/world_model/active_model)', values
        if self._last['no_command'] not in ('none', 'no goal') and self.counts['commands'] == 0:
            return WARN, f"no command: {self._last['no_command']}", values
        if self._goal is None:
            return OK, 'ok (idle: no goal)', values
        if times is None:
            return OK, 'ok (no plan yet)', values
        return OK, f"ok ({self.counts['commands']} commands, plan p50 {values['plan_ms_p50']:.1f} ms)", values

    def close(self) -> None:
        if self.hang_watchdog is not None:  # shutting down: a slow exit is not a hang
            self.hang_watchdog.close()
        self._active = False
        self.loop.stop()
        self.follower.close()


_SETTINGS_FIELDS = set(_PLANNER_FIELDS) | {f for f in CostWeights.__dataclass_fields__}


def main():
    main_for(MpcControllerNode, threads=1)


if __name__ == '__main__':
    main()
