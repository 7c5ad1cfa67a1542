"""state_estimator node over real DDS: a real node process, /joint_states published by the test."""
import math
import time

import numpy as np
import pytest

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState

from mbrl_ros.ros.conversions import sec_to_stamp, stamp_to_sec
from mbrl_ros.testing.node_process import NodeProcess

ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']
NODE = '/state_estimator'


def estimator_process(*params):
    return NodeProcess('state_estimator', 'robot:=arm3', *params)


class Harness:
    def __init__(self, probe, proc: NodeProcess):
        self.probe, self.proc = probe, proc
        self.pub = probe.publisher('/joint_states', JointState, 10)
        self.out = probe.subscribe('/mbrl/state', JointState, 100)
        self.diag = probe.subscribe('/diagnostics', DiagnosticArray, 50)

    def msg(self, names=ARM3, pos=(0.0, 0.0, 0.0), vel=(), eff=(), stamp=None):
        m = JointState(name=list(names), position=[float(x) for x in pos],
                       velocity=[float(x) for x in vel], effort=[float(x) for x in eff])
        m.header.stamp = sec_to_stamp(time.time() if stamp is None else stamp)
        return m

    def wait_ready(self, timeout=30.0):
        """Until a valid message makes it through (discovery done both ways)."""
        start = len(self.out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.alive()
            self.pub.publish(self.msg())
            if len(self.out) > start:
                time.sleep(0.2)
                return
            time.sleep(0.05)
        pytest.fail('no /mbrl/state from the node:\n' + self.proc.log_text())

    def stream(self, n, rate_hz, make):
        """Publish make(k, t) at a steady rate, stamped with the wall clock."""
        period = 1.0 / rate_hz
        t0 = time.monotonic()
        for k in range(n):
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.pub.publish(make(k, time.time()))

    def statuses(self, since=0.0):
        return [s for t, a in list(self.diag) if t >= since for s in a.status if s.name == NODE]


@pytest.fixture(scope='module')
def node(probe):
    with estimator_process('stale_timeout_s:=0.1') as proc:
        h = Harness(probe, proc)
        h.wait_ready()
        yield h
        proc.alive()


def test_reorders_into_robot_joint_order(node):
    n0 = len(node.out)
    node.pub.publish(node.msg(names=['arm3_joint3', 'arm3_joint1', 'arm3_joint2'],
                              pos=[0.3, 0.1, 0.2], vel=[3.0, 1.0, 2.0], eff=[-3.0, -1.0, -2.0]))
    assert node.probe.wait_until(lambda: len(node.out) > n0, 5.0)
    _, m = node.out[n0]
    assert list(m.name) == ARM3
    np.testing.assert_allclose(m.position, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(m.velocity, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(m.effort, [-1.0, -2.0, -3.0])


def test_velocity_estimated_when_input_has_none(node):
    rates = np.array([0.5, -1.0, 2.0])
    t0 = time.time()
    n0 = len(node.out)
    node.stream(200, 250.0, lambda k, t: node.msg(pos=rates * (t - t0), stamp=t))  # position and stamp agree
    assert node.probe.wait_until(lambda: len(node.out) >= n0 + 150, 5.0), len(node.out) - n0
    _, last = node.out[-1]
    assert list(last.velocity), 'no velocity in /mbrl/state'
    np.testing.assert_allclose(last.velocity, rates, atol=0.05)
    assert len(last.effort) == 0  # none in, none out


def test_latency_from_joint_states_stamp(node):
    n0 = len(node.out)
    stamps = set()

    def make(k, t):
        m = node.msg(pos=[0.1 * math.sin(t), 0.0, 0.0])
        stamps.add((m.header.stamp.sec, m.header.stamp.nanosec))
        return m
    node.stream(1250, 250.0, make)  # 5 s
    node.probe.wait_until(lambda: len(node.out) >= n0 + 1250, 3.0)
    got = [(t, m) for t, m in list(node.out)[n0:]
           if (m.header.stamp.sec, m.header.stamp.nanosec) in stamps]
    lat = np.array([1e3 * (t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)) for t, m in got])
    p50, p99, worst = np.percentile(lat, 50), np.percentile(lat, 99), lat.max()
    summary = f'{len(lat)} msgs: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms'
    print(summary)
    assert len(lat) >= 1000, f'only {len(lat)} of 1250 came back; ' + summary
    # Republished on arrival, one out per message in (a 100 Hz timer would pass about 500 of the 1250
    # on). The latency figures are `mbrl-ros bench sim`'s: a bound on them here would time this test
    # process on a loaded machine (p50 1.2 ms on a quiet one, 3.5 ms while a suite ran beside it), so
    # only a stall of a second fails.
    assert worst < 1000.0, summary


def test_stale_input_stops_output_and_reports_error_then_recovers(node):
    node.stream(100, 250.0, lambda k, t: node.msg())
    stopped = time.time()
    err = node.probe.wait_until(lambda: next(
        (s for s in node.statuses(stopped) if s.level == DiagnosticStatus.ERROR), None), 3.0)
    assert err is not None, [s.message for s in node.statuses(stopped)]
    assert 'stale' in err.message
    err_seen = min(t for t, a in list(node.diag) for s in a.status
                   if s.name == NODE and s.level == DiagnosticStatus.ERROR and t >= stopped)
    late = [t for t, _ in list(node.out) if t > err_seen]
    assert not late, f'{len(late)} /mbrl/state published after input stopped and went stale'
    # Input resumes: output comes back and diagnostics return to OK.
    resumed = time.time()
    node.stream(300, 250.0, lambda k, t: node.msg())
    assert any(t > resumed for t, _ in list(node.out))
    ok = node.probe.wait_until(lambda: next(
        (s for s in node.statuses(resumed) if s.level == DiagnosticStatus.OK), None), 3.0)
    assert ok is not None, [s.message for s in node.statuses(resumed)]


def test_malformed_messages_crash_nothing_and_produce_no_output(node):
    t = time.time()
    good = node.msg(stamp=t)
    bad = [
        node.msg(names=[], pos=[0.1, 0.2, 0.3], stamp=t + 0.01),                    # missing names
        node.msg(names=ARM3[:2], pos=[0.1, 0.2], stamp=t + 0.02),                   # missing a joint
        node.msg(names=ARM3 + ['gripper'], pos=[0, 0, 0, 0], stamp=t + 0.025),       # unknown joint
        node.msg(pos=[0.1, math.nan, 0.3], stamp=t + 0.03),                         # NaN
        node.msg(pos=[0.1, 0.2, 0.3], vel=[math.inf, 0, 0], stamp=t + 0.04),        # inf velocity
        node.msg(pos=[0.1, 0.2], stamp=t + 0.05),                                   # lengths differ
        node.msg(pos=[0.1, 0.2, 0.3], vel=[1.0], stamp=t + 0.06),                   # lengths differ
        node.msg(pos=[0.1, 0.2, 0.3], eff=[1.0, 2.0], stamp=t + 0.07),              # lengths differ
        node.msg(names=[], pos=[], stamp=t + 0.08),                                 # empty
        JointState(),                                                               # empty, no stamp
        node.msg(names=['a', 'a', 'b'], pos=[0, 0, 0], stamp=t + 0.09),             # repeated names
        node.msg(stamp=t),                                                          # duplicate stamp
        node.msg(stamp=t - 0.001),                                                  # out of order
    ]
    n0 = len(node.out)
    node.pub.publish(good)
    assert node.probe.wait_until(lambda: len(node.out) > n0, 5.0)
    n1 = len(node.out)
    for m in bad:
        node.pub.publish(m)
        time.sleep(0.01)
    time.sleep(0.5)
    node.proc.alive()
    # Outputs carry their input's stamp: none may come from a bad message (a late delivery from
    # an earlier test's stream, stamped before `good`, is not this test's concern).
    from_bad = [(stamp_to_sec(m.header.stamp), list(m.position)) for _, m in list(node.out)[n1:]
                if stamp_to_sec(m.header.stamp) >= t - 0.002]
    assert not from_bad, from_bad
    # Still alive and working, and the refusals are counted in diagnostics.
    node.pub.publish(node.msg(stamp=time.time()))
    assert node.probe.wait_until(lambda: len(node.out) > n1, 5.0)
    since = time.time()

    def counted():
        for s in node.statuses(since):
            kv = {v.key: v.value for v in s.values}
            if int(kv.get('rejected_total', 0)) >= 11 and int(kv.get('dropped_total', 0)) >= 2:
                return kv
        return None
    kv = node.probe.wait_until(counted, 3.0)
    assert kv is not None, [{v.key: v.value for v in s.values} for s in node.statuses(since)]
    assert int(kv['non_finite']) >= 2 and int(kv['length_mismatch']) >= 3
    assert int(kv['internal_errors']) == 0


def test_parameters_live_and_static(node):
    ok, reason = node.probe.set_param(NODE, 'process_noise', 100.0)
    assert ok, reason
    assert node.probe.get_param(NODE, 'process_noise') == 100.0
    ok, reason = node.probe.set_param(NODE, 'process_noise', -1.0)
    assert not ok and 'range' in reason
    ok, reason = node.probe.set_param(NODE, 'robot', 'arm7')
    assert not ok and ('read-only' in reason or 'static' in reason), reason
    # The node still runs after the changes.
    n0 = len(node.out)
    node.pub.publish(node.msg())
    assert node.probe.wait_until(lambda: len(node.out) > n0, 5.0)


def test_joint_names_override_and_bad_robot_fails_clearly(probe):
    with estimator_process('joint_names:=[b, a]') as proc:
        h = Harness(probe, proc)
        deadline = time.monotonic() + 30
        while not h.out and time.monotonic() < deadline and proc.poll() is None:
            h.pub.publish(h.msg(names=['a', 'b'], pos=[1.0, 2.0]))
            time.sleep(0.05)
        assert h.out, proc.log_text()
        _, m = h.out[-1]
        assert list(m.name) == ['b', 'a']
        np.testing.assert_allclose(m.position, [2.0, 1.0])
    with estimator_process('robot:=no_such_arm') as proc:
        assert proc.wait(timeout=30) == 78  # EX_CONFIG
        assert 'no_such_arm' in proc.log_text()


def test_estimated_velocity_tracks_the_simulated_arm(probe):
    """Against real dynamics: sim_robot drives arm3, the estimator ignores the sim's velocity
    and estimates it from positions; the sim's own (noise-free) velocity is the truth.

    The sim stamps in sim time (publish_clock): its wall-clock stamps are taken at publish
    time, which on a loaded machine is not the time of the state they carry."""
    from std_msgs.msg import Float64MultiArray
    rate = 100.0   # /joint_states, Hz
    with NodeProcess('sim_robot', 'robot:=arm3', 'publish_clock:=true', f'publish_rate_hz:={rate}') as sim, \
            estimator_process('use_measured_velocity:=false') as proc:
        js = probe.subscribe('/joint_states', JointState, 500)
        out = probe.subscribe('/mbrl/state', JointState, 500)
        cmd = probe.publisher('/forward_effort_controller/commands', Float64MultiArray, 10)
        # Both streams flowing here too (discovery is pairwise; the probe may lag the node).
        assert probe.wait_until(lambda: (len(out) > 0 and len(js) > 0) or sim.poll() is not None,
                                30.0) and sim.poll() is None, sim.log_text() + proc.log_text()
        t0 = time.monotonic()
        start = time.time() + 1.0  # judge after the first second of motion
        while time.monotonic() - t0 < 4.0:
            t = time.monotonic() - t0
            cmd.publish(Float64MultiArray(data=[1.5 * math.sin(2 * math.pi * 0.7 * t),
                                                1.0 * math.sin(2 * math.pi * 0.5 * t + 1.0),
                                                0.4 * math.sin(2 * math.pi * 1.1 * t)]))
            time.sleep(0.02)
        judged_s = time.time() - start
        truth = {(m.header.stamp.sec, m.header.stamp.nanosec): np.array(m.velocity)
                 for t, m in list(js)}
        pairs = [(np.array(m.velocity), truth[k]) for t, m in list(out)
                 if t > start and (k := (m.header.stamp.sec, m.header.stamp.nanosec)) in truth]
    # Most states of the judged span (some may be lost to a loaded machine, none should be unmatched).
    assert len(pairs) > 0.6 * rate * judged_s, \
        f'{len(pairs)} matched in {judged_s:.2f} s of {len(out)} /mbrl/state, {len(js)} /joint_states'
    est, true = map(np.array, zip(*pairs))
    speed = np.sqrt(np.mean(true ** 2, axis=0))
    err = np.sqrt(np.mean((est - true) ** 2, axis=0))
    summary = f'velocity rms {speed.round(3)} rad/s, estimate error rms {err.round(4)} rad/s'
    print(summary)
    assert np.all(speed > 0.2), 'the arm hardly moved: ' + summary
    assert np.all(err < 0.03 * speed), summary  # measured ~0.2 %


def test_stale_detected_on_sim_time_without_clock(probe):
    """use_sim_time with a dead simulator: /clock stops too, stale must still be reported."""
    with estimator_process('use_sim_time:=true') as proc:
        h = Harness(probe, proc)
        h.wait_ready()
        h.stream(50, 250.0, lambda k, t: h.msg())
        stopped = time.time()
        err = probe.wait_until(lambda: next(
            (s for s in h.statuses(stopped) if s.level == DiagnosticStatus.ERROR), None), 3.0)
        assert err is not None, proc.log_text()
