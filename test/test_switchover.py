"""Switchover between the MPC, the distilled policy and hold, over real processes (launch runner,
sim stack on arm7 (MBRL_ROS_SWITCHOVER_ROBOT=arm3 for the small arm), a bundle holding both ensemble.onnx and policy.onnx):

1. SIGKILL mpc_controller mid-reach -> the safety filter is in `policy` within 2 control periods of
   the last MPC command going stale (counted in the filter's own output periods, so a loaded machine
   does not fake a failure), efforts stay within the limits, and — when the bundle's policy meets
   its target (bundle.yaml policy.metrics.success_rate >= 0.9) — the reach still succeeds;
   then SIGKILL the policy too -> `hold` within the command timeout (+ slack), within limits;
   then the launch runner respawns the MPC (`respawn_delay`) -> back to `mpc`.
2. The MPC overruns its period (a huge num_samples with no time budget, set live through the
   parameter service) -> the policy covers the missed periods: the filter alternates mpc/policy
   and hardly ever holds.

The bundle: MBRL_ROS_SWITCHOVER_BUNDLE if set (a bundle of MBRL_ROS_SWITCHOVER_ROBOT, default arm7),
else the shipped models/<robot> if it has a policy (models/arm7 does), else an untrained ensemble + a gentle untrained policy (the
wiring and timing are checked; reaching is not). With untrained models the filter's model-based
refusals mean nothing (an untrained ensemble's disagreement) and an untrained MPC steers the arm
into its joint limits (where the filter rightly refuses outward pushes), so for them the test
raises uncertainty_threshold and sends at most 10 % of the effort limits, live: what is under
test is the source switching, its timing and the effort limits.
"""
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from mbrl_ros.core.robot import RobotModel
from mbrl_ros.ros.conversions import LATCHED, sec_to_stamp
from mbrl_ros.testing.filter_log import mode_switches
from mbrl_ros.ros.diagnostics import status_values

pytestmark = [pytest.mark.ros, pytest.mark.system]

# The robot: arm7 with the shipped bundle (its policy meets the 90 % target, so the reach after the
# MPC's death is asserted), or arm3 (MBRL_ROS_SWITCHOVER_ROBOT=arm3: lighter, no shipped policy).
ROBOT = os.environ.get('MBRL_ROS_SWITCHOVER_ROBOT', 'arm7')
EFFORT_MAX = RobotModel.load(ROBOT).effort_max
PERIOD = 0.02                               # safety_filter control_rate_hz 50
TIMEOUT = 0.1                               # safety_filter command_timeout_s (config default)
GOAL = {'arm3': (0.3, 0.1, 0.35), 'arm7': (0.45, 0.2, 0.45)}[ROBOT]
WAIT = ['/joint_states', '/mbrl/state', '/mbrl/mpc/command', '/mbrl/policy/command',
        '/forward_effort_controller/commands', '/mbrl/safety/mode', '/mbrl/world_model/active_model']


def _good_policy(bundle: Path) -> bool:
    meta = yaml.safe_load((bundle / 'bundle.yaml').read_text())
    return float(((meta.get('policy') or {}).get('metrics') or {}).get('success_rate', 0.0)) >= 0.9


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    env = os.environ.get('MBRL_ROS_SWITCHOVER_BUNDLE')
    if env:
        return Path(env).resolve()
    try:
        from mbrl_ros.resources import default_model_dir
        shipped = default_model_dir(ROBOT)
        if (shipped / 'policy.onnx').is_file():
            return shipped
    except FileNotFoundError:
        pass
    from test_policy_node import write_policy_bundle
    # A zero-output policy (a real policy.onnx graph whose last layer is zero): an untrained policy
    # would push the arm into a limit and be rightly refused, which is not what this test is about.
    return write_policy_bundle(tmp_path_factory.mktemp('switchover') / ROBOT, RobotModel.load(ROBOT),
                               out_scale=0.0)


