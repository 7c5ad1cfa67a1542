"""policy node over real DDS: commands stamped with the state they were computed from, within the
effort limits, at the control rate; no commands without a policy in the bundle (a clear status),
without a goal or with a stale state; refused goals; live control_rate_hz; a bundle swap.

One node process serves the module (arm3). Bundles: an untrained arm3 ensemble
(test/_model_helpers.py) with and without an untrained policy.onnx (its graph is what matters
here: normalisation and the ±effort_max squashing are inside it).
"""
import time

import numpy as np
import pytest
import torch
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from _model_helpers import write_bundle
from mbrl_ros.core.bundle import load_bundle
from mbrl_ros.core.policy.distill import install_policy, write_policy_section
from mbrl_ros.core.policy.network import PolicyConfig, PolicyNet, fk_chain
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.ros.conversions import sec_to_stamp
from mbrl_ros.testing.goals import goal_msg
from mbrl_ros.testing.node_process import ControllerHarness, NodeProcess, wait_for_status
from mbrl_ros.ros.diagnostics import status_values
from mbrl_ros.testing.ros_probe import RosProbe

pytestmark = pytest.mark.ros

ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']
EFFORT_MAX = np.array([20.0, 20.0, 10.0])
GOAL = (0.3, 0.1, 0.35)


def write_policy_bundle(out_dir, robot, seed=0, out_scale=2.0):
    """An untrained ensemble bundle plus an untrained policy.onnx (scaled up so it saturates somewhere)."""
    bdir = write_bundle(out_dir, robot)
    torch.manual_seed(seed)
    net = PolicyNet(PolicyConfig(robot.dof, [float(v) for v in robot.effort_max], [32, 32], fk=fk_chain(robot)))
    rng = np.random.default_rng(seed)
    q = robot.sample_configurations(rng, 200)
    net.set_normalisation(np.concatenate([q, rng.normal(size=q.shape)], 1), robot.fk(q))
    with torch.no_grad():
        net.out.weight.mul_(out_scale)
        net.out.bias.mul_(out_scale)
    install_policy(bdir, net.eval(), robot)
    write_policy_section(bdir, {'file': 'policy.onnx', 'metrics': {'success_rate': 0.0}, 'note': 'untrained (test)'})
    return bdir.resolve()


class Harness(ControllerHarness):
    def __init__(self, probe, node: NodeProcess):
        self.sent = {}
        self.stale_by = 0.0
        super().__init__(probe, node, '/mbrl/policy/command', 2000)

    def tick(self, k):
        if self.feeding:
            q = [0.1 + 0.01 * np.sin(k / 10), 0.4, 0.5]
            m = JointState(name=ARM3, position=q, velocity=[0.0, 0.1, -0.1])
            m.header.stamp = sec_to_stamp(time.time() - self.stale_by)
            self.sent[(m.header.stamp.sec, m.header.stamp.nanosec)] = q
            self.state_pub.publish(m)

    def send_goal(self, xyz, frame='world'):
        self.goal_pub.publish(goal_msg(xyz, frame))

    def announce(self, bundle_dir):
        self.active_pub.publish(String(data=load_bundle(bundle_dir).identity))

    def commands_flow(self, n=5, timeout=10.0):
        self.grows(self.cmd, n, timeout, 'commands')

    def diag_status(self, timeout=5.0, predicate=lambda st: True):
        got = wait_for_status(self.probe, self.diag, 'policy', timeout, predicate)
        assert got is not None, 'no (matching) diagnostics:\n' + self.log_text()
        return got


@pytest.fixture(scope='module')
def bundles(tmp_path_factory):
    robot = RobotModel.load('arm3')
    root = tmp_path_factory.mktemp('policy_bundles')
    return {'plain': write_bundle(root / 'plain', robot).resolve(),
            'policy': write_policy_bundle(root / 'policy', robot, seed=0),
            'policy2': write_policy_bundle(root / 'policy2', robot, seed=1)}


@pytest.fixture(scope='module')
def node(bundles, tmp_path_factory):
    # model_roots: the test bundles live under pytest's temp folder (the node refuses bundles elsewhere).
    with RosProbe('policy_test') as probe, NodeProcess(
            'policy', 'robot:=arm3', f"model_roots:=['{tmp_path_factory.getbasetemp()}']") as proc:
        h = Harness(probe, proc)
        try:
            assert probe.wait_for_publishers('/mbrl/policy/command', timeout=40.0), h.log_text()
            yield h
        finally:
            h.close()


