"""mpc_controller (lifecycle) node over real DDS: commands stamped with the planned-from state,
lifecycle transitions, live parameters, goal checks, malformed input and model announcements.

One node process serves the module, with an untrained arm3 bundle (from _model_helpers)
announced on the latched active_model topic; a feeder thread publishes /mbrl/state at 100 Hz
and remembers every stamp it sent. Tests that need "no goal yet" run first.
"""
import time

import numpy as np
import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from nav_msgs.msg import Path
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from _model_helpers import write_bundle
from mbrl_ros.core.bundle import load_bundle
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.ros.conversions import sec_to_stamp, stamp_to_sec
from mbrl_ros.testing.goals import goal_msg
from mbrl_ros.testing.node_process import ControllerHarness, NodeProcess, wait_for_status
from mbrl_ros.ros.diagnostics import status_values
from mbrl_ros.testing.ros_probe import RosProbe

pytestmark = pytest.mark.ros

NODE = '/mpc_controller'
ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']
EFFORT_MAX = np.array([20.0, 20.0, 10.0])
GOAL = (0.3, 0.1, 0.35)


class Harness(ControllerHarness):
    def __init__(self, probe, node: NodeProcess):
        self.plan = probe.subscribe('/mbrl/mpc/plan', Path, 100)
        self.sent = set()
        super().__init__(probe, node, '/mbrl/mpc/command', 1000)

    def tick(self, k):
        if self.feeding:
            m = JointState(name=ARM3, position=[0.1, 0.4, 0.5], velocity=[0.0, 0.1, -0.1])
            m.header.stamp = sec_to_stamp(time.time())
            self.sent.add((m.header.stamp.sec, m.header.stamp.nanosec))
            self.state_pub.publish(m)

    def send_goal(self, xyz, frame='world'):
        self.goal_pub.publish(goal_msg(xyz, frame))

    def commands_flow(self, n=5, timeout=10.0):
        self.grows(self.cmd, n, timeout, 'commands')

    def diag_values(self, timeout=3.0, predicate=lambda v: True):
        got = wait_for_status(self.probe, self.diag, 'mpc_controller', timeout,
                              lambda s: predicate(status_values(s)))
        assert got is not None, 'no (matching) diagnostics:\n' + self.log_text()
        return status_values(got)

    def lifecycle(self):
        return self.probe.call(GetState, f'{NODE}/get_state').current_state.id

    def transition(self, tid):
        req = ChangeState.Request()
        req.transition.id = tid
        return self.probe.call(ChangeState, f'{NODE}/change_state', req, timeout=10.0).success


@pytest.fixture(scope='module')
def bundles(tmp_path_factory):
    robot = RobotModel.load('arm3')
    root = tmp_path_factory.mktemp('mpc_bundles')
    return write_bundle(root / 'a', robot).resolve(), root


@pytest.fixture(scope='module')
def node(bundles, tmp_path_factory):
    a, _ = bundles
    # model_roots: the test bundles live under pytest's temp folder (the node refuses bundles elsewhere).
    with RosProbe('mpc_test') as probe, NodeProcess(
            'mpc_controller', 'robot:=arm3', 'num_samples:=100', 'num_elites:=10', 'horizon:=8',
            'time_budget_ms:=15.0', f"model_roots:=['{tmp_path_factory.getbasetemp()}']") as proc:
        h = Harness(probe, proc)
        try:
            h.active_pub.publish(String(data=load_bundle(a).identity))
            h.diag_values(timeout=40.0, predicate=lambda v: v['model'] != 'none')
            yield h
        finally:
            h.close()


@pytest.fixture
def running(node):
    """Active, fed, with the module goal."""
    node.feeding = True
    if node.lifecycle() != State.PRIMARY_STATE_ACTIVE:
        assert node.transition(Transition.TRANSITION_ACTIVATE)
    node.send_goal(GOAL)
    node.commands_flow(n=3)
    yield node
    node.alive()


def test_autostarted_active_and_no_goal_means_no_command(node):
    # (Runs first: no goal has been sent.)
    assert node.lifecycle() == State.PRIMARY_STATE_ACTIVE
    time.sleep(1.0)
    assert len(node.cmd) == 0
    assert node.diag_values()['last_no_command'] == 'no goal'


