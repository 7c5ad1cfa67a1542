"""safety_filter node over real DDS: source selection, limits, rate limit, mode topic, bad input.

One node process serves the module. A feeder thread plays the rest of the stack: /mbrl/state
at 100 Hz and, when enabled, MPC and policy commands at 50 Hz, stamped with the state they
would have been planned from. The first test runs before any model is announced (hold);
the `model` fixture then announces an untrained arm3 bundle on the latched active_model.
"""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from _model_helpers import write_bundle
from mbrl_ros.core.bundle import load_bundle
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.ros.conversions import LATCHED, sec_to_stamp
from mbrl_ros.testing.node_process import Feeder, NodeProcess, wait_for_status
from mbrl_ros.ros.diagnostics import status_values

pytestmark = pytest.mark.ros

NODE = '/safety_filter'
ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']
EFFORT_MAX = np.array([20.0, 20.0, 10.0])
MAX_STEP = 0.25 * EFFORT_MAX          # max_effort_step default 0.25
Q = [0.2, 0.5, 0.4]                   # well inside the limits
QD = [0.1, -0.2, 0.3]
MPC_CMD = np.array([2.0, -3.0, 1.0])
POLICY_CMD = np.array([-1.0, 1.5, -0.5])


class StackPlayer:
    def __init__(self, probe):
        self.probe = probe
        self.node = None
        self.state_pub = probe.publisher('/mbrl/state', JointState, 10)
        self.mpc_pub = probe.publisher('/mbrl/mpc/command', JointState, 10)
        self.policy_pub = probe.publisher('/mbrl/policy/command', JointState, 10)
        self.out = probe.subscribe('/forward_effort_controller/commands', Float64MultiArray, 1000)
        self.mode = probe.subscribe('/mbrl/safety/mode', String, LATCHED)
        self.diag = probe.subscribe('/diagnostics', DiagnosticArray, 50)
        self.send = {'state': True, 'mpc': True, 'policy': True}
        self.cmd = {'mpc': MPC_CMD.copy(), 'policy': POLICY_CMD.copy()}
        self.stamp_age = {'mpc': 0.0, 'policy': 0.0}
        self._feeder = Feeder(self._tick, 0.01)

    def _tick(self, k):
        now = time.time()
        if self.send['state']:
            m = JointState(name=ARM3, position=Q, velocity=QD)
            m.header.stamp = sec_to_stamp(now)
            self.state_pub.publish(m)
        if k % 2 == 0:
            for src, pub in (('mpc', self.mpc_pub), ('policy', self.policy_pub)):
                if self.send[src]:
                    c = JointState(name=ARM3, effort=[float(v) for v in self.cmd[src]])
                    c.header.stamp = sec_to_stamp(now - self.stamp_age[src])
                    pub.publish(c)

    def close(self):
        self._feeder.close()

    def outputs_after(self, settle=0.4, duration=0.6):
        time.sleep(settle)
        n = len(self.out)
        time.sleep(duration)
        return [np.array(m.data) for _, m in self.out[n:]]

    def last_mode(self):
        return self.mode[-1][1].data if self.mode else None

    def wait_mode(self, mode, timeout=5.0):
        return self.probe.wait_until(lambda: self.last_mode() == mode, timeout)

    def diag_values(self, timeout=3.0):
        got = wait_for_status(self.probe, self.diag, 'safety_filter', timeout)
        assert got is not None, 'no diagnostics'
        return status_values(got)


@pytest.fixture(scope='module')
def node(probe, tmp_path_factory):
    # model_roots: the test bundles live under pytest's temp folder (the node refuses bundles elsewhere).
    with NodeProcess('safety_filter', 'robot:=arm3', 'uncertainty_threshold:=1000000.0',
                     f"model_roots:=['{tmp_path_factory.getbasetemp()}']") as proc:
        player = StackPlayer(probe)
        try:
            assert probe.wait_until(lambda: len(player.out) > 5, 40.0), proc.log_text()
            player.node = proc
            yield player
        finally:
            player.close()


@pytest.fixture
def fresh(node):
    """Every test starts with both sources and the state flowing, default commands."""
    node.send.update(state=True, mpc=True, policy=True)
    node.cmd.update(mpc=MPC_CMD.copy(), policy=POLICY_CMD.copy())
    node.stamp_age.update(mpc=0.0, policy=0.0)
    yield node
    node.node.alive()


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    return write_bundle(tmp_path_factory.mktemp('sf_bundle'), RobotModel.load('arm3')).resolve()


@pytest.fixture
def model(fresh, probe, bundle):
    """The world model announces the bundle (latched); the node loads it."""
    if not hasattr(probe, '_sf_active_pub'):
        probe._sf_active_pub = probe.publisher('/mbrl/world_model/active_model', String, LATCHED)
        probe._sf_active_pub.publish(String(data=load_bundle(bundle).identity))
    assert fresh.wait_mode('mpc', timeout=15.0), (fresh.last_mode(), fresh.node.log_text())
    return fresh


