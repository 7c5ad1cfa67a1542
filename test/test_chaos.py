"""Chaos check, short form (the long one: mbrl-ros check chaos --duration 300, see docs/reliability.md).

The sim stack (sim_arm.launch.yaml through the launch runner, arm3 and its shipped bundle, which
has no policy.onnx: MPC dead -> hold is the designed outcome) reaches random goals while four
nodes are SIGKILLed one after the other and restarted 1.5 s later: each fault must end in the
designed mode (or, for the safety filter, in sim_robot's watchdog zeroing the effort), the stack
must work again by itself (the node's output flows, mode mpc, the arm gets commands), and no
command may leave the limits. Timing bounds are loose: the CI machine is shared.
"""
import io

import pytest

from mbrl_ros.reliability.chaos import NODES, WATCHDOG, ChaosRun, designed_outcome, fault_order, format_summary


def test_fault_order_is_a_seeded_permutation_per_round():
    a = fault_order(NODES, 12, seed=3)
    assert a == fault_order(NODES, 12, seed=3)
    assert a != fault_order(NODES, 12, seed=4)
    assert sorted(a[:6]) == sorted(NODES) and sorted(a[6:]) == sorted(NODES)


def test_designed_outcomes():
    assert designed_outcome('mpc_controller', has_policy=True) == 'policy'
    assert designed_outcome('mpc_controller', has_policy=False) == 'hold'
    assert designed_outcome('state_estimator', False) == 'hold'
    assert designed_outcome('sim_robot', True) == 'hold'
    assert designed_outcome('world_model', False) == 'mpc'
    assert designed_outcome('policy', True) == 'mpc'
    assert designed_outcome('safety_filter', True) == WATCHDOG


@pytest.mark.ros
@pytest.mark.system
def test_chaos_short_kills_and_restarts_nodes_safely():
    from mbrl_ros.reliability.harness import ReachingSession
    log = io.StringIO()
    with ReachingSession('arm3', restart_delay=1.5, liveness=True, seed=1, log=log) as s:
        s.wait_ready(90)
        run = ChaosRun(s, steady_timeout_s=10.0, recover_timeout_s=40.0)
        res = run.run(1e9, sequence=['mpc_controller', 'safety_filter', 'sim_robot', 'world_model'])
    for f in run.faults:
        print(f.line())
    print(format_summary(res))
    tail = '\n'.join(log.getvalue().splitlines()[-60:])
    assert res['out_of_limit_total'] == 0, res['violation_examples']
    assert not s.left_behind, s.left_behind
    assert len(run.faults) == 4
    for f in run.faults:
        assert f.as_designed, f.line() + '\n' + tail
        assert f.recovered, f.line() + '\n' + tail
        if f.to_outcome_s is not None:   # filter timeouts are 0.1 s: generous slack for a loaded machine
            assert f.to_outcome_s < 2.0, f.line()
