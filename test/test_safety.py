"""Safety filter core: source selection, bounds, rate limit, joint-limit refusal, and the
property that nothing unsafe is ever produced whatever arrives."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mbrl_ros.core.safety import (CommandSample, SafetyFilter, SafetyLimits, SafetySettings,
                                  StateSample, as_vector, joint_limit_violation)

DOF = 3
LIMITS = SafetyLimits(q_min=np.array([-2.0, -1.0, -2.5]), q_max=np.array([2.0, 1.5, 2.5]),
                      effort_max=np.array([20.0, 20.0, 10.0]))
NOW = 100.0


def make(**kw):
    return SafetyFilter(LIMITS, SafetySettings(**kw))


def state(q=(0.0, 0.0, 0.0), qd=(0.0, 0.0, 0.0), stamp=NOW):
    return StateSample(np.array(q, float), np.array(qd, float), stamp)


def cmd(values, stamp=NOW - 0.01, dis=0.1, predicted_q=None):
    return CommandSample(values, stamp, dis, predicted_q)


def test_fresh_confident_mpc_is_sent():
    f = make(max_effort_step=2.0)
    out = f.step(NOW, state(), cmd([1.0, -2.0, 3.0]), cmd([5.0, 5.0, 5.0]))
    assert out.mode == 'mpc'
    np.testing.assert_allclose(out.command, [1.0, -2.0, 3.0])
    assert not out.clamped and not out.rate_limited


def test_a_change_within_the_rate_limit_is_sent_exactly_and_not_counted_as_limited():
    """last + (u - last) != u in floating point for many values: the counter used to flag those."""
    f = make(max_effort_step=2.0)          # any change within the limits is allowed
    rng = np.random.default_rng(0)
    flagged = 0
    for i in range(200):
        u = rng.uniform(-0.9, 0.9, 3) * f.effort_limit
        t = NOW + 0.02 * i
        out = f.step(t, state(stamp=t), cmd(u, stamp=t - 0.01), None)
        assert out.mode == 'mpc'
        np.testing.assert_array_equal(out.command, u)
        flagged += out.rate_limited
    assert flagged == 0


@pytest.mark.parametrize('bad_mpc, why', [
    (cmd([1.0, 1.0, 1.0], stamp=NOW - 0.5), 'stale'),
    (cmd([1.0, 1.0, 1.0], stamp=NOW + 1.0), 'future'),
    (cmd([1.0, 1.0, 1.0], stamp=None), 'time stamp'),
    (cmd([1.0, 1.0, 1.0], dis=5.0), 'uncertain'),
    (cmd([1.0, 1.0, 1.0], dis=float('nan')), 'disagreement'),
    (cmd([1.0, 1.0, 1.0], dis=None), 'no ensemble disagreement'),
    (cmd([1.0, float('nan'), 1.0]), 'finite efforts'),
    (cmd([1.0, 1.0]), 'finite efforts'),
    (cmd('1 2 3'), 'finite efforts'),
    (None, 'no command'),
])
def test_bad_mpc_falls_back_to_policy(bad_mpc, why):
    f = make(max_effort_step=2.0)
    out = f.step(NOW, state(), bad_mpc, cmd([0.5, 0.5, 0.5]))
    assert out.mode == 'policy'
    np.testing.assert_allclose(out.command, [0.5, 0.5, 0.5])
    assert why in out.reasons['mpc']


def test_both_bad_holds_with_damping():
    f = make(hold_damping=3.0)
    out = f.step(NOW, state(qd=(1.0, -2.0, 0.5)), cmd([1, 1, 1], stamp=NOW - 1), None)
    assert out.mode == 'hold'
    np.testing.assert_allclose(out.command, [-3.0, 6.0, -1.5])
    assert set(out.reasons) == {'mpc', 'policy'}


def test_missing_uncertainty_can_be_allowed():
    f = make(allow_missing_uncertainty=True)
    assert f.step(NOW, state(), cmd([0.1, 0.1, 0.1], dis=None)).mode == 'mpc'


def test_bad_state_holds_with_zero_effort():
    f = make(max_effort_step=2.0)
    for s in (None, state(stamp=NOW - 1.0), state(q=(0, math.inf, 0)), state(qd=(0, 0))):
        out = f.step(NOW, s, cmd([1.0, 1.0, 1.0]), cmd([1.0, 1.0, 1.0]))
        assert out.mode == 'hold' and 'state' in out.reasons
        np.testing.assert_array_equal(out.command, np.zeros(DOF))


def test_clamped_to_effort_limits_and_scale():
    f = make(max_effort_step=2.0, effort_limit_scale=0.5)
    out = f.step(NOW, state(), cmd([100.0, -100.0, 3.0]))
    np.testing.assert_allclose(out.command, [10.0, -10.0, 3.0])
    assert out.clamped


def test_rate_limit_ramps_from_last_command():
    f = make(max_effort_step=0.1)  # 2, 2, 1 Nm per period
    outs = [f.step(NOW, state(), cmd([20.0, -20.0, 10.0])).command for _ in range(12)]
    np.testing.assert_allclose(outs[0], [2.0, -2.0, 1.0])
    np.testing.assert_allclose(outs[4], [10.0, -10.0, 5.0])
    np.testing.assert_allclose(outs[-1], [20.0, -20.0, 10.0])


def test_hold_bypasses_rate_limit_and_leaving_hold_is_rate_limited():
    f = make(max_effort_step=0.1, hold_damping=0.0)
    for _ in range(10):
        f.step(NOW, state(), cmd([20.0, 20.0, 10.0]))
    out = f.step(NOW, state(), None, None)           # everything went silent
    assert out.mode == 'hold'
    np.testing.assert_array_equal(out.command, np.zeros(DOF))  # at once, not ramped
    out = f.step(NOW, state(), cmd([20.0, 20.0, 10.0]))
    np.testing.assert_allclose(out.command, [2.0, 2.0, 1.0])


def test_joint_limit_refusal_falls_to_policy_that_pushes_back():
    f = make(max_effort_step=2.0, joint_limit_margin=0.1, limit_lookahead_s=0.1)
    near_top = state(q=(1.85, 0.0, 0.0), qd=(1.0, 0.0, 0.0))  # 1.85 + 0.1 > 2.0 - 0.1
    out = f.step(NOW, near_top, cmd([5.0, 0.0, 0.0]), cmd([-5.0, 0.0, 0.0]))
    assert out.mode == 'policy' and 'upper limit' in out.reasons['mpc']
    out = f.step(NOW, near_top, cmd([5.0, 0.0, 0.0]), cmd([1.0, 0.0, 0.0]))
    assert out.mode == 'hold'
    assert out.command[0] < 0  # damping brakes the motion towards the limit
    # Far from the limits the same push is fine.
    assert f.step(NOW, state(), cmd([5.0, 0.0, 0.0])).mode == 'mpc'


def test_caller_prediction_is_used_for_the_limit_check():
    f = make(max_effort_step=2.0, joint_limit_margin=0.1)
    ok = f.step(NOW, state(), cmd([0.0, -3.0, 0.0], predicted_q=[0.0, -0.5, 0.0]))
    assert ok.mode == 'mpc'
    bad = f.step(NOW, state(), cmd([0.0, -3.0, 0.0], predicted_q=[0.0, -0.95, 0.0]))
    assert bad.mode == 'hold' and 'lower limit' in bad.reasons['mpc']


def test_joint_limit_violation_allows_pushing_back_in():
    lo, hi = np.array([-1.0]), np.array([1.0])
    assert joint_limit_violation(np.array([1.2]), np.array([0.0]), np.array([-1.0]), lo, hi, 0.1) is None
    assert joint_limit_violation(np.array([1.2]), np.array([0.0]), np.array([1.0]), lo, hi, 0.1)
    assert joint_limit_violation(np.array([0.0]), np.array([0.0]), np.array([1.0]), lo, hi, 0.1) is None


def test_settings_validation_names_the_problem():
    assert SafetySettings().errors() == []
    errs = SafetySettings(command_timeout_s=-1.0, hold_damping=float('nan'),
                          allow_missing_uncertainty=1).errors()
    assert any('command_timeout_s' in e for e in errs)
    assert any('hold_damping' in e for e in errs)
    assert any('allow_missing_uncertainty' in e for e in errs)
    with pytest.raises(ValueError, match='command_timeout_s'):
        make(command_timeout_s=0.0)
    with pytest.raises(ValueError):
        SafetyLimits(np.zeros(2), np.ones(3), np.ones(2))


def test_as_vector_rejects_everything_but_n_finite_numbers():
    assert as_vector([1, 2, 3], 3).dtype == float
    for bad in (None, 'abc', [1, 2], [[1, 2, 3]], [1, None, 3], [10 ** 400, 0, 0], {'a': 1}, [1, 'x', 3]):
        assert as_vector(bad, 3) is None


# ---- property: whatever arrives, the output is safe ------------------------------------------
finite = st.floats(-1e3, 1e3, allow_nan=False)
anything_float = st.floats(allow_nan=True, allow_infinity=True)
vectors = st.one_of(
    st.none(), st.text(max_size=3),
    st.lists(anything_float, min_size=DOF - 1, max_size=DOF + 1),
    st.lists(finite, min_size=DOF, max_size=DOF),
    st.lists(st.floats(-1e12, 1e12), min_size=DOF, max_size=DOF),
)
stamps = st.one_of(st.none(), anything_float, st.floats(NOW - 0.3, NOW + 0.1), st.just(NOW))
fresh = st.floats(NOW - 0.09, NOW)
big_efforts = st.lists(st.floats(-50.0, 50.0), min_size=DOF, max_size=DOF)
# Well-formed inputs are drawn often enough that mpc/policy modes (and the rate limit) are
# exercised, not only hold.
good_commands = st.builds(CommandSample, values=big_efforts, stamp=fresh,
                          disagreement=st.floats(0.0, 1.0), predicted_q=st.none())
any_commands = st.builds(
    CommandSample, values=vectors, stamp=stamps,
    disagreement=st.one_of(st.none(), anything_float, st.floats(0, 2), st.text(max_size=2)),
    predicted_q=st.one_of(st.none(), vectors))
commands = st.one_of(good_commands, good_commands, st.none(), any_commands)
good_states = st.builds(StateSample, q=st.lists(st.floats(-1.2, 1.2), min_size=DOF, max_size=DOF),
                        qd=st.lists(st.floats(-3.0, 3.0), min_size=DOF, max_size=DOF), stamp=fresh)
states = st.one_of(good_states, good_states, good_states, st.none(), st.builds(StateSample, q=vectors, qd=vectors, stamp=stamps))
periods = st.lists(st.tuples(states, commands, commands), min_size=1, max_size=25)
filter_settings = st.builds(
    SafetySettings, max_effort_step=st.floats(0.01, 1.0), hold_damping=st.floats(0.0, 100.0),
    effort_limit_scale=st.floats(0.0, 1.0), allow_missing_uncertainty=st.booleans(),
    uncertainty_threshold=st.floats(0.0, 2.0) | st.just(1.0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(periods=periods, cfg=filter_settings)
def test_property_every_output_is_finite_bounded_and_rate_limited(periods, cfg):
    f = SafetyFilter(LIMITS, cfg)
    limit = LIMITS.effort_max * cfg.effort_limit_scale
    step = LIMITS.effort_max * cfg.max_effort_step
    last = np.zeros(DOF)
    for s, mpc, pol in periods:
        out = f.step(NOW, s, mpc, pol)
        u = out.command
        assert u.shape == (DOF,) and u.dtype == float
        assert np.all(np.isfinite(u))
        assert np.all(np.abs(u) <= limit + 1e-9)
        assert out.mode in ('mpc', 'policy', 'hold')
        if out.mode != 'hold':
            # Only hold (dissipative) may jump; a planner/policy command is always ramped.
            assert np.all(np.abs(u - last) <= step + 1e-9)
            src = mpc if out.mode == 'mpc' else pol
            assert as_vector(src.values, DOF) is not None
        else:
            qd = None if s is None else as_vector(s.qd, DOF)
            if qd is not None and 'state' not in out.reasons:
                np.testing.assert_allclose(u, np.clip(-cfg.hold_damping * qd, -limit, limit))
        last = u


def test_for_robot_uses_the_robot_limits():
    from mbrl_ros.core.robot import RobotModel
    robot = RobotModel.load('arm7')
    f = SafetyFilter.for_robot(robot, SafetySettings(max_effort_step=2.0))
    s = StateSample(robot.home_q, np.zeros(robot.dof), NOW)
    out = f.step(NOW, s, CommandSample(np.full(robot.dof, 1e6), NOW, 0.0))
    assert out.mode == 'mpc'
    np.testing.assert_allclose(out.command, robot.effort_max)


# ---- the limits the filter tells the planners ------------------------------------------------------
def test_command_limits_are_what_the_filter_enforces():
    from mbrl_ros.core.safety import CommandLimits
    f = make(effort_limit_scale=0.3, max_effort_step=0.1, joint_limit_margin=0.2, allow_missing_uncertainty=True)
    lim = f.command_limits
    assert np.allclose(lim.effort, 0.3 * LIMITS.effort_max) and np.allclose(lim.step, 0.1 * LIMITS.effort_max)
    assert np.allclose(lim.joint_margin, 0.2)
    rng = np.random.default_rng(0)
    for _ in range(200):
        u = rng.uniform(-30, 30, DOF)
        last = f.last_command.copy()
        out = f.step(NOW, state(), cmd(u, dis=None))
        # The planners' model of the filter is the filter: bound(u, last) is what it sent.
        assert np.array_equal(out.command, lim.bound(u, last))
    f.configure(f.settings.replace(effort_limit_scale=0.5))
    assert np.allclose(f.command_limits.effort, 0.5 * LIMITS.effort_max)
    assert not f.command_limits.same_as(lim) and lim.same_as(CommandLimits(lim.effort, lim.step, lim.joint_margin))


@pytest.mark.parametrize('bad', [
    dict(effort=[1.0, np.nan, 1.0]), dict(step=[1.0, 0.0, 1.0]), dict(joint_margin=[-0.1, 0, 0]),
    dict(effort=[1.0, 1.0]), dict(step=[np.inf, 1, 1]), dict(effort=[])])
def test_command_limits_refuse_malformed_values(bad):
    from mbrl_ros.core.safety import CommandLimits
    fields = dict(effort=[1.0, 1.0, 1.0], step=[0.1, 0.1, 0.1], joint_margin=[0.05] * 3) | bad
    with pytest.raises(ValueError):
        CommandLimits(**fields)
