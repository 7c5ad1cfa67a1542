"""The MPC plans within the limits the safety filter enforces, over real DDS between real processes.

safety_filter and mpc_controller (arm3, an untrained bundle) run as nodes; the test plays the state
estimator (a fixed state at 100 Hz) and the world model (the bundle announced, latched). The filter
publishes its limits on the latched SAFETY_LIMITS_TOPIC; a live `effort_limit_scale` 0.3 /
`max_effort_step` 0.05 must reach the MPC, whose commands then stay within 0.3 x the effort limits and
need no rate limiting by the filter; a malformed limits message is refused and the last good limits
kept. (The policy node follows the same topic through the same LimitsFollower and CommandLimits.bound,
unit-tested in test_safety.py.)
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
from mbrl_ros.topics import COMMAND_TOPIC, SAFETY_LIMITS_TOPIC
from mbrl_ros.testing.goals import goal_msg
from mbrl_ros.testing.node_process import Feeder, NodeProcess, wait_for_status
from mbrl_ros.ros.diagnostics import status_values
from mbrl_ros.testing.ros_probe import RosProbe

pytestmark = pytest.mark.ros

ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']
EFFORT_MAX = np.array([20.0, 20.0, 10.0])
Q, QD = [0.1, 0.4, 0.5], [0.0, 0.0, 0.0]
GOAL = (-0.3, -0.3, 0.2)     # far from the state's end effector: an unconstrained plan asks for a lot


def _diag(probe, buf, node, predicate, timeout=10.0):
    got = wait_for_status(probe, buf, node, timeout, lambda s: predicate(status_values(s)))
    return None if got is None else status_values(got)


def _window(buf, seconds):
    n = len(buf)
    time.sleep(seconds)
    return [m for _, m in buf[n:]]


def test_mpc_follows_the_filters_limits_live_and_keeps_the_last_good_ones(tmp_path):
    bundle = write_bundle(tmp_path / 'bundle', RobotModel.load('arm3')).resolve()
    roots = f"model_roots:=['{tmp_path}']"
    with RosProbe('limits_test') as probe, \
            NodeProcess('safety_filter', 'robot:=arm3', 'uncertainty_threshold:=1000000.0', roots) as sf, \
            NodeProcess('mpc_controller', 'robot:=arm3', 'num_samples:=60', 'num_elites:=6', 'horizon:=8',
                        'time_budget_ms:=12.0', 'delay_compensation:=false', roots) as mpc:
        state_pub = probe.publisher('/mbrl/state', JointState, 10)
        goal_pub = probe.publisher('/mbrl/goal', geometry_point(), 10)
        active = probe.publisher('/mbrl/world_model/active_model', String, LATCHED)
        bad_limits = probe.publisher(SAFETY_LIMITS_TOPIC, JointState, LATCHED)  # (the subscribers' QoS)
        cmds = probe.subscribe('/mbrl/mpc/command', JointState, 1000)
        outs = probe.subscribe(COMMAND_TOPIC, Float64MultiArray, 1000)
        diag = probe.subscribe('/diagnostics', DiagnosticArray, 100)
        logs = (lambda: sf.log_text() + '\n----\n' + mpc.log_text())

        def tick(k):
            m = JointState(name=ARM3, position=Q, velocity=QD)
            m.header.stamp = sec_to_stamp(time.time())
            state_pub.publish(m)
            if k % 50 == 0:
                goal_pub.publish(goal_msg(GOAL))
        feeder = Feeder(tick, 0.01)
        try:
            active.publish(String(data=load_bundle(bundle).identity))
            # The filter's limits, latched: a late subscriber gets them.
            first = probe.wait_for(SAFETY_LIMITS_TOPIC, JointState, timeout=30.0, qos=LATCHED)
            assert first is not None, logs()
            assert list(first.name) == ARM3 and np.allclose(first.effort, EFFORT_MAX)   # scale 1.0
            assert np.allclose(first.velocity, 0.25 * EFFORT_MAX) and np.allclose(first.position, 0.05)
            assert probe.wait_until(lambda: len(cmds) > 30, 60.0), logs()
            full = np.array([m.effort for m in _window(cmds, 1.5)])
            # Without the filter's scale the planner asks for more than 0.3 x the limits (else this
            # test could not tell following from not following).
            assert np.any(np.abs(full) > 0.3 * EFFORT_MAX + 1e-6), full

            for name, value in (('effort_limit_scale', 0.3), ('max_effort_step', 0.05)):
                ok, why = probe.set_param('/safety_filter', name, value)
                assert ok, why
            vals = _diag(probe, diag, 'mpc_controller', lambda v: 'effort [6 6 3] Nm, step [1 1 0.5]'
                         in v['command_limits'])
            assert vals is not None, logs()
            time.sleep(0.5)    # plans started before the change are out
            sf0 = _diag(probe, diag, 'safety_filter', lambda v: True)
            got = np.array([m.effort for m in _window(cmds, 2.0)])
            sf1 = _diag(probe, diag, 'safety_filter', lambda v: int(v['periods']) > int(sf0['periods']) + 50)
            assert len(got) > 40, logs()
            assert np.all(np.abs(got) <= 0.3 * EFFORT_MAX + 1e-9), got.max(axis=0)
            # The filter had nothing to cut: no clamping, (almost) no rate limiting. (A period in hold
            # when this busy machine delays the feeder is then left at the rate limit: a few allowed.)
            periods = int(sf1['periods']) - int(sf0['periods'])
            assert int(sf1['clamped']) == int(sf0['clamped']), (sf0, sf1)
            holds = int(sf1['periods_hold']) - int(sf0['periods_hold'])
            assert int(sf1['rate_limited']) - int(sf0['rate_limited']) <= 0.05 * periods + 2 * holds, (sf0, sf1)
            sent = np.array([m.data for _, m in outs[-50:]])
            assert np.all(np.abs(sent) <= 0.3 * EFFORT_MAX + 1e-9)

            # Malformed limits (NaN, wrong joints) are refused; the last good ones stay in force.
            assert probe.wait_for_publishers(SAFETY_LIMITS_TOPIC, 2)
            for k, bad in enumerate((
                    JointState(name=ARM3, position=[0.05] * 3, velocity=[1.0] * 3, effort=[float('nan'), 1, 1]),
                    JointState(name=['a', 'b', 'c'], position=[0.0] * 3, velocity=[1.0] * 3, effort=[1.0] * 3))):
                bad_limits.publish(bad)
                vals = _diag(probe, diag, 'mpc_controller', lambda v: int(v['refused_limits']) >= k + 1)
                assert vals is not None and '[6 6 3] Nm' in vals['command_limits'], mpc.log_text()
            got = np.array([m.effort for m in _window(cmds, 1.0)])
            assert len(got) > 10 and np.all(np.abs(got) <= 0.3 * EFFORT_MAX + 1e-9)
            assert 'ignoring malformed /mbrl/safety/limits' in mpc.log_text()
            sf.alive(), mpc.alive()
        finally:
            feeder.close()


def geometry_point():
    from geometry_msgs.msg import PointStamped
    return PointStamped