class Recorder:
    """Goal re-sent twice a second; every mode, actuator command and MPC/policy command with its
    receive time (monotonic)."""

    def __init__(self, probe, goal=GOAL):
        self.probe = probe
        self.lock = threading.Lock()
        self.modes, self.outs, self.mpc, self.pol, self.ee = [], [], [], [], []
        for topic, typ, qos, dest in (('/mbrl/safety/mode', String, LATCHED, self.modes),
                                      ('/forward_effort_controller/commands', Float64MultiArray, 1000, self.outs),
                                      ('/mbrl/mpc/command', JointState, 1000, self.mpc),
                                      ('/mbrl/policy/command', JointState, 1000, self.pol),
                                      ('/mbrl/sim/ee_position', PointStamped, 100, self.ee)):
            probe.node.create_subscription(typ, topic, lambda m, d=dest: self._rx(d, m), qos)
        self.pub = probe.publisher('/mbrl/goal', PointStamped, 10)
        self.goal = goal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _rx(self, dest, msg):
        with self.lock:
            dest.append((time.monotonic(), msg))

    def _send(self):
        while not self._stop.is_set():
            g = PointStamped()
            g.header.frame_id = 'world'
            g.header.stamp = sec_to_stamp(time.time())
            g.point.x, g.point.y, g.point.z = self.goal
            self.pub.publish(g)
            self._stop.wait(0.5)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)

    def snapshot(self, name):
        with self.lock:
            return list(getattr(self, name))

    def mode(self):
        m = self.snapshot('modes')
        return m[-1][1].data if m else None

    def wait_mode(self, mode, timeout):
        return self.probe.wait_until(lambda: self.mode() == mode, timeout)

    def wait_policy(self, timeout):
        """The fallback is up (its model loaded, commands flowing): only then can it cover."""
        return self.probe.wait_until(lambda: len(self.snapshot('pol')) >= 5, timeout)

    def outs_since(self, t0):
        return [np.array(m.data) for t, m in self.snapshot('outs') if t >= t0]

    def distance(self):
        ee = self.snapshot('ee')
        if not ee:
            return float('nan')
        p = ee[-1][1].point
        return float(np.linalg.norm(np.array([p.x, p.y, p.z]) - np.array(self.goal)))


def _within_limits(outs):
    assert outs, 'no actuator commands'
    for o in outs:
        assert o.shape == EFFORT_MAX.shape and np.all(np.isfinite(o)) and np.all(np.abs(o) <= EFFORT_MAX + 1e-6), o


def _trained(bundle: Path) -> bool:
    meta = yaml.safe_load((bundle / 'bundle.yaml').read_text())
    return (meta.get('policy') or {}).get('note') != 'untrained (test)'


def _relax_for_untrained(probe, bundle):
    if _trained(bundle):
        return
    for name, value in (('uncertainty_threshold', 1e6), ('effort_limit_scale', 0.1)):
        ok, why = probe.set_param('/safety_filter', name, value)
        assert ok, (name, why)


def _switches(system, after: float):
    return mode_switches(system.output_text(), after)


def _stale_age_ms(why: str, source: str) -> float:
    m = re.search(source + r': command is stale \((\d+) ms old', why)
    assert m, f'{source} was not refused as stale: {why}'
    return float(m.group(1))


def _node_status(probe, diag, node: str) -> dict:
    """`node`'s key/values from a /diagnostics message newer than now."""
    n = len(diag)

    def find():
        for _, d in diag[n:]:
            for st in d.status:
                if st.name.endswith(node):   # + the node's own stamp of the status
                    return status_values(st) | {
                        '_stamp': d.header.stamp.sec + 1e-9 * d.header.stamp.nanosec}
        return None
    got = probe.wait_until(find, 5.0)
    assert got is not None, f'no {node} diagnostics'
    return got


def _filter_heard_policy(diag) -> bool:
    """A safety_filter status received so far counts policy commands."""
    return any(st.name.endswith('safety_filter') and
               any(kv.key == 'policy_commands' and int(kv.value) > 0 for kv in st.values)
               for _, d in list(diag) for st in d.status)


