"""Issue 7: every long-running node has the GIL-free hang watchdog (`hang_timeout_s`, mbrl_ros/ros/hang_watchdog.py)
and the launch files respawn every node, so a node stuck in publish() with the GIL held ends itself and the
stack recovers (docs/reliability.md). The real node processes are used: a stuck publish() is simulated by
patching rclpy's Publisher.publish to sleep in a C call that keeps the GIL (ctypes.PyDLL), on a trigger file
the test creates; that is what a publish() blocked inside Fast DDS's shared-memory transport does."""
from __future__ import annotations

import importlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from mbrl_ros.launch_runner import parse_launch_file
from mbrl_ros.resources import find_resource
from mbrl_ros.ros.hang_watchdog import MIN_TIMEOUT_S, TEARDOWN_TIMEOUT_S, hang_timeout_param

NODES = ('sim_robot', 'state_estimator', 'world_model', 'mpc_controller', 'policy', 'safety_filter')
LAUNCH_FILES = ('sim_arm.launch.yaml', 'real_arm.launch.yaml')
TIMEOUT_S = 3.0


# ---- the parameter -------------------------------------------------------------------------------

@pytest.mark.parametrize('value, ok', [(0.0, True), (MIN_TIMEOUT_S, True), (10.0, True), (3600.0, True),
                                       (0.5, False), (1e-3, False), (-1.0, False), (3601.0, False),
                                       (math.nan, False), (math.inf, False), (10, True), ('10', False)])
def test_hang_timeout_values(value, ok):
    reason = hang_timeout_param().check(value)
    assert (reason is None) == ok, reason
    if not ok:
        assert 'hang_timeout_s' in reason


@pytest.mark.parametrize('node', NODES)
def test_every_node_declares_the_same_static_hang_timeout(node):
    specs = [s for s in importlib.import_module(f'mbrl_ros.nodes.{node}').SPECS if s.name == 'hang_timeout_s']
    assert specs == [hang_timeout_param()]          # one spec: same range, validator, static
    assert not specs[0].dynamic and specs[0].default == 0.0   # off unless configured


@pytest.mark.parametrize('node', NODES)
def test_shipped_config_arms_the_watchdog(node):
    with open(find_resource('config', f'{node}.yaml')) as f:
        value = yaml.safe_load(f)[node]['ros__parameters']['hang_timeout_s']
    assert isinstance(value, float) and hang_timeout_param().check(value) is None and value > 0


# ---- the launch files ------------------------------------------------------------------------------

def _plan(launch_file, args=None):
    return {p.name: p for p in parse_launch_file(find_resource('launch', launch_file), args or {}).processes}


@pytest.mark.parametrize('launch_file', LAUNCH_FILES)
def test_launch_files_respawn_every_node_by_default_and_respawn_false_turns_all_off(launch_file):
    procs = _plan(launch_file)
    assert set(procs) == set(NODES) - ({'sim_robot'} if launch_file.startswith('real') else set())
    assert all(p.respawn for p in procs.values()), {n: p.respawn for n, p in procs.items()}
    assert all(not p.respawn for p in _plan(launch_file, {'respawn': 'false'}).values())
    # one node back on; and each per-node switch
    mixed = _plan(launch_file, {'respawn': 'false', 'respawn_safety_filter': 'true'})
    assert {n for n, p in mixed.items() if p.respawn} == {'safety_filter'}
    for arg, names in (('respawn_controllers', {'mpc_controller', 'policy'}), ('respawn_world_model', {'world_model'}),
                       ('respawn_state_estimator', {'state_estimator'}), ('respawn_safety_filter', {'safety_filter'})):
        assert {n for n, p in _plan(launch_file, {arg: 'false'}).items() if not p.respawn} == names, arg
    assert len({p.respawn_delay for p in _plan(launch_file, {'respawn_delay': '0.7'}).values()}) == 1


def test_sim_robot_is_not_respawned_under_sim_time():
    # A new simulator would restart /clock at 0: time would jump back for every node.
    assert _plan('sim_arm.launch.yaml')['sim_robot'].respawn
    assert not _plan('sim_arm.launch.yaml', {'use_sim_time': 'true'})['sim_robot'].respawn
    assert not _plan('sim_arm.launch.yaml', {'use_sim_time': 'true', 'respawn_sim_robot': 'true'})['sim_robot'].respawn
    assert not _plan('sim_arm.launch.yaml', {'respawn_sim_robot': 'false'})['sim_robot'].respawn


# ---- the node processes ----------------------------------------------------------------------------

