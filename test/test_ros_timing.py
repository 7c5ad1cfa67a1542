"""The timing pieces of the ROS closed loop, without ROS: the control loop's wake-up (the safety
filter forwards a fresh command as it arrives) and the delay compensation (the MPC plans from
the state predicted for the time its command will act)."""
import threading
import time

import numpy as np
import pytest

from mbrl_ros.core.estimation import DelayCompensator
from mbrl_ros.ros.control_loop import ControlLoop


# ---- ControlLoop.wake ---------------------------------------------------------------------------
def _run_loop(rate_hz, body, **kw):
    ticks = []
    loop = ControlLoop(lambda: ticks.append(time.monotonic()), rate_hz, **kw)
    loop.start()
    try:
        body(loop, ticks)
    finally:
        loop.stop()
    return loop, ticks


def test_wake_runs_the_cycle_long_before_its_deadline():
    """At 2 Hz the next deadline is 0.5 s away; a wake-up runs the cycle at once (well under it,
    even on a loaded machine)."""
    delays = []

    def body(loop, ticks):
        time.sleep(0.3)                  # the first cycle ran at start; the next is due at 0.5 s
        for _ in range(3):
            n = len(ticks)
            t = time.monotonic()
            loop.wake()
            assert ControlLoopWait.until(lambda: len(ticks) > n, 2.0)
            delays.append(ticks[n] - t)
            time.sleep(0.3)              # > min_interval (0.25 s) since the woken cycle
    loop, _ = _run_loop(2.0, body)
    assert loop.woken == 3
    assert max(delays) < 0.2, delays     # vs 0.2-0.5 s without the wake-up


def test_after_a_wake_the_deadline_is_one_period_plus_grace_later():
    """A source at the loop's own rate drives it: woken every 0.2 s at 5 Hz, no deadline cycle
    fires in between (it would be due 0.25 s after each wake-up)."""
    def body(loop, ticks):
        time.sleep(0.05)
        for _ in range(8):
            loop.wake()
            time.sleep(0.2)
    loop, ticks = _run_loop(5.0, body, wake_grace=0.25)
    # 1 start cycle + 8 woken (a loaded machine may let a deadline slip in, or merge two wake-ups).
    assert 6 <= loop.woken <= 8
    assert len(ticks) <= 1 + 8 + 2, np.diff(ticks)


def test_wakes_cannot_run_the_loop_faster_than_min_interval():
    stop = threading.Event()

    def body(loop, ticks):
        def flood():
            while not stop.is_set():
                loop.wake()
                time.sleep(0.0005)
        th = threading.Thread(target=flood)
        th.start()
        time.sleep(1.0)
        stop.set()
        th.join()
    loop, ticks = _run_loop(10.0, body, min_interval=0.5)   # at most one cycle per 50 ms
    gaps = np.diff(ticks)
    assert len(ticks) <= 1.0 / 0.05 + 2, len(ticks)
    assert gaps.min() >= 0.05 - 0.002, gaps.min()


def test_without_wakes_the_loop_keeps_its_rate_and_stops_promptly():
    def body(loop, ticks):
        time.sleep(0.5)
    loop, ticks = _run_loop(40.0, body)
    assert loop.woken == 0
    assert 5 <= len(ticks) <= 22, len(ticks)    # ~20 at 40 Hz in 0.5 s; loose for load
    t = time.monotonic()
    assert not loop.running and time.monotonic() - t < 0.1