def _periods(probe, diag):
    """The filter's cumulative periods per mode, and the stamp of the status they were read from."""
    v = _node_status(probe, diag, 'safety_filter')
    return {m: int(v[f'periods_{m}']) for m in ('mpc', 'policy', 'hold')}, v['_stamp']


def test_mpc_killed_policy_takes_over_then_hold_then_mpc_again(launch_system, bundle):
    # respawn_delay 8 s: long enough to see the policy drive, then hold, before the MPC is back.
    args = {'robot': ROBOT, 'model_dir': str(bundle), 'respawn_delay': 8.0}
    with launch_system('sim_arm.launch.yaml', args=args, wait_topics=WAIT, timeout=90) as system:
        _relax_for_untrained(system.probe, bundle)
        rec = Recorder(system.probe)
        try:
            diag = system.probe.subscribe('/diagnostics', DiagnosticArray, 100)
            assert rec.wait_mode('mpc', 40.0), 'never reached mode mpc:\n' + system.output_text()[-4000:]
            time.sleep(0.4)                                   # mid-reach
            # The premise: the filter is receiving the policy's commands (on a loaded machine its
            # subscription once matched the policy's publisher only after the kill: 'policy: no command
            # received', and the filter held). Usually already in a status received; else wait for it.
            assert system.probe.wait_until(lambda: _filter_heard_policy(diag), 10.0), \
                'the filter receives no policy commands:\n' + system.output_text()[-3000:]
            print(f'[switchover] EE {100 * rec.distance():.1f} cm from the goal at the kill')
            wall_kill = time.time()
            system.kill('mpc_controller', signal.SIGKILL)
            t_kill = time.monotonic()
            assert rec.probe.wait_until(lambda: any(new == 'policy' for _, _, new, _ in _switches(system, wall_kill)),
                                        5.0), 'no switch to policy:\n' + system.output_text()[-3000:]
            t, old, new, why = _switches(system, wall_kill)[0]
            assert (old, new) == ('mpc', 'policy'), (old, new, why)   # straight to the policy, no hold between
            age = _stale_age_ms(why, 'mpc')
            print(f'[switchover] MPC killed -> policy after {1e3 * (t - wall_kill):.0f} ms; the MPC command was '
                  f'{age:.0f} ms old at the switch (timeout {1e3 * TIMEOUT:.0f} ms: '
                  f'{(age - 1e3 * TIMEOUT) / (1e3 * PERIOD):.1f} periods late)')
            assert age - 1e3 * TIMEOUT <= 2 * 1e3 * PERIOD, why
            # The policy drives for 3 s (hold only as blips, e.g. a late state on a loaded machine).
            p0, _ = _periods(system.probe, diag)
            time.sleep(3.0)
            p1, _ = _periods(system.probe, diag)
            d = {m: p1[m] - p0[m] for m in p0}
            print(f'[switchover] filter periods during 3 s of policy: {d}')
            assert d['mpc'] == 0 and d['policy'] >= 0.8 * sum(d.values()), d
            _within_limits(rec.outs_since(t_kill))
            dist = rec.distance()
            print(f'[switchover] EE distance to the goal ~3.5 s after the kill: {100 * dist:.1f} cm '
                  f'(policy meets its target: {_good_policy(bundle)})')
            if _good_policy(bundle):
                assert rec.probe.wait_until(lambda: rec.distance() < 0.02, 3.0), rec.distance()

            # Kill the policy too: hold within the command timeout (+ 2 periods).
            wall_kill2 = time.time()
            system.kill('policy', signal.SIGKILL)
            t_kill2 = time.monotonic()
            assert rec.probe.wait_until(lambda: any(new == 'hold' for _, _, new, _ in _switches(system, wall_kill2)),
                                        3.0), system.output_text()[-3000:]
            t, old, new, why = [s for s in _switches(system, wall_kill2) if s[2] == 'hold'][0]
            age = _stale_age_ms(why, 'policy')
            print(f'[switchover] policy killed -> hold after {1e3 * (t - wall_kill2):.0f} ms; the policy command was '
                  f'{age:.0f} ms old at the switch')
            assert age - 1e3 * TIMEOUT <= 2 * 1e3 * PERIOD, why
            time.sleep(0.5)
            _within_limits(rec.outs_since(t_kill2))

            # The runner respawns the MPC after respawn_delay: back to mpc.
            assert rec.probe.wait_until(lambda: any(new == 'mpc' for _, _, new, _ in _switches(system, wall_kill2)),
                                        60.0), 'no return to mpc:\n' + system.output_text()[-3000:]
            t_back = time.monotonic()
            print(f'[switchover] back to mpc {t_back - t_kill:.1f} s after the kill (respawn_delay 8 s)')
            time.sleep(0.5)
            _within_limits(rec.outs_since(t_back))
        finally:
            rec.close()