# Runs node `argv[1]` as its main() would, reporting when its watchdog is armed and when its executor
# spins (the constructor is done: a signal no longer lands in it); once the file argv[2]
# exists, the next publish() of any thread of the node blocks in a C call that holds the GIL; when
# argv[2] + '.teardown' exists, destroy_node() does (a teardown stuck in DDS).
_NODE = textwrap.dedent("""
    import ctypes, importlib, os, sys
    import rclpy.publisher
    name, trigger = sys.argv[1], sys.argv[2]
    mod = importlib.import_module('mbrl_ros.nodes.' + name)
    start = mod.start_hang_watchdog
    def armed(node, timeout_s):
        w = start(node, timeout_s)
        print(f'armed {None if w is None else w.timeout_s}', flush=True)
        return w
    mod.start_hang_watchdog = armed
    publish = rclpy.publisher.Publisher.publish
    def stuck_publish(self, msg):
        if os.path.exists(trigger):
            print(f'blocking in publish {self.topic_name}', flush=True)
            ctypes.PyDLL(None).sleep(60)
        return publish(self, msg)
    rclpy.publisher.Publisher.publish = stuck_publish
    import rclpy.node
    destroy = rclpy.node.Node.destroy_node
    def stuck_destroy(self):
        if os.path.exists(trigger + '.teardown'):
            print('blocking in destroy_node', flush=True)
            ctypes.PyDLL(None).sleep(60)
        return destroy(self)
    rclpy.node.Node.destroy_node = stuck_destroy
    import mbrl_ros.ros.node_main as node_main
    spin = node_main.spin
    def spinning(executor):
        print('spinning', flush=True)
        return spin(executor)
    node_main.spin = spinning
    sys.argv = [sys.argv[0], '--ros-args', *sys.argv[3:]]
    mod.main()
""")


class _Node:
    """One node process; its output goes to files (a full pipe would block the node and look like a hang)."""

    def __init__(self, node: str, trigger, tmp, *params: str, discovery: str = 'OFF'):
        ros_args = []
        for p in ('robot:=arm3', f'hang_timeout_s:={TIMEOUT_S}', *params):
            ros_args += ['-p', p]
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        if discovery:
            env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = discovery   # talks to nobody: no peer can disturb the check
        self.name = node
        self.out_path, self.err_path = tmp / f'{node}.out', tmp / f'{node}.err'
        with open(self.out_path, 'w') as out, open(self.err_path, 'w') as err:
            self.proc = subprocess.Popen([sys.executable, '-c', _NODE, node, str(trigger), *ros_args], env=env,
                                         stdout=out, stderr=err, text=True)

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def detail(self) -> str:
        return (f'{self.name}: rc {self.proc.poll()}\nstdout:\n{self.out()[-1500:]}\n'
                f'stderr:\n{self.err()[-3000:]}')

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _start_all(trigger, tmp, discovery: str = 'OFF') -> dict:
    return {n: _Node(n, trigger, tmp, discovery=discovery) for n in NODES}


def _wait_armed(procs: dict, timeout: float) -> None:
    """Every node printed 'armed 3.0' (its watchdog is on, with the parameter's value) and then 'spinning'."""
    deadline = time.monotonic() + timeout
    for node in procs.values():
        while 'spinning' not in node.out() and node.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f'armed {TIMEOUT_S}\n' in node.out() and 'spinning\n' in node.out(), node.detail()