HOLD_OUTPUTS = (np.zeros(3), -2.0 * np.array(QD))   # no state; damping (Kd = 2)


def _steps_outside_hold(outs):
    """|change| between consecutive outputs, except changes into hold: hold is entered without
    rate limiting by design (a stalled feeder on a loaded machine makes the state stale)."""
    return np.array([np.abs(b - a) for a, b in zip(outs, outs[1:])
                     if not any(np.allclose(b, h) for h in HOLD_OUTPUTS)]).reshape(-1, 3)


def _within_limits(outs):
    return all(np.all(np.abs(o) <= EFFORT_MAX + 1e-9) and np.all(np.isfinite(o)) and o.shape == (3,)
               for o in outs)


def test_without_a_model_every_command_is_unconfident_so_it_holds(fresh):
    # (Runs first: no active_model has been announced yet.)
    outs = fresh.outputs_after()
    assert outs and _within_limits(outs)
    assert fresh.last_mode() == 'hold'
    # Hold is joint damping -Kd*qd (Kd = 2).
    assert np.allclose(outs[-1], -2.0 * np.array(QD), atol=1e-9)
    vals = fresh.diag_values()
    assert 'no ensemble disagreement' in vals['last_refusal'], vals


def test_mpc_when_fresh_and_output_converges_rate_limited(model):
    outs = model.outputs_after()
    assert model.last_mode() == 'mpc'
    assert np.allclose(outs[-1], MPC_CMD, atol=1e-9)
    assert _within_limits(outs)


def test_one_command_per_period(model):
    n = len(model.out)
    time.sleep(2.0)
    rate = (len(model.out) - n) / 2.0
    assert 35 <= rate <= 60, rate   # 50 Hz timer on a shared machine


def test_policy_when_mpc_stops_hold_when_both_stop(model):
    model.send['mpc'] = False
    assert model.wait_mode('policy'), model.last_mode()
    outs = model.outputs_after()
    assert np.allclose(outs[-1], POLICY_CMD, atol=1e-9)
    model.send['policy'] = False
    assert model.wait_mode('hold'), model.last_mode()
    outs = model.outputs_after()
    assert np.allclose(outs[-1], -2.0 * np.array(QD), atol=1e-9)
    model.send.update(mpc=True, policy=True)
    assert model.wait_mode('mpc')


def test_stale_header_stamp_falls_back_to_policy(model):
    # Arrives on time, but planned from a state 0.5 s old: stale (command_timeout_s 0.1).
    model.stamp_age['mpc'] = 0.5
    assert model.wait_mode('policy'), model.last_mode()
    vals = model.diag_values()
    assert 'stale' in vals['last_refusal'], vals
    model.stamp_age['mpc'] = -1.0   # stamped 1 s in the future: refused too
    time.sleep(0.3)
    assert model.last_mode() == 'policy'
    model.stamp_age['mpc'] = 0.0
    assert model.wait_mode('mpc')


def test_outputs_clamped_and_rate_limited(model):
    model.cmd['mpc'] = np.array([60.0, -60.0, 30.0])   # 3x the limits
    outs = model.outputs_after(settle=0.0, duration=0.6)
    assert _within_limits(outs)
    assert model.last_mode() == 'mpc', model.diag_values()['last_refusal']
    assert np.allclose(outs[-1], [20.0, -20.0, 10.0])
    steps = _steps_outside_hold(outs)
    assert np.all(steps <= MAX_STEP + 1e-9), steps.max(axis=0)
    assert np.any(steps > 0.5 * MAX_STEP)   # it did ramp, in steps near the limit
    model.cmd['mpc'] = MPC_CMD.copy()
    time.sleep(0.5)
    vals = model.diag_values()
    assert int(vals['clamped']) > 0 and int(vals['rate_limited']) > 0, vals


def test_mode_topic_is_published_periodically_and_latched(model, probe):
    n = len(model.mode)
    time.sleep(2.3)
    assert len(model.mode) - n >= 2      # mode_publish_period_s = 1
    assert [m.data for _, m in model.mode[n:]].count('mpc') >= 2
    # A late joiner gets the current mode at once (latched). (A feeder stall on a loaded machine
    # can make the state stale for a moment, hence 'hold' is possible here.)
    late = probe.wait_for('/mbrl/safety/mode', String, timeout=3.0, qos=LATCHED)
    assert late is not None and late.data in ('mpc', 'hold')


def test_no_state_gives_zero_effort(model):
    model.send['state'] = False
    assert model.wait_mode('hold')
    outs = model.outputs_after(settle=0.3)
    assert outs and all(np.all(o == 0.0) for o in outs)
    model.send['state'] = True
    assert model.wait_mode('mpc')