def test_commands_are_stamped_with_the_planned_from_state(running):
    running.commands_flow(n=20)
    recent = [m for _, m in running.cmd[-20:]]
    for m in recent:
        assert list(m.name) == ARM3
        assert len(m.effort) == 3 and np.all(np.abs(m.effort) <= EFFORT_MAX + 1e-9)
        assert (m.header.stamp.sec, m.header.stamp.nanosec) in running.sent
    # Latest state wins: commands follow the feed closely, not a backlog.
    t_recv, last = running.cmd[-1]
    assert t_recv - stamp_to_sec(last.header.stamp) < 0.5
    # The predicted EE path: frame world, horizon + 1 poses, every 5th plan.
    assert running.probe.wait_until(lambda: len(running.plan) > 0, 5.0)
    path = running.plan[-1][1]
    assert path.header.frame_id == 'world' and len(path.poses) == 9
    vals = running.diag_values()
    assert vals['model'] == load_bundle(vals['model'].split()[0]).identity
    for key in ('plan_ms_p50', 'plan_ms_p99', 'overruns', 'iterations_last', 'goal_distance_m'):
        assert key in vals
    assert float(vals['plan_ms_p99']) >= float(vals['plan_ms_p50']) > 0
    assert int(vals['iterations_last']) >= 1


def _missed(h, after_commands: int) -> int:
    """The node's own missed-period count, from a status that reports at least `after_commands`."""
    return int(h.diag_values(timeout=5.0, predicate=lambda v: int(v['commands']) >= after_commands)['missed_periods'])


def test_deactivate_stops_commands_activate_resumes(running):
    missed0 = _missed(running, 0)
    assert running.transition(Transition.TRANSITION_DEACTIVATE)
    assert running.lifecycle() == State.PRIMARY_STATE_INACTIVE
    n = len(running.cmd)
    time.sleep(0.8)
    assert len(running.cmd) == n, 'commands while inactive'
    assert running.transition(Transition.TRANSITION_ACTIVATE)
    assert running.lifecycle() == State.PRIMARY_STATE_ACTIVE
    running.commands_flow(n=5)
    # 0.8 s inactive (40 periods) is not a run of missed periods: the count starts again at activation.
    assert _missed(running, int(running.diag_values()['commands']) + 1) - missed0 < 10


def test_cleanup_and_configure_again_reloads_the_announced_model(running):
    assert running.transition(Transition.TRANSITION_DEACTIVATE)
    assert running.transition(Transition.TRANSITION_CLEANUP)
    assert running.lifecycle() == State.PRIMARY_STATE_UNCONFIGURED
    assert running.diag_values(predicate=lambda v: v['lifecycle'] == 'unconfigured')['model'] == 'none'
    assert running.transition(Transition.TRANSITION_CONFIGURE)
    assert running.transition(Transition.TRANSITION_ACTIVATE)
    # The latched active_model reaches the new subscription; the goal was forgotten by cleanup.
    assert running.diag_values(timeout=10.0, predicate=lambda v: v['model'] != 'none')
    n = len(running.cmd)
    time.sleep(0.5)
    assert len(running.cmd) == n
    running.send_goal(GOAL)
    running.commands_flow(n=5)


def test_stale_state_means_no_command(running):
    missed0 = _missed(running, 0)
    running.feeding = False
    time.sleep(0.3)
    n = len(running.cmd)
    time.sleep(0.6)
    assert len(running.cmd) == n
    assert running.diag_values(predicate=lambda v: 'stale' in v['last_no_command'] or 'no state' in
                               v['last_no_command'])
    running.feeding = True
    running.commands_flow(n=5)
    # A goal and a model but no fresh state: those periods are missed (>= 0.6 s of silence: 30 periods).
    assert _missed(running, int(running.diag_values()['commands']) + 1) - missed0 >= 25


def _plan_lengths(h, duration=1.0):
    n = len(h.plan)
    time.sleep(duration)
    return {len(m.poses) for _, m in h.plan[n:]}