def _wait_exits(procs: dict, t0: float, within_s: float) -> dict:
    """Seconds from t0 until each node process exited (or until `within_s` ran out, the process still there)."""
    took = {}
    for n, node in procs.items():
        try:
            node.proc.wait(timeout=max(1.0, t0 + within_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        took[n] = time.monotonic() - t0
    return took


def _kill_all(procs: dict) -> None:
    for node in procs.values():
        node.kill()


@pytest.mark.ros
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='ctypes.PyDLL(None) needs libc')
def test_every_node_stuck_in_publish_with_the_gil_held_exits_by_its_watchdog(tmp_path):
    trigger = tmp_path / 'stuck'
    procs = _start_all(trigger, tmp_path)
    try:
        _wait_armed(procs, timeout=120)
        time.sleep(2 * TIMEOUT_S)         # healthy: well past the timeout, nobody exits
        for node in procs.values():
            assert node.proc.poll() is None, node.detail()
        t0 = time.monotonic()
        trigger.touch()
        took = _wait_exits(procs, t0, 45)   # the stuck sleep is 60 s
    finally:
        _kill_all(procs)
    for n, node in procs.items():
        detail = f'after {took[n]:.1f} s: ' + node.detail()
        assert 'blocking in publish' in node.out(), detail     # it was stuck where we said
        print(f"[hang] {n}: {node.out().split('blocking in publish ')[1].split()[0]} stuck, exit "
              f'{node.proc.returncode} {took[n]:.1f} s after the trigger')
        assert node.proc.returncode == 1, detail               # ended by the watchdog (faulthandler exit=True)
        err = node.err()
        assert 'Timeout (0:00:03)!' in err and 'stuck_publish' in err, detail   # the stacks name the stuck frame


@pytest.mark.ros
def test_nodes_with_the_watchdog_run_refuse_a_live_change_and_stop_cleanly(tmp_path):
    """On the session's own DDS (no trigger): each node runs well past its timeout, refuses a live change of the
    static hang_timeout_s, prints its stacks on SIGUSR1 and runs on, and a SIGINT shutdown is not taken for a hang
    (exit 0, no stack dump)."""
    from mbrl_ros.testing.ros_probe import RosProbe
    procs = _start_all(tmp_path / 'never', tmp_path, discovery='')
    try:
        _wait_armed(procs, timeout=120)
        with RosProbe('hang_param_probe') as probe:
            for n in NODES:
                ok, reason = probe.set_param(f'/{n}', 'hang_timeout_s', 60.0, timeout=30.0)
                assert not ok, n
                assert 'hang_timeout_s' in reason or 'read-only' in reason.lower(), (n, reason)
                assert probe.get_param(f'/{n}', 'hang_timeout_s', timeout=30.0) == TIMEOUT_S, n
        time.sleep(TIMEOUT_S)
        for node in procs.values():
            assert node.proc.poll() is None, node.detail()
            node.proc.send_signal(signal.SIGUSR1)   # the stacks, and the node runs on
        time.sleep(1.0)
        for node in procs.values():
            assert node.proc.poll() is None, node.detail()
            assert 'most recent call first' in node.err() and 'spin' in node.err(), node.detail()
        for node in procs.values():
            node.proc.send_signal(signal.SIGINT)
        for node in procs.values():
            node.proc.wait(timeout=30)
            assert node.proc.returncode == 0, node.detail()
            assert 'Timeout' not in node.err(), node.detail()
    finally:
        _kill_all(procs)


@pytest.mark.ros
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='ctypes.PyDLL(None) needs libc')
def test_every_node_stuck_in_its_teardown_ends_itself_before_the_launchers_sigterm(tmp_path):
    """A teardown stuck with the GIL held (destroy_node blocking in DDS) ends by the teardown deadline: exit 1,
    the stacks naming the stuck frame, within the launchers' 5 s SIGINT grace instead of a SIGKILL later."""
    trigger = tmp_path / 'stuck'
    (tmp_path / 'stuck.teardown').touch()
    procs = _start_all(trigger, tmp_path)
    try:
        _wait_armed(procs, timeout=120)
        t0 = time.monotonic()
        for node in procs.values():
            node.proc.send_signal(signal.SIGINT)
        took = _wait_exits(procs, t0, 30)
    finally:
        _kill_all(procs)
    for n, node in procs.items():
        detail = f'after {took[n]:.1f} s: ' + node.detail()
        assert 'blocking in destroy_node' in node.out(), detail
        assert node.proc.returncode == 1, detail
        assert f'Timeout (0:00:0{TEARDOWN_TIMEOUT_S:.0f})!' in node.err() and 'stuck_destroy' in node.err(), detail
        # All six were signalled together and are waited for in turn: the last may be reported a little later.
        assert took[n] < 5.0 + 1.0, detail
        print(f'[teardown] {n}: exit {node.proc.returncode} {took[n]:.1f} s after SIGINT')


@pytest.mark.ros
def test_a_too_short_hang_timeout_is_refused_at_start():
    procs = {n: subprocess.Popen([sys.executable, '-m', f'mbrl_ros.nodes.{n}', '--ros-args', '-p', 'robot:=arm3',
                                  '-p', 'hang_timeout_s:=0.5'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='OFF'))
             for n in NODES}
    try:
        for n, p in procs.items():
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 78, f'{n}: rc {p.returncode}\n{out[-3000:]}'
            assert 'cannot start' in out and 'hang_timeout_s' in out and 'at least 1 s' in out, f'{n}:\n{out[-3000:]}'
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


# ---- the safety filter in the running stack ------------------------------------------------------------

# Imported by every Python process of the launch (PYTHONPATH); acts only in the safety_filter console script:
# its next command publish() after the trigger file appears blocks in a C call that holds the GIL. The file
# is removed first, so only one filter process gets stuck (the respawned one runs normally).
_STUCK_FILTER = textwrap.dedent("""
    import os, sys
    if os.path.basename(sys.argv[0]) == 'safety_filter':
        import ctypes
        import rclpy.publisher
        _trigger = os.environ['MBRL_TEST_STUCK_TRIGGER']
        _publish = rclpy.publisher.Publisher.publish
        def stuck_publish(self, msg):
            if self.topic_name == '/forward_effort_controller/commands':
                try:
                    os.remove(_trigger)
                except FileNotFoundError:
                    pass
                else:
                    print('blocking in publish with the GIL held', flush=True)
                    ctypes.PyDLL(None).sleep(60)
            return _publish(self, msg)
        rclpy.publisher.Publisher.publish = stuck_publish
""")
EFFORT_MAX_ARM3 = (20.0, 20.0, 10.0)