def _garbage():
    ok_stamp = lambda m: (setattr(m.header, 'stamp', sec_to_stamp(time.time())), m)[1]  # noqa: E731
    yield ok_stamp(JointState(name=ARM3, effort=[1.0, 2.0]))                       # too short
    yield ok_stamp(JointState(name=ARM3, effort=[float('nan'), 0.0, 0.0]))         # NaN
    yield ok_stamp(JointState(name=['a', 'b', 'c'], effort=[1.0, 2.0, 3.0]))        # wrong joints
    yield ok_stamp(JointState(name=ARM3 + ['x'], effort=[1.0, 2.0, 3.0, 4.0]))     # extra unknown joint
    yield JointState(name=ARM3, effort=[1.0, 2.0, 3.0])                            # no stamp
    yield ok_stamp(JointState(name=ARM3 * 2, effort=[1.0] * 6))                    # duplicate names
    yield ok_stamp(JointState(effort=[float('inf'), 1.0, 1.0]))                    # inf, no names


def test_garbage_commands_and_states_are_counted_and_ignored(model, probe):
    before = model.diag_values()
    pub_mpc = model.mpc_pub
    bad_states = [JointState(name=ARM3, position=[0.0, 0.0], velocity=[0.0] * 3),
                  JointState(name=ARM3, position=[float('nan')] * 3, velocity=[0.0] * 3),
                  JointState(position=Q, velocity=QD)]
    for s in bad_states:
        s.header.stamp = sec_to_stamp(time.time())
    n_out = len(model.out)
    # Spaced out, and the good MPC stream paused meanwhile: the subscriptions keep only the
    # latest message (depth 1, by design), so a good one could replace a bad one unseen.
    model.send['mpc'] = False
    for _ in range(2):
        for g in _garbage():
            pub_mpc.publish(g)
            time.sleep(0.04)
        for s in bad_states:
            model.state_pub.publish(s)
            time.sleep(0.04)
    model.send['mpc'] = True
    time.sleep(0.5)
    after = model.diag_values()
    # 14 sent; a loaded executor may still let one replace another now and then.
    assert int(after['bad_mpc_commands']) - int(before['bad_mpc_commands']) >= 7, after
    assert int(after['bad_states']) - int(before['bad_states']) >= 2, after
    assert after['last_bad_input'] != 'none'
    model.node.alive()
    outs = [np.array(m.data) for _, m in model.out[n_out:]]
    # Nothing of it reached the output: policy (MPC paused), then MPC again, all in limits.
    assert _within_limits(outs)
    assert all(np.allclose(o, POLICY_CMD) or np.allclose(o, MPC_CMD) or np.all(np.abs(o) <= 3.0) for o in outs)
    assert all(np.allclose(o, MPC_CMD) for o in outs[-10:])
    assert model.last_mode() == 'mpc'


def test_live_uncertainty_threshold_and_refused_changes(model, probe):
    ok, reason = probe.set_param(NODE, 'uncertainty_threshold', 0.0)
    assert ok, reason
    assert model.wait_mode('hold'), model.last_mode()
    assert 'uncertain' in model.diag_values()['last_refusal']
    ok, reason = probe.set_param(NODE, 'uncertainty_threshold', 1e6)
    assert ok, reason
    assert model.wait_mode('mpc')
    ok, reason = probe.set_param(NODE, 'command_timeout_s', 50.0)
    assert not ok and 'range' in reason, reason
    ok, reason = probe.set_param(NODE, 'robot', 'arm7')
    assert not ok and ('static' in reason or 'read-only' in reason), reason
    ok, reason = probe.set_param(NODE, 'max_effort_step', 0.05)
    assert ok, reason
    model.cmd['mpc'] = -MPC_CMD
    outs = model.outputs_after(settle=0.0, duration=0.4)
    steps = _steps_outside_hold(outs)
    assert np.all(steps <= 0.05 * EFFORT_MAX + 1e-9), steps.max(axis=0)
    ok, reason = probe.set_param(NODE, 'max_effort_step', 0.25)
    assert ok, reason


def test_command_pushing_a_joint_past_its_limit_is_refused(model):
    # Joint 2 (q_max 2.2) at 2.19: inside the 0.05 rad margin. Pushing further out is refused
    # (-> policy), pushing back in is accepted.
    global Q
    old_q = Q
    try:
        Q = [0.2, 2.19, 0.4]
        model.cmd['mpc'] = np.array([0.0, 3.0, 0.0])
        model.cmd['policy'] = np.array([0.0, -1.0, 0.0])
        assert model.wait_mode('policy'), model.last_mode()
        assert 'limit' in model.diag_values()['last_refusal']
        model.cmd['mpc'] = np.array([0.0, -3.0, 0.0])
        assert model.wait_mode('mpc'), model.last_mode()
    finally:
        Q = old_q
        model.cmd.update(mpc=MPC_CMD.copy(), policy=POLICY_CMD.copy())


def test_bad_model_announcement_is_refused_and_old_model_kept(model, probe, tmp_path):
    before = model.diag_values()['model']
    probe._sf_active_pub.publish(String(data=f'{tmp_path}/nothing_here {"0" * 64}'))
    time.sleep(0.5)
    vals = model.diag_values()
    assert vals['model'] == before and 'missing_file' in vals['last_refused_model'], vals
    assert model.last_mode() == 'mpc'