def test_mpc_overrunning_its_period_is_covered_by_the_policy(launch_system, bundle):
    args = {'robot': ROBOT, 'model_dir': str(bundle)}
    with launch_system('sim_arm.launch.yaml', args=args, wait_topics=WAIT, timeout=90) as system:
        _relax_for_untrained(system.probe, bundle)
        rec = Recorder(system.probe)
        try:
            probe = system.probe
            assert rec.wait_mode('mpc', 40.0), system.output_text()[-4000:]
            # On a slow machine the policy may still be loading its model when the MPC is up.
            assert rec.wait_policy(40.0), 'the policy never sent a command:\n' + system.output_text()[-4000:]
            # No budget and a huge population: every plan takes many periods (far over the timeout).
            for name, value in (('time_budget_ms', 0.0), ('num_samples', 10000), ('num_iterations', 3)):
                ok, why = probe.set_param('/mpc_controller', name, value)
                assert ok, (name, why)
            diag = probe.subscribe('/diagnostics', DiagnosticArray, 100)
            time.sleep(0.5)                      # the plan in flight when the change arrived ends
            t0 = time.monotonic()
            (p0, f0), arm0 = _periods(probe, diag), _node_status(probe, diag, 'sim_robot')
            time.sleep(4.0)
            (p1, f1), arm1 = _periods(probe, diag), _node_status(probe, diag, 'sim_robot')
            d = {m: p1[m] - p0[m] for m in p0}
            outs = rec.outs_since(t0)
            mpc_cmds = [t for t, _ in rec.snapshot('mpc') if t >= t0]
            # The actuator's own count (this test process, on the normal scheduler under a runaway
            # real-time plan, may miss samples of a depth-1 topic: it measures itself, not the stack).
            received = int(arm1['commands_received']) - int(arm0['commands_received'])
            arm_s = arm1['_stamp'] - arm0['_stamp']
            print(f'[overrun] {len(mpc_cmds)} MPC commands in 4 s, {len(outs)} actuator commands seen here, '
                  f'{received} received by the arm in {arm_s:.2f} s, filter periods {d} in '
                  f'{f1 - f0:.2f} s')
            assert len(mpc_cmds) < 4.0 / PERIOD / 3, 'the MPC did not overrun: test premise broken'
            # Real-time (root here): the runaway plan dropped below the nodes that cover for it.
            mpc = _node_status(probe, diag, 'mpc_controller')
            print(f"[overrun] mpc_controller: {mpc['control_thread']}, {mpc['loop_demotions']} demoted cycles")
            if mpc['control_thread'].startswith('SCHED_FIFO'):
                assert int(mpc['loop_demotions']) > 0, mpc
            assert d['policy'] > 0 and d['hold'] <= 0.1 * sum(d.values()), d   # the policy covered
            assert received > 0.6 * arm_s / PERIOD      # one command per period goes on
            _within_limits(outs)
        finally:
            rec.close()