class ControlLoopWait:
    @staticmethod
    def until(fn, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if fn():
                return True
            time.sleep(0.001)
        return False


# ---- DelayCompensator ---------------------------------------------------------------------------
class DoubleIntegratorEnsemble:
    """An exact 'ensemble' of a unit-inertia double integrator per joint (dt = 0.02): members
    differ by +-eps so the mean is exact. predict -> (mean, logvar) (E,B,S) deltas."""

    def __init__(self, dof=2, dt=0.02, members=3, eps=1e-3):
        self.dof, self.dt = dof, dt
        self.offsets = np.linspace(-eps, eps, members)

    def predict(self, states, actions):
        s, a = np.asarray(states, float), np.asarray(actions, float)
        q, qd = s[:, :self.dof], s[:, self.dof:]
        d = np.concatenate([qd * self.dt + 0.5 * a * self.dt ** 2, a * self.dt], axis=1)
        mean = np.stack([d + o for o in self.offsets])
        return mean, np.zeros_like(mean)


def test_prediction_of_whole_steps_follows_the_model():
    ens = DoubleIntegratorEnsemble()
    comp = DelayCompensator(ens, dt=0.02)
    x = np.array([0.1, -0.2, 1.0, 0.5])
    u = np.array([2.0, -1.0])
    got = comp.predict(x, u, 0.04)
    t = 0.04
    want = np.concatenate([x[:2] + x[2:] * t + 0.5 * u * t ** 2, x[2:] + u * t])
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_a_fraction_of_a_step_is_interpolated_and_no_delay_is_the_measurement():
    ens = DoubleIntegratorEnsemble()
    comp = DelayCompensator(ens, dt=0.02)
    x = np.array([0.0, 0.0, 1.0, -1.0])
    u = np.array([0.0, 0.0])
    np.testing.assert_allclose(comp.predict(x, u, 0.03), [0.03, -0.03, 1.0, -1.0], atol=1e-9)
    for d in (0.0, -0.01, float('nan')):
        np.testing.assert_array_equal(comp.predict(x, u, d), x)


def test_prediction_is_capped_and_never_non_finite():
    class Broken(DoubleIntegratorEnsemble):
        def predict(self, states, actions):
            m, lv = super().predict(states, actions)
            return m * np.nan, lv
    x = np.array([0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(DelayCompensator(Broken(), 0.02).predict(x, np.zeros(2), 0.02), x)
    capped = DelayCompensator(DoubleIntegratorEnsemble(), 0.02, max_delay_s=0.04).predict(x, np.zeros(2), 5.0)
    np.testing.assert_allclose(capped, [0.04, 0.04, 1.0, 1.0], atol=1e-9)


def test_needs_a_positive_dt():
    with pytest.raises(ValueError):
        DelayCompensator(DoubleIntegratorEnsemble(), 0.0)


# ---- over DDS: the safety filter forwards a fresh MPC command on arrival ------------------------
@pytest.mark.ros
def test_safety_filter_forwards_a_fresh_mpc_command_on_arrival_not_at_its_phase():
    """At 1 Hz the filter's own deadline is up to 1 s away; a command arriving in between is
    forwarded at once (forward_on_arrival), and waits for the deadline when that is switched off."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from mbrl_ros.ros.conversions import sec_to_stamp
    from mbrl_ros.testing.node_process import Feeder, NodeProcess
    from mbrl_ros.testing.ros_probe import RosProbe

    names = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']
    with RosProbe('forward_on_arrival_test') as probe, \
            NodeProcess('safety_filter', 'robot:=arm3', 'control_rate_hz:=1.0', 'command_timeout_s:=2.0',
                        'allow_missing_uncertainty:=true', 'max_effort_step:=2.0') as proc:
        out = probe.subscribe('/forward_effort_controller/commands', Float64MultiArray, 100)
        state_pub = probe.publisher('/mbrl/state', JointState, 10)
        mpc_pub = probe.publisher('/mbrl/mpc/command', JointState, 10)

        def state(k):
            m = JointState(name=names, position=[0.2, 0.5, 0.4], velocity=[0.0] * 3)
            m.header.stamp = sec_to_stamp(time.time())
            state_pub.publish(m)
        feeder = Feeder(state, 0.01)
        try:
            assert probe.wait_until(lambda: len(out) >= 2, 40.0), proc.log_text()

            def latencies(values):
                got = []
                for v in values:
                    time.sleep(0.37)  # (not a divisor of the period: the phases vary)
                    cmd = JointState(name=names, effort=[v, 0.0, 0.0])
                    cmd.header.stamp = sec_to_stamp(time.time())
                    t = time.time()
                    mpc_pub.publish(cmd)
                    seen = probe.wait_until(lambda: next((tr for tr, m in list(out) if tr >= t
                                                          and abs(m.data[0] - v) < 1e-9), None), 3.0)
                    assert seen is not None, proc.log_text()
                    got.append(seen - t)
                return np.array(got)
            fast = latencies([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
            ok, why = probe.set_param('/safety_filter', 'forward_on_arrival', False)
            assert ok, why
            slow = latencies([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0])
        finally:
            feeder.close()
        proc.alive()
    # On arrival: a few ms (generous bound for a loaded machine); at the filter's 1 Hz phase: 0-1 s,
    # 0.5 s on average (for uniform phases the mean of 8 is below 0.2 s with probability ~2e-3).
    assert np.median(fast) < 0.15, fast
    assert slow.mean() > 0.2 and slow.mean() > 2 * np.median(fast), (fast, slow)