def test_live_parameters_take_effect_without_restart(running):
    probe, pid = running.probe, running.node.pid
    ok, reason = probe.set_param(NODE, 'horizon', 5)
    assert ok, reason
    time.sleep(0.3)
    assert _plan_lengths(running) == {6}
    assert running.diag_values(predicate=lambda v: v['horizon'] == '5')
    for name, value, shown in (('num_samples', 60, '60'), ('planner', 'cem', 'cem'),
                               ('time_budget_ms', 12.0, '12')):
        ok, reason = probe.set_param(NODE, name, value)
        assert ok, (name, reason)
        assert running.diag_values(predicate=lambda v, n=name, s=shown: v[n] == s), name
    for name, value in (('num_iterations', 2), ('num_elites', 8), ('uncertainty_penalty', 3.0),
                        ('ee_distance', 2.0), ('control_rate_hz', 40.0)):
        ok, reason = probe.set_param(NODE, name, value)
        assert ok, (name, reason)
    running.commands_flow(n=10)
    ok, reason = probe.set_param(NODE, 'horizon', 8)
    assert ok, reason
    ok, reason = probe.set_param(NODE, 'control_rate_hz', 50.0)
    assert ok, reason
    time.sleep(0.3)
    assert _plan_lengths(running) == {9}
    assert running.node.pid == pid and running.node.poll() is None


def test_invalid_and_static_parameter_changes_are_refused_with_a_reason(running):
    probe = running.probe
    for name, value, words in (('horizon', 0, 'range'), ('horizon', 500, 'range'),
                               ('num_samples', 2, 'range'), ('planner', 'mppi', 'one of'),
                               ('time_budget_ms', -1.0, 'range'), ('uncertainty_penalty', -1.0, 'range'),
                               ('control_rate_hz', 0.0, 'range'),
                               ('num_elites', 1000, 'num_samples'),   # cross-check: > num_samples
                               ('horizon', 'long', 'type'),
                               ('robot', 'arm7', 'only'), ('autostart', False, 'only')):
        ok, reason = probe.set_param(NODE, name, value)
        assert not ok, (name, value)
        assert words in reason or ('static' in reason or 'read-only' in reason), (name, reason)
    assert probe.get_param(NODE, 'horizon') == 8
    assert running.diag_values()['horizon'] == '8'
    running.commands_flow(n=5)


def test_unreachable_nan_or_foreign_frame_goals_are_refused(running):
    before = running.diag_values()
    for goal, frame in (((5.0, 0.0, 0.0), 'world'), ((float('nan'), 0.1, 0.2), 'world'),
                        ((0.0, float('inf'), 0.2), 'world'), ((0.3, 0.1, 0.35), 'camera')):
        running.send_goal(goal, frame)
        time.sleep(0.1)
    after = running.diag_values(predicate=lambda v: int(v['bad_goals']) >= int(before['bad_goals']) + 4)
    assert after['goal'] == before['goal'] == str([round(v, 4) for v in GOAL]).replace(',', ',')
    assert 'reach' in after['last_bad_input'] or 'frame' in after['last_bad_input']
    running.commands_flow(n=5)   # the previous goal is still pursued


def test_malformed_states_crash_nothing(running):
    before = int(running.diag_values()['bad_states'])
    bad = [JointState(name=ARM3, position=[0.0, 0.0], velocity=[0.0] * 3),
           JointState(name=ARM3, position=[float('nan')] * 3, velocity=[0.0] * 3),
           JointState(name=['x', 'y', 'z'], position=[0.0] * 3, velocity=[0.0] * 3),
           JointState(name=ARM3, position=[0.0] * 3, velocity=[0.0] * 3),   # no stamp
           JointState(position=[0.0] * 3, velocity=[0.0] * 3)]
    running.feeding = False
    for _ in range(2):
        for m in bad:
            if m is not bad[3]:
                m.header.stamp = sec_to_stamp(time.time())
            running.state_pub.publish(m)
            time.sleep(0.04)
    running.feeding = True
    vals = running.diag_values(predicate=lambda v: int(v['bad_states']) >= before + 5)
    assert vals['internal_errors'] == '0'
    running.commands_flow(n=5)


