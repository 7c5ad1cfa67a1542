"""safety_filter: the last gate before the actuators, in its own process.

Each period of its control loop (own thread, mbrl_ros.ros.control_loop) at `control_rate_hz`
it sends exactly one std_msgs/Float64MultiArray on /forward_effort_controller/commands, chosen
by mbrl_ros.core.safety.SafetyFilter: the MPC command if fresh and confident, else the policy
command, else hold (joint damping); clamped to the effort limits and rate-limited; a command
pushing a joint past its limit margin is refused.
/mbrl/safety/mode (latched String) is published on every change and every `mode_publish_period_s`.

Confidence: the node loads the bundle named on /mbrl/world_model/active_model itself and
computes the ensemble's disagreement about each candidate action at the current state (one
batch of at most two rows). Without a model, candidates carry no disagreement and are refused
unless `allow_missing_uncertainty` is true.

Freshness of a command: the older of its header stamp (the state it was planned from) and its
receive time, compared with now; a header stamp in the future is refused as such.

Inputs are stored by the subscriptions (single-threaded executor; latest wins) and read by the
loop; bundles are validated on a worker thread; a malformed message
is counted and dropped, so it can neither crash the node nor reach the output.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from mbrl_ros.core.safety import MODES, CommandSample, SafetyFilter, SafetySettings, StateSample
from mbrl_ros.ros.control_loop import control_priority_param
from mbrl_ros.ros.controller_node import ControllerNode
from mbrl_ros.ros.conversions import CONTROL, LATCHED, SENSOR, limits_to_msg
from mbrl_ros.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.ros.hang_watchdog import hang_timeout_param, start_hang_watchdog
from mbrl_ros.ros.model_source import follower_params
from mbrl_ros.ros.node_main import StartupError, main_for
from mbrl_ros.ros.parameters import Param, ParameterHandler
from mbrl_ros.ros.robot_param import robot_params
from mbrl_ros.ros.settings_params import params_from_settings
from mbrl_ros.topics import (
    ACTIVE_MODEL_TOPIC, COMMAND_TOPIC, MPC_COMMAND_TOPIC, POLICY_COMMAND_TOPIC, SAFETY_LIMITS_TOPIC,
    SAFETY_MODE_TOPIC, STATE_TOPIC
)

SOURCES = {'mpc': MPC_COMMAND_TOPIC, 'policy': POLICY_COMMAND_TOPIC}

SPECS = [
    *robot_params(),  # robot_description, base_link, tip_link, ee_offset, ee_site, package_paths
    Param('robot', 'arm7', 'built-in robot name (arm7, arm3) or MJCF or URDF path: joint order and limits',
          dynamic=False),
    *follower_params(),
    Param('control_rate_hz', 50.0, 'commands sent per second (one per period, whatever arrives)',
          range=(1.0, 1000.0)),
    Param('forward_on_arrival', True,
          'run the period as soon as a fresh command of the source in charge arrives (one period '
          'later at the latest), instead of at the loop\'s own phase, which delayed it by 0-1 period'),
    Param('mode_publish_period_s', 1.0, '/mbrl/safety/mode is re-sent this often (and on every change)',
          range=(0.01, 60.0)),
    *params_from_settings(SafetySettings),
    hang_timeout_param(),
    control_priority_param(),
]
_SETTINGS = set(SafetySettings.__dataclass_fields__)


class SafetyFilterNode(ControllerNode, Node):
    def __init__(self):
        super().__init__('safety_filter')
        self.params = ParameterHandler(self, SPECS, on_validate=self._validate, on_applied=self._applied)
        self._load_robot()
        settings, why = self._settings(self.params.values)
        if why:
            raise StartupError(why)
        self.filter = SafetyFilter.for_robot(self.robot, settings)
        self._follow_models()
        self.bundle = None
        self._settings_pending: Optional[SafetySettings] = None
        self._state = None                               # JointSample, latest
        self._cmds: dict = {k: None for k in SOURCES}    # source -> (JointSample, receive time)
        self._mode = None
        self._mode_sent_t = -1e18
        self.counts = {'periods': 0, 'late_resyncs': 0, 'forwarded_on_arrival': 0, 'states': 0,
                       **{f'{k}_commands': 0 for k in SOURCES},
                       'clamped': 0, 'rate_limited': 0, 'bad_states': 0,
                       **{f'bad_{k}_commands': 0 for k in SOURCES}, **{f'refused_{k}': 0 for k in SOURCES},
                       'refused_models': 0, 'model_errors': 0, 'internal_errors': 0, 'limits_published': 0}
        self._last = {'refusal': 'none', 'bad_input': 'none', 'error': 'none', 'state': 'none'}

        self._pub = self.create_publisher(Float64MultiArray, COMMAND_TOPIC, CONTROL)
        # What it enforces, for mpc_controller and policy to plan within (latched: late joiners get it).
        self._pub_limits = self.create_publisher(JointState, SAFETY_LIMITS_TOPIC, LATCHED)
        self._publish_limits()
        self._pub_mode = self.create_publisher(String, SAFETY_MODE_TOPIC, LATCHED)
        self.create_subscription(JointState, STATE_TOPIC, self._on_state, CONTROL)
        for name, topic in SOURCES.items():
            # A short queue, not depth 1: every command is looked at (a malformed one is counted,
            # not silently overwritten); the newest still wins, and its age is judged by its stamp.
            self.create_subscription(JointState, topic, lambda m, n=name: self._on_command(n, m), SENSOR)
        self.create_subscription(String, ACTIVE_MODEL_TOPIC, self._on_active_model, LATCHED)
        self.loop = self._make_loop(self._tick, 'safety_filter')
        self._start_loop()
        self.diagnostics = Diagnostics(self, self._status, period_s=1.0)
        # A hang exit sends nothing (no close(), no last command): the robot's command timeout acts,
        # as for a SIGKILL, and the respawned filter starts in hold (docs/safety_filter.md).
        self.hang_watchdog = start_hang_watchdog(self, self.params['hang_timeout_s'])
        self.get_logger().info(f"gating {self.robot.name} at {self.params['control_rate_hz']:g} Hz; "
                               'waiting for /mbrl/world_model/active_model (hold until a model is loaded'
                               + (')' if not settings.allow_missing_uncertainty else ', or accept without)')
                               + f'; model roots: {", ".join(self.roots)}')

    # ---- parameters -------------------------------------------------------------------
    @staticmethod
    def _settings(values: dict) -> tuple[Optional[SafetySettings], Optional[str]]:
        s = SafetySettings(**{k: v for k, v in values.items() if k in _SETTINGS})
        errs = s.errors()
        return (None, 'invalid safety settings: ' + '; '.join(errs)) if errs else (s, None)

    def _validate(self, changes: dict) -> Optional[str]:
        return self._settings({**self.params.values, **changes})[1]

    def _applied(self, changes: dict) -> None:
        if _SETTINGS & set(changes):
            self._settings_pending = self._settings(self.params.values)[0]
        self._follow_rate(changes)

    # ---- inputs -----------------------------------------------------------------------
    def _on_state(self, msg: JointState) -> None:
        sample = self._read_state(msg)
        if sample is not None:
            self._state = sample
            self.counts['states'] += 1

    def _on_command(self, source: str, msg: JointState) -> None:
        try:
            sample, why = self.reader.command(msg)
        except Exception as exc:
            sample, why = None, f'unreadable: {exc!r}'
        if sample is None:
            self.counts[f'bad_{source}_commands'] += 1
            self._refuse_input(f'{source} command: {why}')
            return
        self._cmds[source] = (sample, self._now())
        self.counts[f'{source}_commands'] += 1
        # Forward at once: the MPC always (it comes first), the policy when the MPC is not in charge.
        if self.params['forward_on_arrival'] and (source == 'mpc' or self._mode != 'mpc'):
            self.loop.wake()

    def _model_loaded(self, bundle) -> None:
        self.bundle = bundle  # one reference: the next period uses it
        self.get_logger().info(f'checking commands against {bundle.identity}')

    # ---- one control period -----------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _tick(self) -> None:
        if not self.context.ok():
            return  # shutting down: close() sends the last (zero) command if it still can
        cmd = None
        try:
            if self._settings_pending is not None:
                settings, self._settings_pending = self._settings_pending, None
                old = self.filter.command_limits
                self.filter.configure(settings)
                if not self.filter.command_limits.same_as(old):
                    self._publish_limits()
            now = self._now()
            state = self._state
            samples = {k: self._sample(k, now) for k in SOURCES}
            self._add_disagreement(state, samples)
            st = None if state is None else StateSample(state.q, state.qd, state.stamp)
            out = self.filter.step(now, st, samples['mpc'], samples['policy'])
            cmd = out.command
            self._account(out, samples)
            self._publish_mode(out.mode, now)
        except Exception as exc:  # the filter itself failed: still send one safe command
            self.counts['internal_errors'] += 1
            self._last['error'] = repr(exc)
            self.get_logger().error(f'safety step failed: {exc!r}; sending zero effort', throttle_duration_sec=2.0)
            cmd = np.zeros(self.robot.dof)
            self.filter.last_command = cmd
        self.counts['periods'] += 1
        try:
            self._pub.publish(Float64MultiArray(data=[float(u) for u in cmd]))
        except Exception as exc:
            if self.context.ok():  # (else rclpy was shut down by a signal meanwhile)
                self.counts['internal_errors'] += 1
                self._last['error'] = f'publish failed: {exc!r}'

    def _publish_limits(self) -> None:
        try:
            self._pub_limits.publish(limits_to_msg(self.filter.command_limits, self.robot.joint_names,
                                                   self.get_clock().now().to_msg()))
            self.counts['limits_published'] += 1
        except Exception as exc:  # never the period's end: the planners keep the previous limits
            if self.context.ok():
                self.counts['internal_errors'] += 1
                self._last['error'] = f'limits publish failed: {exc!r}'

    def _sample(self, source: str, now: float) -> Optional[CommandSample]:
        got = self._cmds[source]
        if got is None:
            return None
        sample, received = got
        # Older of stamp and receive time, unless the stamp is in the future (refused as such).
        future = sample.stamp - now > self.filter.settings.future_tolerance_s
        stamp = sample.stamp if future else min(sample.stamp, received)
        return CommandSample(sample.effort, stamp)

    def _add_disagreement(self, state, samples: dict) -> None:
        bundle = self.bundle
        todo = [k for k, s in samples.items() if s is not None]
        if bundle is None or state is None or not todo:
            return
        x = np.concatenate([state.q, state.qd])
        actions = np.stack([samples[k].values for k in todo])
        try:
            dis = bundle.world_model.disagreement(np.repeat(x[None], len(todo), axis=0), actions)
        except Exception as exc:  # leave them without disagreement: refused as unconfident
            self.counts['model_errors'] += 1
            self._last['error'] = f'disagreement: {exc!r}'
            self.get_logger().error(f'ensemble failed on the current state: {exc!r}', throttle_duration_sec=2.0)
            return
        for k, d in zip(todo, np.asarray(dis, dtype=np.float64).reshape(-1)):
            samples[k].disagreement = float(d)

    def _account(self, out, samples: dict) -> None:
        self.counts['clamped'] += int(out.clamped)
        self.counts['rate_limited'] += int(out.rate_limited)
        for k in SOURCES:
            if samples[k] is not None and k in out.reasons:
                self.counts[f'refused_{k}'] += 1
                self._last['refusal'] = f'{k}: {out.reasons[k]}'
        self._last['state'] = out.reasons.get('state', 'ok')

    def _publish_mode(self, mode: str, now: float) -> None:
        if mode != self._mode:
            why = '; '.join(f'{k}: {v}' for k, v in self.filter.last_output.reasons.items()) or 'fresh'
            # (rclpy refuses two severities from one call site: two calls.)
            if mode == 'mpc':
                self.get_logger().info(f'mode {self._mode} -> {mode}')
            else:
                self.get_logger().warning(f'mode {self._mode} -> {mode} ({why})')
        if mode != self._mode or now - self._mode_sent_t >= self.params['mode_publish_period_s'] \
                or now < self._mode_sent_t:
            self._pub_mode.publish(String(data=mode))
            self._mode, self._mode_sent_t = mode, now

    # ---- health -----------------------------------------------------------------------
    def _status(self):
        self.counts['late_resyncs'] = self.loop.resyncs
        self.counts['forwarded_on_arrival'] = self.loop.woken
        values = {'mode': self._mode or 'none', 'robot': self.robot.name, 'model': self.follower.identity,
                  'control_thread': self.loop.scheduling,
                  **{f'periods_{m}': self.filter.mode_counts[m] for m in MODES}, **self.counts,
                  'last_refusal': self._last['refusal'], 'last_bad_input': self._last['bad_input'],
                  'last_refused_model': self.follower.last_refusal,
                  'superseded_models': self.follower.superseded,
                  'model_roots': ', '.join(self.roots), 'state': self._last['state'],
                  'last_error': self._last['error']}
        if self.counts['internal_errors']:
            return ERROR, f"safety step failed: {self._last['error']}", values
        if self._mode == 'hold':
            return WARN, f"hold ({self._last['state'] if self._last['state'] != 'ok' else self._last['refusal']})", \
                values
        return OK, f'mode {self._mode}', values

    def close(self) -> None:
        if self.hang_watchdog is not None:  # shutting down: a slow exit is not a hang
            self.hang_watchdog.close()
        self.loop.stop()
        self.follower.close()
        # The last word to the actuators is zero effort (gravity compensation holds the arm).
        try:
            self._pub.publish(Float64MultiArray(data=[0.0] * self.robot.dof))
        except Exception:  # context already shut down: the robot's own watchdog takes over
            pass


def main():
    main_for(SafetyFilterNode, threads=1)


if __name__ == '__main__':
    main()
