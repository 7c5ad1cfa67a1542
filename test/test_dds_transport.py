"""Issue 7, the hang after a peer is SIGKILLed (docs/reliability.md): the launch files keep the nodes
off Fast DDS's shared-memory transport unless the user says otherwise, that setting really takes
the transport away, and a node whose executor is stuck with the GIL held ends itself."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from mbrl_ros.launch_runner import parse_launch_file
from mbrl_ros.resources import find_resource

LAUNCH_FILES = ('sim_arm.launch.yaml', 'real_arm.launch.yaml')


def _environ(**extra):
    env = dict(os.environ)
    for k in ('FASTDDS_BUILTIN_TRANSPORTS', 'FASTDDS_DEFAULT_PROFILES_FILE'):  # a transport set by the caller
        env.pop(k, None)
    env.update(extra)
    return env


@pytest.mark.parametrize('launch_file', LAUNCH_FILES)
def test_launch_files_give_every_node_udp_only_by_default(launch_file):
    plan = parse_launch_file(find_resource('launch', launch_file), {}, environ=_environ())
    assert plan.processes
    assert {p.name: p.env.get('FASTDDS_BUILTIN_TRANSPORTS') for p in plan.processes} == {
        p.name: 'UDPv4' for p in plan.processes}


@pytest.mark.parametrize('launch_file', LAUNCH_FILES)
def test_the_users_transport_choice_wins(launch_file):
    path = find_resource('launch', launch_file)
    from_env = parse_launch_file(path, {}, environ=_environ(FASTDDS_BUILTIN_TRANSPORTS='DEFAULT'))
    assert {p.env.get('FASTDDS_BUILTIN_TRANSPORTS') for p in from_env.processes} == {'DEFAULT'}
    from_arg = parse_launch_file(path, {'dds_transports': 'SHM'}, environ=_environ())
    assert {p.env.get('FASTDDS_BUILTIN_TRANSPORTS') for p in from_arg.processes} == {'SHM'}


# A participant's transports show as its threads: dds.shm.<port> receive threads and dds.shm.wdog.
_THREADS = textwrap.dedent("""
    import os, rclpy
    rclpy.init()
    node = rclpy.create_node('transport_probe')
    names = {open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')}
    print(' '.join(sorted(n for n in names if n.startswith('dds.'))))
    node.destroy_node()
    rclpy.shutdown()
""")


def _dds_threads(**env) -> set[str]:
    # Discovery OFF: the participant still builds its transports but talks to nobody, so this
    # check cannot disturb (or be disturbed by) any other ROS process on the machine.
    out = subprocess.run([sys.executable, '-c', _THREADS], env=_environ(ROS_AUTOMATIC_DISCOVERY_RANGE='OFF', **env),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads thread names from /proc')
def test_udpv4_setting_removes_the_shared_memory_transport():
    default = _dds_threads()
    assert any(t.startswith('dds.shm') for t in default), default  # the check can see SHM at all
    udp = _dds_threads(FASTDDS_BUILTIN_TRANSPORTS='UDPv4')
    assert not any(t.startswith('dds.shm') for t in udp), udp
    assert any(t.startswith('dds.udp') for t in udp), udp


# A node stuck in a C call that holds the GIL, as a publish() blocked in the transport was:
# ctypes.PyDLL keeps the GIL during the call (CDLL would release it).
_STUCK_NODE = textwrap.dedent("""
    import ctypes, sys, time, rclpy
    from mbrl_ros.ros.hang_watchdog import HangWatchdog
    rclpy.init()
    node = rclpy.create_node('stuck')
    HangWatchdog(node, float(sys.argv[1]))
    stuck = []
    def tick():
        if time.monotonic() > t0 + 0.5 and not stuck:
            stuck.append(1)
            print('blocking', flush=True)
            ctypes.PyDLL(None).sleep(30)
    node.create_timer(0.05, tick)
    t0 = time.monotonic()
    end = t0 + float(sys.argv[2])
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print('clean exit', flush=True)
""")


def test_hang_watchdog_ends_a_process_stuck_with_the_gil_held():
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, '-c', _STUCK_NODE, '1.0', '20'], capture_output=True, text=True,
                         timeout=60, env=_environ(ROS_AUTOMATIC_DISCOVERY_RANGE='OFF'))
    took = time.monotonic() - t0
    assert 'blocking' in out.stdout, out.stdout + out.stderr
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'Timeout' in out.stderr and 'tick' in out.stderr  # the stuck frame is named
    assert took < 25  # long before the 30 s sleep would have ended


def test_hang_watchdog_leaves_a_running_node_alone():
    # A node that keeps spinning (1.0 s timeout, 3 s of spinning, the stall below starts only
    # after the run ends) exits on its own.
    out = subprocess.run([sys.executable, '-c', _STUCK_NODE.replace('t0 + 0.5', 't0 + 1e9'), '1.0', '3'],
                         capture_output=True, text=True, timeout=60,
                         env=_environ(ROS_AUTOMATIC_DISCOVERY_RANGE='OFF'))
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'clean exit' in out.stdout


@pytest.mark.parametrize('launch_file', LAUNCH_FILES)
def test_state_estimator_is_respawned_and_has_its_watchdog_on(launch_file):
    plan = parse_launch_file(find_resource('launch', launch_file), {}, environ=_environ())
    (se,) = [p for p in plan.processes if p.name == 'state_estimator']
    assert se.respawn
    import yaml
    with open(find_resource('config', 'state_estimator.yaml')) as f:
        assert yaml.safe_load(f)['state_estimator']['ros__parameters']['hang_timeout_s'] > 0
    off = parse_launch_file(find_resource('launch', launch_file), {'respawn_state_estimator': 'false'},
                            environ=_environ())
    assert not [p for p in off.processes if p.name == 'state_estimator'][0].respawn


@pytest.mark.ros
def test_state_estimator_with_watchdog_runs_and_stops_cleanly():
    """hang_timeout_s 2 s (re-armed every 0.5 s): a healthy idle node keeps running well past it, and a SIGINT
    shutdown is not taken for a hang (exit 0, no stack dump)."""
    import signal
    proc = subprocess.Popen([sys.executable, '-m', 'mbrl_ros.nodes.state_estimator', '--ros-args',
                             '-p', 'robot:=arm3', '-p', 'hang_timeout_s:=2.0'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6.0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, out + err
        assert 'Timeout' not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads thread names from /proc')
def test_shipped_udp_localhost_profile_removes_the_shared_memory_transport():
    # config/fastdds_udp_localhost.xml: the local-only recipe without shared memory (docs/reliability.md)
    profile = str(find_resource('config', 'fastdds_udp_localhost.xml'))
    threads = _dds_threads(FASTDDS_DEFAULT_PROFILES_FILE=profile)
    assert not any(t.startswith('dds.shm') for t in threads), threads
    assert any(t.startswith('dds.udp') for t in threads), threads
