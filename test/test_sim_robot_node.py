"""sim_robot over real DDS: real node processes, real topics, services and parameters."""
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mbrl_ros.core.robot import RobotModel
from mbrl_ros.ros.conversions import stamp_to_sec
from mbrl_ros.ros.diagnostics import status_values

pytestmark = pytest.mark.ros

CMD_TOPIC = '/forward_effort_controller/commands'


def start_node(**params):
    args = [sys.executable, '-m', 'mbrl_ros.nodes.sim_robot', '--ros-args']
    for k, v in params.items():
        args += ['-p', f'{k}:={v}']
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_node(proc, sig=signal.SIGINT, timeout=10.0):
    """SIGINT (as Ctrl-C) and the exit code; always leaves no process behind."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Robot:
    """A running sim_robot process plus a probe that watches its topics."""

    def __init__(self, probe, proc, name):
        self.probe, self.proc = probe, proc
        self.model = RobotModel.load(name)
        self.states = probe.subscribe('/joint_states', JointState)
        self.diags = probe.subscribe('/diagnostics', DiagnosticArray)
        self.pub = probe.publisher(CMD_TOPIC, Float64MultiArray)
        if probe.wait_until(lambda: len(self.states) > 5, timeout=20.0) is None:
            stop_node(proc)
            pytest.fail('sim_robot published no /joint_states:\n' + (proc.stdout.read() or ''))
        assert probe.wait_until(lambda: probe.node.count_subscribers(CMD_TOPIC) > 0, 10.0)

    def latest(self):
        return self.states[-1][1]

    def q(self):
        return np.array(self.latest().position)

    def q_after(self, t: float, timeout: float = 5.0):
        """Joint positions of the first /joint_states stamped after wall time `t` (this process may
        receive a backlog late on a loaded machine: the newest received is not the newest sent)."""
        def find():
            first = None
            for _, m in reversed(list(self.states)):   # back to the earliest one after t
                if stamp_to_sec(m.header.stamp) <= t:
                    break
                first = m
            return None if first is None else np.array(first.position)
        q = self.probe.wait_until(find, timeout)
        assert q is not None, f'no /joint_states stamped after {t:.3f} within {timeout} s'
        return q

    def send(self, values):
        self.pub.publish(Float64MultiArray(data=[float(v) for v in values]))

    def hold(self, values, duration, rate=100.0):
        end = time.monotonic() + duration
        while time.monotonic() < end:
            self.send(values)
            time.sleep(1.0 / rate)

    def reset(self):
        res = self.probe.call(Trigger, '/sim_robot/reset')
        assert res.success, res.message
        time.sleep(0.05)  # let a post-reset /joint_states arrive

    def diagnostics(self, after: float, timeout: float = 5.0) -> dict:
        """Key/values of the first sim_robot status published after `after` (time.time())."""
        def find():
            for t, msg in list(self.diags):
                if t < after:
                    continue
                for st in msg.status:
                    if st.name.endswith('sim_robot'):
                        return status_values(st) | {'_message': st.message,
                                                                          '_level': st.level}
            return None
        d = self.probe.wait_until(find, timeout)
        assert d is not None, 'no /diagnostics from sim_robot'
        return d


@pytest.fixture(scope='class')
def arm3(probe):
    proc = start_node(robot='arm3', command_timeout_s=0.1)
    try:
        yield Robot(probe, proc, 'arm3')
    finally:
        assert stop_node(proc) == 0


class TestArm3Node:
    """One arm3 process for these tests (class scope: it is gone before the tests below
    start their own sim_robot, which would otherwise share /joint_states with it)."""

    def test_joint_states_rate_and_content(self, arm3):
        arm3.reset()
        n0, t0 = len(arm3.states), time.monotonic()
        time.sleep(3.0)
        rate = (len(arm3.states) - n0) / (time.monotonic() - t0)
        assert rate == pytest.approx(100.0, rel=0.10)
        msg = arm3.latest()
        assert list(msg.name) == arm3.model.joint_names
        assert len(msg.position) == len(msg.velocity) == len(msg.effort) == 3
        np.testing.assert_allclose(msg.position, arm3.model.home_q, atol=1e-3)
        # Stamps are wall time (no publish_clock) and increase.
        stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for _, m in arm3.states[-50:]]
        assert np.all(np.diff(stamps) > 0) and abs(stamps[-1] - time.time()) < 1.0
        d = arm3.diagnostics(after=time.time())
        assert float(d['publish_rate_hz']) == pytest.approx(100.0, rel=0.15)
        assert float(d['real_time_factor']) == pytest.approx(1.0, rel=0.15)


    def test_positive_effort_moves_joint_positive(self, arm3):
        for k in range(arm3.model.dof):
            arm3.reset()
            q0 = arm3.q_after(time.time())
            cmd = np.zeros(3)
            cmd[k] = 0.3 * arm3.model.effort_max[k]
            arm3.hold(cmd, 0.3)
            dq = arm3.q_after(time.time()) - q0
            assert dq[k] > 0.02, (k, dq)


    def test_watchdog_zeroes_effort(self, arm3, probe):
        arm3.reset()
        after = time.time()
        # The base yaw joint carries no gravity torque: its effort is exactly the command.
        arm3.hold([5.0, 0.0, 0.0], 0.3)
        assert arm3.latest().effort[0] == pytest.approx(5.0, abs=1e-6)
        t_stop = time.monotonic()
        assert probe.wait_until(lambda: abs(arm3.latest().effort[0]) < 1e-9, timeout=2.0)
        assert time.monotonic() - t_stop < 0.1 + 0.4  # timeout + generous slack for a loaded machine
        v_after_trip = abs(arm3.latest().velocity[0])
        time.sleep(0.5)
        assert abs(arm3.latest().velocity[0]) < v_after_trip  # coasting down under joint damping
        d = arm3.diagnostics(after=after + 0.5)
        assert int(d['watchdog_trips']) >= 1 and d['watchdog_active'] == 'True'


    def test_malformed_commands_are_rejected_and_not_applied(self, arm3):
        arm3.reset()
        q0, effort0 = arm3.q(), np.array(arm3.latest().effort)
        before = arm3.diagnostics(after=time.time())
        bad = [[], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [math.nan, 0.0, 0.0], [0.0, math.inf, 0.0],
               [0.0, 0.0, -math.inf], [1e9, 0.0, 0.0], [0.0, 25.0, 0.0], [0.0, 0.0, -10.5]]
        for _ in range(3):
            for b in bad:
                arm3.send(b)
                time.sleep(0.03)
        time.sleep(0.2)
        assert arm3.proc.poll() is None, 'sim_robot died'
        np.testing.assert_allclose(arm3.q(), q0, atol=1e-4)
        np.testing.assert_allclose(arm3.latest().effort, effort0, atol=1e-6)  # gravity comp only
        d = arm3.diagnostics(after=time.time())
        sent = 3 * len(bad)
        rejected = int(d['rejected_commands']) - int(before['rejected_commands'])
        # Best effort, depth 1: a burst may coalesce, but every one that arrives is rejected.
        assert 0.8 * sent <= rejected <= sent
        assert 'beyond limits' in d['last_rejection']  # the last one sent: joint3 over its limit
        assert int(d['commands_received']) - int(before['commands_received']) == rejected
        # A good command after all that still works.
        arm3.hold([0.0, 5.0, 0.0], 0.2)
        assert arm3.q()[1] > q0[1] + 0.01


    def test_reset_returns_home_and_drops_the_command(self, arm3):
        arm3.hold([3.0, 3.0, 3.0], 0.3)
        assert np.abs(arm3.q() - arm3.model.home_q).max() > 0.05
        arm3.reset()
        np.testing.assert_allclose(arm3.q(), arm3.model.home_q, atol=1e-3)
        np.testing.assert_allclose(arm3.latest().velocity, 0.0, atol=1e-3)


    def test_parameters_static_refused_dynamic_applied(self, arm3, probe):
        ok, reason = probe.set_param('/sim_robot', 'physics_rate_hz', 1000.0)
        assert not ok and ('read-only' in reason or 'static' in reason), reason
        ok, reason = probe.set_param('/sim_robot', 'publish_rate_hz', 10000.0)
        assert not ok and 'range' in reason
        ok, reason = probe.set_param('/sim_robot', 'publish_rate_hz', 50.0)
        assert ok, reason
        try:
            n0, t0 = len(arm3.states), time.monotonic()
            time.sleep(1.0)
            assert (len(arm3.states) - n0) / (time.monotonic() - t0) == pytest.approx(50.0, rel=0.15)
        finally:
            assert probe.set_param('/sim_robot', 'publish_rate_hz', 100.0)[0]
        # Live state noise: the resting arm's published positions start to scatter.
        arm3.reset()
        assert probe.set_param('/sim_robot', 'state_noise_std', 0.01)[0]
        try:
            time.sleep(0.3)
            q = np.array([m.position for _, m in arm3.states[-50:]])
            assert np.std(q - arm3.model.home_q, axis=0) == pytest.approx([0.01] * 3, rel=0.5)
        finally:
            assert probe.set_param('/sim_robot', 'state_noise_std', 0.0)[0]


def test_arm7_positive_effort_each_joint(probe):
    proc = start_node(robot='arm7')
    try:
        arm7 = Robot(probe, proc, 'arm7')
        for k in range(7):
            arm7.reset()
            q0 = arm7.q()
            cmd = np.zeros(7)
            cmd[k] = 0.3 * arm7.model.effort_max[k]
            arm7.hold(cmd, 0.25)
            assert arm7.q()[k] - q0[k] > 0.02, k
    finally:
        assert stop_node(proc, signal.SIGTERM) == 0


def test_velocity_interface(probe):
    proc = start_node(robot='arm3', command_interface='velocity')
    try:
        arm = Robot(probe, proc, 'arm3')
        arm.hold([0.5, 0.0, 0.0], 0.5)
        assert arm.latest().velocity[0] == pytest.approx(0.5, abs=0.05)
        # Within the 20 Nm effort limit but beyond the 3 rad/s velocity limit: refused.
        time.sleep(0.5)  # the watchdog's zero-velocity target stops the arm
        assert abs(arm.latest().velocity[0]) < 0.01
        q0 = arm.q()
        arm.hold([10.0, 0.0, 0.0], 0.3)
        assert abs(arm.q()[0] - q0[0]) < 1e-3
        assert 'rad/s' in arm.diagnostics(after=time.time())['last_rejection']
    finally:
        assert stop_node(proc) == 0


def test_sim_time_clock_and_sigint(probe):
    proc = start_node(robot='arm3', publish_clock='true', initial_positions='[0.5, 0.2, -0.3]')
    try:
        clocks = probe.subscribe('/clock', Clock)
        arm = Robot(probe, proc, 'arm3')
        assert probe.wait_until(lambda: len(clocks) > 10, 5.0)
        np.testing.assert_allclose(arm.q(), [0.5, 0.2, -0.3], atol=1e-3)
        stamp = arm.latest().header.stamp
        t_sim = stamp.sec + 1e-9 * stamp.nanosec
        assert 0.0 < t_sim < 120.0  # sim time since start, not the epoch
        time.sleep(1.2)  # cross whole seconds of sim time: stamps must never step back
        t = np.array([c.clock.sec + 1e-9 * c.clock.nanosec for _, c in list(clocks)])
        assert t[-1] - t[0] > 1.0 and np.all(np.diff(t) > 0)
        # Every 5th 2 ms physics step exactly (a message lost by a busy probe skips a multiple).
        steps = np.diff(t) / 0.010
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.median(np.round(steps)) == 1
    finally:
        t0 = time.monotonic()
        rc = stop_node(proc)
    assert rc == 0
    assert time.monotonic() - t0 < 5.0


def test_bad_start_parameters_exit_78():
    for params, needle in [({'robot': 'no_such_arm'}, 'no_such_arm'),
                           ({'robot': 'arm3', 'initial_positions': '[0.0, 0.0]'}, 'initial_positions'),
                           ({'robot': 'arm3', 'command_interface': 'position'}, 'command_interface')]:
        proc = start_node(**params)
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 78, out  # EX_CONFIG: the launch runner does not respawn it
        assert needle in out
