"""world_model: serves the learned ensemble's one-step predictions and owns the model bundle.

/mbrl/state + /forward_effort_controller/commands -> /mbrl/world_model/prediction (state +
ensemble-mean delta, stamped state stamp + dt), /uncertainty (ensemble disagreement), and the
latched /active_model ("<path> <sha256>"). Setting `model_dir` validates the new bundle inside
the set-parameters callback (every check of mbrl_ros.core.bundle); a bundle that fails
is refused with the failed check named and the old model keeps serving; a good one is swapped
in atomically after the change is accepted. The node is single-threaded (see main()), so
predictions pause while a new bundle is being validated. A bundle swapped in live survives a
respawn by the launcher (mbrl_ros.ros.respawn_memory): the new process validates it again and serves
it, instead of going back to the configured `model_dir` and taking every follower with it.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from mbrl_ros.core.bundle import BundleError, load_bundle
from mbrl_ros.core.commands import check_command
from mbrl_ros.core.world_model import PredictionErrorTracker
from mbrl_ros.ros.conversions import CONTROL, LATCHED, SENSOR, sec_to_stamp, stamp_to_sec
from mbrl_ros.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.ros.hang_watchdog import hang_timeout_param, start_hang_watchdog
from mbrl_ros.ros.model_source import (configured_roots, default_model_roots, model_roots_param,
                                        resolve_model_dir)
from mbrl_ros.ros.node_main import StartupError, main_for
from mbrl_ros.ros.parameters import Param, ParameterHandler
from mbrl_ros.ros.robot_param import load_robot, robot_params, robot_source
from mbrl_ros.ros.respawn_memory import RespawnMemory
from mbrl_ros.topics import (
    ACTIVE_MODEL_TOPIC, COMMAND_TOPIC, PREDICTION_TOPIC, STATE_TOPIC, UNCERTAINTY_TOPIC
)

# The roots' default and spec are shared with the followers (mbrl_ros.ros.model_source);
# `_default_roots` stays importable under its old name.
_default_roots = default_model_roots


SPECS = [
    *robot_params(),  # robot_description, base_link, tip_link, ee_offset, ee_site, package_paths
    Param('robot', 'arm7', 'built-in robot name (arm7, arm3) or MJCF or URDF path; bundles are checked against it',
          dynamic=False),
    Param('model_dir', '', "model bundle directory (or a name under the package models/); '' = the "
          'shipped bundle for the robot. Changing it validates the new bundle and swaps it in, or refuses it'),
    Param('prediction_rate_hz', 50.0, 'most predictions per second (one per /mbrl/state message at most); '
          '0 = one per state message', range=(0.0, 2000.0)),
    Param('command_timeout_s', 0.1, 'an older command is no longer in force: predict with zero effort '
          '(gravity compensation only)', range=(0.001, 10.0)),
    model_roots_param(),
    Param('error_window', 200, 'number of settled predictions in the running RMSE', range=(1, 100000),
          dynamic=False),
    hang_timeout_param(),
    Param('respawn_memory_key', '', "unique per launch (the launch files pass $(anon launch)): respawned "
          'within the same launch, the node serves the bundle last swapped in live (validated again) instead of '
          "model_dir; '' = always start from model_dir", dynamic=False),
]


class WorldModelNode(Node):
    def __init__(self):
        super().__init__('world_model')
        self.params = ParameterHandler(self, SPECS, on_validate=self._validate, on_applied=self._applied)
        try:
            self.robot = load_robot(self.params)
        except Exception as exc:
            raise StartupError(f"cannot load robot {robot_source(self.params)}: {exc}") from exc
        self.roots = self._roots()
        self.names = list(self.robot.joint_names)
        self.dof = self.robot.dof
        self.memory = None
        if self.params['respawn_memory_key']:
            self.memory = RespawnMemory(self.get_fully_qualified_name(), self.params['respawn_memory_key'])
            self.memory.prune()
        self._syncing = False           # True while model_dir is set to a resumed bundle's value
        resumed = self._resume()
        self.bundle = resumed[1] if resumed else self._load_at_start()
        self._pending = None            # validated in on_validate, swapped in on_applied
        self._lock = threading.Lock()   # guards the tracker against the diagnostics timer
        self.tracker = PredictionErrorTracker(self.dof, window=self.params['error_window'],
                                              max_gap_s=max(0.1, 2 * self.bundle.dt))
        self._command = np.zeros(self.dof)
        self._command_t = None
        self._last_pred_t = None
        self._state_t = None
        self._index: dict = {}
        self.counts = {'predictions': 0, 'bad_states': 0, 'bad_commands': 0, 'no_fresh_command': 0,
                       'swaps': 0, 'refused_swaps': 0, 'internal_errors': 0}
        self._infer_s = 0.0
        self._last_refusal = 'none'
        self._last_bad = 'none'

        self._pub_pred = self.create_publisher(JointState, PREDICTION_TOPIC, SENSOR)
        self._pub_unc = self.create_publisher(Float64, UNCERTAINTY_TOPIC, SENSOR)
        self._pub_active = self.create_publisher(String, ACTIVE_MODEL_TOPIC, LATCHED)
        self.create_subscription(JointState, STATE_TOPIC, self._on_state, SENSOR)
        self.create_subscription(Float64MultiArray, COMMAND_TOPIC, self._on_command,
                                 CONTROL)
        self.diagnostics = Diagnostics(self, self._status, period_s=1.0)
        if resumed:  # model_dir then tells what is served (already loaded: no second validation)
            self._syncing = True
            try:
                self.set_parameters([Parameter('model_dir', Parameter.Type.STRING, resumed[0])])
            finally:
                self._syncing = False
        self._publish_active()
        # After the startup bundle is loaded. A model swap validates inside the executor (0.1-1 s):
        # far below any allowed timeout.
        self.hang_watchdog = start_hang_watchdog(self, self.params['hang_timeout_s'])
        self.get_logger().info(f'serving {self.bundle.identity}; model roots: {", ".join(self.roots)}')

    # ---- the bundle ---------------------------------------------------------------------
    def _resolve(self, value: str) -> Path:
        return resolve_model_dir(value, self.robot.name)

    def _roots(self) -> list:
        # model_roots + the startup bundle's folder (see configured_roots), as the followers do.
        return configured_roots(self.params['model_roots'], self.params['model_dir'], self.robot.name)

    def _load(self, value: str):
        return load_bundle(self._resolve(value), self.robot, roots=self.roots)

    def _load_at_start(self):
        path = self._resolve(self.params['model_dir'])
        try:
            return self._load(self.params['model_dir'])
        except BundleError as exc:
            hint = ''
            if exc.check == 'missing_file':
                src = '<your description file>' if self.params['robot_description'] else self.params['robot']
                shipped = 'no shipped bundle' if not self.params['model_dir'] else 'no bundle there'
                hint = (f'; {shipped} for {self.robot.name!r}: train one with `mbrl-ros train '
                        f'--robot {src} --out models/{self.robot.name}` (or `mbrl-ros learn ...`) and set '
                        'model_dir, or launch with world_model:=false to run without a model')
            raise StartupError(f'cannot load the model bundle {path}: {exc}{hint}') from exc

    def _resume(self):
        """(model_dir value, bundle) swapped in live before this process was respawned, or None."""
        value = self.memory.recall('model_dir') if self.memory is not None else None
        if value is None or value == self.params['model_dir']:
            return None
        try:
            bundle = self._load(value)
        except BundleError as exc:
            self.get_logger().warning(f'not resuming {value!r}, the bundle swapped in before this restart: {exc}; '
                                      f"starting from model_dir {self.params['model_dir']!r}")
            return None
        self.get_logger().info(f'respawned: resuming {bundle.identity}, swapped in live before the restart '
                               f"(configured model_dir {self.params['model_dir']!r}; memory {self.memory.path})")
        return value, bundle

    def _validate(self, changes: dict):
        if 'model_dir' not in changes or self._syncing:
            return None
        try:
            bundle = self._load(changes['model_dir'])
        except BundleError as exc:
            self.counts['refused_swaps'] += 1
            self._last_refusal = str(exc)
            self.get_logger().error(f"refused model_dir {changes['model_dir']!r}: {exc}; "
                                    f'still serving {self.bundle.identity}')
            return str(exc)
        except Exception as exc:  # anything unexpected must refuse, not crash the service
            self.counts['refused_swaps'] += 1
            self._last_refusal = f'model bundle rejected: {exc!r}'
            return self._last_refusal
        self._pending = (changes['model_dir'], bundle)
        return None

    def _applied(self, changes: dict) -> None:
        if 'model_dir' not in changes or self._syncing or self._pending is None \
                or self._pending[0] != changes['model_dir']:
            return
        value, bundle = self._pending
        self._pending = None
        old = self.bundle
        self.bundle = bundle  # one reference assignment: a prediction in flight keeps the model it took
        with self._lock:
            self.tracker = PredictionErrorTracker(self.dof, window=self.params['error_window'],
                                                  max_gap_s=max(0.1, 2 * bundle.dt))
        self.counts['swaps'] += 1
        self._publish_active()
        self.get_logger().info(f'swapped model: {old.identity} -> {bundle.identity}')
        if self.memory is not None:
            try:
                self.memory.remember('model_dir', value)
            except OSError as exc:  # the swap stands; only a respawn would not know it
                self.get_logger().warning(f'cannot record the swap for a respawn ({self.memory.path}): {exc}')

    def _publish_active(self) -> None:
        self._pub_active.publish(String(data=self.bundle.identity))

    # ---- inputs -----------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        reason = check_command(msg.data, self.robot, 'effort')
        if reason:
            self.counts['bad_commands'] += 1
            self._last_bad = f'command: {reason}'
            self.get_logger().warn(f'ignoring command: {reason}', throttle_duration_sec=2.0)
            return
        self._command = np.asarray(msg.data, dtype=np.float64)
        self._command_t = time.monotonic()

    def _state_vector(self, msg: JointState):
        key = tuple(msg.name)
        if key not in self._index:
            where = {n: i for i, n in enumerate(key)}
            self._index[key] = (np.array([where[n] for n in self.names])
                                if all(n in where for n in self.names) and len(where) == len(key) else None)
        idx = self._index[key]
        if idx is None:
            return None, f'joint names {list(key)} do not cover {self.names}'
        if len(msg.position) != len(key) or len(msg.velocity) != len(key):
            return None, f'{len(msg.position)} positions / {len(msg.velocity)} velocities for {len(key)} names'
        x = np.concatenate([np.asarray(msg.position, np.float64)[idx], np.asarray(msg.velocity, np.float64)[idx]])
        if not np.all(np.isfinite(x)):
            return None, 'non-finite position or velocity'
        # Far outside what the arm can do (found by fuzzing: 1e308 velocities made the ensemble
        # output NaN, counted as internal errors): no prediction, a bad state.
        q, qd = x[:self.dof], x[self.dof:]
        if np.any(q < self.robot.q_min - 1.0) or np.any(q > self.robot.q_max + 1.0) or \
                np.any(np.abs(qd) > 10.0 * self.robot.qd_max):
            return None, 'implausible state: q more than 1 rad past the joint limits or |qd| > 10 qd_max'
        t = stamp_to_sec(msg.header.stamp)
        # The prediction is stamped t + dt: that must fit a ROS Time (int32 seconds; found by fuzzing).
        if not (np.isfinite(t) and 0 < t and t + self.bundle.dt < 2**31 - 1):
            return None, f'bad stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}'
        return (t, x), None

    def _on_state(self, msg: JointState) -> None:
        try:
            got, reason = self._state_vector(msg)
            if got is None:
                self.counts['bad_states'] += 1
                self._last_bad = f'state: {reason}'
                self.get_logger().warn(f'ignoring /mbrl/state: {reason}', throttle_duration_sec=2.0)
                return
            t, x = got
            self._state_t = time.monotonic()
            with self._lock:
                self.tracker.observe(t, x)
            rate = self.params['prediction_rate_hz']
            if rate > 0 and self._last_pred_t is not None and t - self._last_pred_t < 1.0 / rate - 1e-6 \
                    and t >= self._last_pred_t:
                return
            self._last_pred_t = t
            self._predict(msg, t, x)
        except Exception as exc:  # never let one message take the node down
            if not self.context.ok():
                return  # SIGINT/SIGTERM closed the context mid-callback: shutting down, not an error
            self.counts['internal_errors'] += 1
            self._last_bad = f'internal error: {exc!r}'
            self.get_logger().error(f'/mbrl/state callback failed: {exc!r}', throttle_duration_sec=2.0)

    def _predict(self, msg: JointState, t: float, x: np.ndarray) -> None:
        bundle = self.bundle
        fresh = self._command_t is not None and \
            time.monotonic() - self._command_t <= self.params['command_timeout_s']
        if not fresh:
            self.counts['no_fresh_command'] += 1
        action = self._command if fresh else np.zeros(self.dof)
        t0 = time.perf_counter()
        pred = bundle.world_model.predict_next(x, action)
        self._infer_s += time.perf_counter() - t0
        if not (np.all(np.isfinite(pred.next_state)) and np.isfinite(pred.uncertainty)):
            self.counts['internal_errors'] += 1
            self._last_bad = 'model produced non-finite output for the current state'
            self.get_logger().error(self._last_bad, throttle_duration_sec=2.0)
            return
        target = t + bundle.dt
        with self._lock:
            self.tracker.add_prediction(target, pred.next_state)
        out = JointState()
        out.header.stamp = sec_to_stamp(target)
        out.header.frame_id = msg.header.frame_id
        out.name = self.names
        out.position = pred.next_state[:self.dof].tolist()
        out.velocity = pred.next_state[self.dof:].tolist()
        self._pub_pred.publish(out)
        self._pub_unc.publish(Float64(data=pred.uncertainty))
        self.counts['predictions'] += 1

    # ---- health -----------------------------------------------------------------------
    def _status(self):
        with self._lock:
            rmse_q, rmse_qd = self.tracker.rmse()
            settled, missed = self.tracker.settled, self.tracker.missed
        n = self.counts['predictions']
        values = {'active_model': self.bundle.identity, 'robot': self.robot.name, 'model_roots': ', '.join(self.roots),
                  'rmse_q': 'n/a' if rmse_q is None else rmse_q,
                  'rmse_qd': 'n/a' if rmse_qd is None else rmse_qd,
                  'settled_predictions': settled, 'unsettled_predictions': missed,
                  'inference_mean_ms': 1e3 * self._infer_s / n if n else 0.0,
                  'last_refused_swap': self._last_refusal, 'last_bad_input': self._last_bad, **self.counts}
        age = None if self._state_t is None else time.monotonic() - self._state_t
        values['state_age_s'] = 'never' if age is None else age
        if self.counts['internal_errors']:
            return ERROR, f'errors while predicting: {self._last_bad}', values
        if age is None:
            return WARN, 'waiting for /mbrl/state', values
        if age > 1.0:
            return WARN, f'no /mbrl/state for {age:.1f} s', values
        return OK, 'ok' if rmse_q is None else f'ok (one-step RMSE q {rmse_q:.3g} rad, qd {rmse_qd:.3g} rad/s)', \
            values

    def close(self) -> None:
        if self.hang_watchdog is not None:  # shutting down: a slow exit is not a hang
            self.hang_watchdog.close()


def main():
    # Single-threaded: rclpy's MultiThreadedExecutor starved the /mbrl/state callback here (27
    # predictions in 8 s from 100 Hz states, vs 378 single-threaded). A model swap validates inside
    # the set-parameters call, so predictions pause for that (0.1-1 s); the safety filter and the
    # controllers, in their own processes, do not.
    main_for(WorldModelNode)


if __name__ == '__main__':
    main()