def test_bad_model_refused_good_model_swapped(running, bundles):
    a, root = bundles
    old = load_bundle(a).identity
    running.active_pub.publish(String(data=f'{root}/missing {"0" * 64}'))
    vals = running.diag_values(predicate=lambda v: 'missing_file' in v['last_refused_model'])
    assert vals['model'] == old
    running.commands_flow(n=5)
    running.active_pub.publish(String(data='not a model announcement'))
    vals = running.diag_values(predicate=lambda v: int(v['refused_models']) >= 2)
    assert vals['model'] == old
    b = write_bundle(root / 'b', RobotModel.load('arm3')).resolve()
    new = load_bundle(b).identity
    running.active_pub.publish(String(data=new))
    vals = running.diag_values(timeout=10.0, predicate=lambda v: v['model'] == new)
    assert int(vals['model_swaps']) >= 2
    running.commands_flow(n=5)


def test_a_burst_of_announcements_loads_the_last_and_keeps_commanding(running, bundles):
    # active_model is latest-wins: of a burst of bad announcements ending in a good one, the node
    # validates a few (refused, check named), reports the rest as superseded, loads the last one,
    # and keeps sending commands meanwhile.
    _, root = bundles
    before = running.diag_values()
    sup0, ref0 = int(before['superseded_models']), int(before['refused_models'])
    c = write_bundle(root / 'burst_good', RobotModel.load('arm3')).resolve()
    new = load_bundle(c).identity
    n0 = len(running.cmd)
    t0 = time.monotonic()
    for i in range(30):
        running.active_pub.publish(String(data=f'{root}/burst_missing_{i} {"0" * 64}'))
        time.sleep(0.01)
    running.active_pub.publish(String(data=new))
    vals = running.diag_values(timeout=15.0, predicate=lambda v: v['model'] == new)
    elapsed = time.monotonic() - t0
    superseded, refused = int(vals['superseded_models']) - sup0, int(vals['refused_models']) - ref0
    assert superseded >= 10, (superseded, refused)   # (DDS may drop some of a burst: keep-last 1)
    # validations start >= 0.5 s apart: a burst costs a bounded number of them
    assert 1 <= refused <= elapsed / 0.5 + 2, (refused, elapsed)
    assert '[missing_file]' in vals['last_refused_model']
    assert 'superseded before validation' in running.node.log_text(100000)
    assert len(running.cmd) - n0 >= 10, 'commands stopped during the burst'
    running.commands_flow(n=5)


def test_controller_osc_pd_runs_the_baseline_and_bad_values_are_refused(running):
    from mbrl_ros.core.baseline import OscPd, shipped_gains
    probe = running.probe
    shipped = shipped_gains(RobotModel.load('arm3'))
    # -1 (the default) is resolved at start to the shipped value, so a reader sees what runs.
    assert probe.get_param(NODE, 'osc_kp') == pytest.approx(shipped.kp)
    for name, value, words in (('controller', 'pid', 'one of'), ('osc_kp', -5.0, 'range'),
                               ('osc_kd', -0.5, '>= 0'), ('controller', 3, 'type')):
        ok, reason = probe.set_param(NODE, name, value)
        assert not ok and words in reason, (name, value, reason)
    # Without delay compensation the command is exactly the law at the fed state.
    for name, value in (('delay_compensation', False), ('controller', 'osc_pd')):
        ok, reason = probe.set_param(NODE, name, value)
        assert ok, (name, reason)
    try:
        assert running.diag_values(predicate=lambda v: v['controller'] == 'osc_pd')
        running.commands_flow(n=5)
        want = OscPd('arm3', shipped)([0.1, 0.4, 0.5], [0.0, 0.1, -0.1], GOAL)
        np.testing.assert_allclose(running.cmd[-1][1].effort, want, atol=1e-6)
    finally:
        for name, value in (('controller', 'mpc'), ('delay_compensation', True)):
            ok, reason = probe.set_param(NODE, name, value)
            assert ok, (name, reason)
    assert running.diag_values(predicate=lambda v: v['controller'] == 'mpc')
    running.commands_flow(n=5)