@pytest.mark.ros
@pytest.mark.system
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='ctypes.PyDLL(None) needs libc')
def test_a_stuck_safety_filter_is_ended_and_respawned_while_the_arm_holds(launch_system, tmp_path):
    """The whole sim stack (arm3, shipped bundle, shipped configs: hang_timeout_s 10 s): the filter's control
    loop gets stuck in publish() holding the GIL while the MPC drives the arm. sim_robot's command watchdog
    must zero the effort within its 0.1 s, the hang watchdog must end the filter (exit 1, stacks), the launch
    must respawn it, the new filter must bring the stack back to mpc, and no command may leave the limits."""
    import numpy as np
    from std_msgs.msg import Float64MultiArray, String

    from mbrl_ros.ros.conversions import LATCHED
    from mbrl_ros.testing.goals import GoalSender
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(_STUCK_FILTER)
    trigger = tmp_path / 'stuck_filter'
    env = {'PYTHONPATH': os.pathsep.join([str(site)] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
           'MBRL_TEST_STUCK_TRIGGER': str(trigger)}
    wait = ['/joint_states', '/mbrl/state', '/mbrl/mpc/command', '/forward_effort_controller/commands',
            '/mbrl/safety/mode', '/mbrl/world_model/active_model']

    def count(pattern):
        import re
        return len(re.findall(pattern, system.output_text()))

    # The fixture reports the watchdog's stack dump in the launch output as a warning: it must come.
    with pytest.warns(UserWarning, match=r'safety_filter ended by its watchdog \(Timeout \(0:00:10\)!\)'):
        with launch_system('sim_arm.launch.yaml', args={'robot': 'arm3', 'respawn_delay': 1.0}, wait_topics=wait,
                           timeout=120, env=env) as system:
            probe = system.probe
            cmds = probe.subscribe('/forward_effort_controller/commands', Float64MultiArray, 1000)
            modes = probe.subscribe('/mbrl/safety/mode', String, LATCHED)
            sender = GoalSender(probe, (0.3, 0.1, 0.35))
            try:
                assert probe.wait_until(lambda: any(m.data == 'mpc' for _, m in modes), 90), system.output_text()[-4000:]
                old_pid = system.pid('safety_filter')
                trips0 = count(r'\[sim_robot\].*watchdog commands zero')
                t_trigger = time.time()
                trigger.touch()
                assert system.wait_for_output(r'\[safety_filter\].*blocking in publish with the GIL held', 10), \
                    system.output_text()[-4000:]
                # the arm side holds: sim_robot zeroes the effort when the commands stop
                assert probe.wait_until(lambda: count(r'\[sim_robot\].*watchdog commands zero') > trips0, 5), \
                    system.output_text()[-4000:]
                # the hang watchdog ends the stuck filter and the launch respawns it
                assert system.wait_for_output(r"'safety_filter' \(pid \d+\) exited with code 1; respawning", 30), \
                    system.output_text()[-4000:]
                t_exit = time.time()
                assert count(r'\[safety_filter\].*Timeout \(0:00:10\)!') == 1, system.output_text()[-4000:]
                assert probe.wait_until(lambda: system.pids().get('safety_filter') not in (None, old_pid), 30)
                k = len(modes)
                assert probe.wait_until(lambda: any(m.data == 'mpc' for _, m in modes[k:]), 90), \
                    system.output_text()[-4000:]
                n = len(cmds)
                assert probe.wait_until(lambda: len(cmds) > n + 50, 30)   # the arm gets commands again
            finally:
                sender.close()
            received = list(cmds)
        assert system.returncode == 0, system.output_text()[-3000:]
        times = np.array([t for t, _ in received])
        during = times[(times > t_trigger + 0.5) & (times < t_exit)]
        assert len(during) == 0, f'{len(during)} commands while the filter was stuck'   # nothing slipped through
        for _, m in received:
            u = np.array(m.data)
            assert u.shape == (3,) and np.all(np.isfinite(u)) and np.all(np.abs(u) <= np.array(EFFORT_MAX_ARM3) + 1e-9), u
        print(f'[hang] safety_filter stuck at +0.0 s, ended by its watchdog at +{t_exit - t_trigger:.1f} s; '
              f'{len(received)} commands checked, all within limits')