def test_bundle_without_policy_gives_no_commands_and_says_why(node, bundles):
    node.announce(bundles['plain'])
    node.send_goal(GOAL)
    st = node.diag_status(timeout=40.0, predicate=lambda s: 'policy.onnx' in s.message)
    assert st.level in (b'\x01', 1)   # WARN
    assert 'has no policy.onnx' in st.message
    time.sleep(0.5)
    assert len(node.cmd) == 0
    node.alive()


def test_commands_are_stamped_with_the_state_and_within_limits(node, bundles):
    node.announce(bundles['policy'])
    node.send_goal(GOAL)
    node.commands_flow(n=20, timeout=40.0)
    n = len(node.cmd)
    time.sleep(1.0)
    got = node.cmd[n:]
    assert 30 <= len(got) <= 70, len(got)     # ~50 Hz (loose: a loaded machine)
    for _, m in got:
        key = (m.header.stamp.sec, m.header.stamp.nanosec)
        assert key in node.sent, 'command stamp is not the stamp of a state we sent'
        assert list(m.name) == ARM3
        u = np.array(m.effort)
        assert u.shape == (3,) and np.all(np.isfinite(u)) and np.all(np.abs(u) <= EFFORT_MAX + 1e-6)
    st = node.diag_status(predicate=lambda s: status_values(s).get('inference_ms_p99', 'n/a') != 'n/a')
    v = status_values(st)
    assert float(v['inference_ms_p99']) < 50.0   # a sanity bound only; `mbrl-ros bench policy` measures it
    assert v['policy'].endswith('policy.onnx')


def test_command_is_the_policy_output_for_that_state(node, bundles):
    from mbrl_ros.core.policy import PolicyRuntime
    node.announce(bundles['policy'])
    node.send_goal(GOAL)
    node.commands_flow(n=5, timeout=20.0)
    rt = PolicyRuntime(bundles['policy'] / 'policy.onnx')
    _, m = node.cmd[-1]
    q = node.sent[(m.header.stamp.sec, m.header.stamp.nanosec)]
    np.testing.assert_allclose(m.effort, rt.act(q, [0.0, 0.1, -0.1], GOAL), atol=1e-5)


def test_stale_state_means_no_command(node, bundles):
    node.send_goal(GOAL)
    node.commands_flow(n=3)
    node.stale_by = 0.5
    try:
        time.sleep(0.3)
        n = len(node.cmd)
        time.sleep(0.6)
        assert len(node.cmd) == n
        st = node.diag_status(predicate=lambda s: 'stale' in status_values(s).get('last_no_command', ''))
        assert 'stale state' in status_values(st)['last_no_command']
    finally:
        node.stale_by = 0.0
    node.commands_flow(n=3)


def test_unreachable_or_foreign_frame_goal_is_refused_and_the_old_one_kept(node, bundles):
    node.send_goal(GOAL)
    node.commands_flow(n=3)
    node.send_goal((5.0, 0.0, 0.0))
    node.send_goal(GOAL, frame='camera')
    st = node.diag_status(predicate=lambda s: int(status_values(s)['bad_goals']) >= 2)
    assert 'frame' in status_values(st)['last_bad_input']
    assert status_values(st)['goal'] == str(list(GOAL))
    node.commands_flow(n=3)


def test_live_rate_change_and_bundle_swap(node, bundles):
    node.send_goal(GOAL)
    assert node.probe.set_param('/policy', 'control_rate_hz', 20.0)[0]
    try:
        time.sleep(0.3)
        n = len(node.cmd)
        time.sleep(1.0)
        assert 10 <= len(node.cmd) - n <= 30
    finally:
        assert node.probe.set_param('/policy', 'control_rate_hz', 50.0)[0]
    ok, why = node.probe.set_param('/policy', 'robot', 'arm7')
    assert not ok and why
    node.announce(bundles['policy2'])
    st = node.diag_status(timeout=20.0, predicate=lambda s: 'policy2' in status_values(s)['policy'])
    assert 'policy2' in status_values(st)['model']
    node.commands_flow(n=5)
