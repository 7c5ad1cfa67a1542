"""Unit tests of the ROS-free joint state estimator (mbrl_ros/core/estimation.py)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbrl_ros.core.estimation import FilterConfig, JointStateEstimator

NAMES = ['j1', 'j2', 'j3']
DT = 0.004  # 250 Hz, the sim's default joint_states rate


def make(**kw):
    cfg = {k: kw.pop(k) for k in list(kw) if hasattr(FilterConfig, k)}
    return JointStateEstimator(NAMES, FilterConfig(**cfg), **kw)


# ---- ordering and validation ------------------------------------------------------------
def test_reorders_into_robot_order_and_passes_effort_through():
    est = make()
    r = est.update(['j3', 'j1', 'j2'], 1.0, [3.0, 1.0, 2.0], [0.3, 0.1, 0.2], [-3.0, -1.0, -2.0])
    assert r.accepted and r.reason is None
    np.testing.assert_allclose(r.estimate.position, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(r.estimate.velocity, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(r.estimate.effort, [-1.0, -2.0, -3.0])
    assert r.estimate.velocity_measured
    # A different order on the next message is followed too (the order cache must not stick).
    r = est.update(['j2', 'j3', 'j1'], 1.004, [2.0, 3.0, 1.0])
    assert r.accepted
    np.testing.assert_allclose(r.estimate.position, [1.0, 2.0, 3.0], atol=1e-3)
    assert not r.estimate.velocity_measured and r.estimate.effort is None


@pytest.mark.parametrize('names, pos, vel, eff, kind, words', [
    (['j1', 'j2'], [0, 0], None, None, 'missing_joints', ["'j3'"]),
    (['j1', 'j2', 'j3', 'gripper'], [0] * 4, None, None, 'unknown_joints', ["'gripper'"]),
    (['j1', 'j2', 'j2', 'j3'], [0] * 4, None, None, 'duplicate_names', ["'j2'"]),
    (NAMES, [0, 0], None, None, 'length_mismatch', ['3 names', '2 positions']),
    (NAMES, [], None, None, 'length_mismatch', ['0 positions']),
    (NAMES, [0, 0, 0], [0, 0], None, 'length_mismatch', ['2 velocities']),
    (NAMES, [0, 0, 0], None, [1, 2, 3, 4], 'length_mismatch', ['4 efforts']),
    (NAMES, [0, math.nan, 0], None, None, 'non_finite', ["'j2'"]),
    (NAMES, [0, 0, 0], [0, 0, math.inf], None, 'non_finite', ["'j3'"]),
    ([], [], None, None, 'missing_joints', ["'j1'", "'j2'", "'j3'"]),
])
def test_each_rejection_is_counted_with_a_specific_reason(names, pos, vel, eff, kind, words):
    est = make()
    r = est.update(names, 1.0, pos, vel, eff)
    assert not r.accepted and r.kind == kind
    for w in words:
        assert w in r.reason, r.reason
    assert est.counters[kind] == 1 and est.counters['accepted'] == 0
    assert est.rejected_total == 1
    assert est.last is None  # nothing reached the output


@pytest.mark.parametrize('stamp', [math.nan, math.inf, -1.0, 'soon', None])
def test_bad_stamp_rejected(stamp):
    est = make()
    r = est.update(NAMES, stamp, [0, 0, 0])
    assert not r.accepted and r.kind == 'bad_stamp'


def test_extra_joints_can_be_ignored_when_asked():
    est = make(ignore_unknown_joints=True)
    # A NaN on a joint we do not control (e.g. a gripper) must not block the arm's state.
    r = est.update(['gripper', 'j2', 'j1', 'j3'], 1.0, [math.nan, 2, 1, 3])
    assert r.accepted
    np.testing.assert_allclose(r.estimate.position, [1, 2, 3])


def test_non_finite_effort_is_dropped_not_the_sample():
    est = make()
    r = est.update(NAMES, 1.0, [0, 0, 0], None, [1, math.nan, 3])
    assert r.accepted and r.estimate.effort is None
    assert est.counters['effort_dropped'] == 1


def test_constructor_refuses_bad_configuration():
    with pytest.raises(ValueError, match='duplicates'):
        JointStateEstimator(['a', 'a'])
    with pytest.raises(ValueError, match='empty'):
        JointStateEstimator([])
    with pytest.raises(ValueError, match='process_noise'):
        JointStateEstimator(NAMES, FilterConfig(process_noise=-1.0))
    with pytest.raises(ValueError, match='stale_timeout_s'):
        JointStateEstimator(NAMES, stale_timeout_s=0.0)


# ---- time handling ----------------------------------------------------------------------
def test_duplicate_and_out_of_order_stamps_are_dropped_and_counted():
    est = make()
    assert est.update(NAMES, 1.000, [0, 0, 0]).accepted
    assert est.update(NAMES, 1.004, [0, 0, 0]).accepted
    r = est.update(NAMES, 1.004, [5, 5, 5])
    assert not r.accepted and r.kind == 'duplicate_stamp'
    r = est.update(NAMES, 1.002, [5, 5, 5])
    assert not r.accepted and r.kind == 'out_of_order'
    assert est.counters['duplicate_stamp'] == 1 and est.counters['out_of_order'] == 1
    assert est.dropped_total == 2
    np.testing.assert_allclose(est.last.position, 0.0)  # the dropped 5s never got in
    assert est.update(NAMES, 1.008, [0, 0, 0]).accepted


def test_clock_jumping_far_back_restarts_instead_of_wedging():
    est = make(gap_timeout_s=0.1)
    for k in range(10):
        est.update(NAMES, 100.0 + k * DT, [1, 1, 1])
    r = est.update(NAMES, 0.0, [2, 2, 2])  # e.g. the simulator was reset
    assert r.accepted and est.counters['clock_jumps'] == 1
    np.testing.assert_allclose(r.estimate.position, 2.0)
    assert est.update(NAMES, DT, [2, 2, 2]).accepted


def test_gap_reinitialises_instead_of_extrapolating():
    est = make(gap_timeout_s=0.05)
    t = 0.0
    for k in range(100):  # moving at 1 rad/s
        t = k * DT
        est.update(NAMES, t, [t, t, t])
    assert est.last.velocity == pytest.approx([1.0] * 3, abs=0.05)
    # 0.5 s of silence, then the arm is somewhere else and at rest.
    r = est.update(NAMES, t + 0.5, [-1.0, 0.0, 1.0])
    assert r.accepted and est.counters['reinitialised'] == 1
    np.testing.assert_allclose(r.estimate.position, [-1.0, 0.0, 1.0])  # no jump filtered in
    np.testing.assert_allclose(r.estimate.velocity, 0.0)  # the old 1 rad/s was forgotten
    # A short gap (below gap_timeout_s) is bridged, not reinitialised.
    est.update(NAMES, t + 0.5 + 0.03, [-1.0, 0.0, 1.0])
    assert est.counters['reinitialised'] == 1


def test_stale_detection_on_the_receiver_clock():
    est = make(stale_timeout_s=0.1)
    assert est.is_stale(0.0)  # nothing received yet
    assert est.age(0.0) is None
    # Stamps in sim time far from the receiver's clock: staleness ignores them.
    est.update(NAMES, 5.0, [0, 0, 0], received=1000.0)
    assert not est.is_stale(1000.05)
    assert est.is_stale(1000.15)
    assert est.age(1000.15) == pytest.approx(0.15)
    # Rejected or dropped samples do not count as fresh input.
    est.update(NAMES, 5.0, [0, 0, 0], received=1000.2)  # duplicate
    est.update(NAMES, 5.1, [math.nan, 0, 0], received=1000.2)  # non-finite
    assert est.is_stale(1000.2)
    est.update(NAMES, 5.2, [0, 0, 0], received=1000.3)
    assert not est.is_stale(1000.3)


# ---- filtering quality ------------------------------------------------------------------
def _sine_run(est, noise_std, seed=0, n=1500, jitter=0.25, send_velocity=False):
    """Track three sines with noisy positions at a jittery ~250 Hz; returns errors after 1 s."""
    rng = np.random.default_rng(seed)
    amp = np.array([0.5, 1.0, 0.2])
    w = 2 * np.pi * np.array([0.5, 1.0, 2.0])
    t = 0.0
    out = {'vel': [], 'pos': [], 'raw': [], 'fd': []}
    prev = None
    for k in range(n):
        t += DT * (1 + jitter * rng.uniform(-1, 1))
        p, v = amp * np.sin(w * t), amp * w * np.cos(w * t)
        z = p + rng.normal(0, noise_std, 3)
        zv = v + rng.normal(0, noise_std * 50, 3) if send_velocity else None
        r = est.update(NAMES, t, z, zv)
        assert r.accepted
        if k > 250:
            out['vel'].append(r.estimate.velocity - v)
            out['pos'].append(r.estimate.position - p)
            out['raw'].append(z - p)
            out['fd'].append((z - prev[1]) / (t - prev[0]) - v)
        prev = (t, z)
    return {k: np.sqrt(np.mean(np.square(v), axis=0)) for k, v in out.items()}


def test_velocity_estimate_converges_on_noisy_sine_without_measured_velocity():
    rms = _sine_run(make(position_noise_std=1e-3, process_noise=10.0), noise_std=1e-3)
    # Velocity amplitudes are 1.6, 6.3 and 2.5 rad/s; a naive finite difference has ~0.35 rms.
    assert np.all(rms['vel'] < 0.25), rms
    assert np.all(rms['vel'] < 0.6 * rms['fd']), rms


def test_velocity_estimate_with_small_noise_is_tight():
    rms = _sine_run(make(), noise_std=1e-5)
    assert np.all(rms['vel'] < 0.06), rms  # mostly the half-sample lag of any causal estimate
    assert np.all(rms['pos'] < 2e-4), rms


def test_measured_velocity_is_used_and_smoothed():
    rms = _sine_run(make(position_noise_std=1e-3, velocity_noise_std=5e-2), noise_std=1e-3,
                    send_velocity=True)
    assert np.all(rms['vel'] < 0.05), rms  # the measured 0.05 rms noise, not finite-difference noise


@pytest.mark.parametrize('process_noise, pos_ratio, vel_ratio', [(10.0, 0.75, 0.2), (0.1, 0.35, 0.01)])
def test_filter_reduces_noise_variance_of_a_still_joint(process_noise, pos_ratio, vel_ratio):
    # Less process noise = more smoothing; the ratios are ~1.2x the measured ones for seed 1.
    est = make(position_noise_std=1e-3, process_noise=process_noise)
    rng = np.random.default_rng(1)
    raw, pos, vel = [], [], []
    for k in range(2000):
        z = np.array([0.3, -0.2, 1.0]) + rng.normal(0, 1e-3, 3)
        r = est.update(NAMES, k * DT, z)
        if k > 200:
            raw.append(z)
            pos.append(r.estimate.position)
            vel.append(r.estimate.velocity)
    raw, pos, vel = map(np.array, (raw, pos, vel))
    assert np.all(pos.var(axis=0) < pos_ratio * raw.var(axis=0)), (pos.var(axis=0), raw.var(axis=0))
    fd_var = 2 * 1e-6 / DT ** 2  # variance of a finite difference of the raw samples
    assert np.all(vel.var(axis=0) < vel_ratio * fd_var), vel.var(axis=0) / fd_var
    np.testing.assert_allclose(pos.mean(axis=0), [0.3, -0.2, 1.0], atol=2e-4)


def test_velocity_estimated_on_a_ramp_at_variable_rate():
    est = make()
    rng = np.random.default_rng(2)
    t = 0.0
    for _ in range(300):
        t += rng.uniform(0.001, 0.02)  # 50..1000 Hz, as a flaky driver might
        r = est.update(NAMES, t, [2 * t, -t, 0.5 * t])
    np.testing.assert_allclose(r.estimate.velocity, [2.0, -1.0, 0.5], atol=1e-3)


# ---- robustness -------------------------------------------------------------------------
_junk = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=3), st.lists(st.floats(allow_nan=True), max_size=5),
                  st.lists(st.text(max_size=2), max_size=5))


@settings(max_examples=300, deadline=None)
@given(names=st.one_of(st.lists(st.sampled_from(NAMES + ['x', '']), max_size=5), _junk),
       stamp=_junk, pos=_junk, vel=_junk, eff=_junk)
def test_any_input_is_refused_or_accepted_never_raises(names, stamp, pos, vel, eff):
    est = make()
    est.update(NAMES, 0.0, [0, 0, 0])
    r = est.update(names, stamp, pos, vel, eff)
    if r.accepted:
        assert np.isfinite(r.estimate.position).all() and np.isfinite(r.estimate.velocity).all()
    else:
        assert r.reason and r.kind in est.counters
    # Whatever came before, a good sample is still accepted and finite afterwards.
    r = est.update(NAMES, 1e6, [0, 0, 0])
    assert r.accepted and np.isfinite(r.estimate.velocity).all()
