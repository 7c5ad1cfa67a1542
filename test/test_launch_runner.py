"""The launch runner end to end: `mbrl-ros launch` as a real process (through the launch_system
fixture) running real processes: output prefixing, orderly shutdown on SIGINT/SIGTERM, a dying node
bringing the launch down, respawn, escalation to SIGKILL, and no process left behind. The ROS tests
run a real rclpy node over DDS."""
import io
import os
import signal
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

from mbrl_ros.launch_runner import ProcessDescription, ProcessManager
from mbrl_ros.testing.pytest_plugin import LaunchedSystem, LaunchFailed

HERE = Path(__file__).parent / 'launch'
PROCS = HERE / 'procs.launch.yaml'
FAST = dict(sigint_timeout=5.0, sigterm_timeout=2.0)  # generous: the machine may be loaded


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True  # exited; its new parent reaps it
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def ready(s):
    """Both helpers have installed their signal handlers (they print `env ...` after that)."""
    assert s.wait_for_output(r'^\[a\] env', timeout=20) and s.wait_for_output(r'^\[b\] env', timeout=20)


def procs_args(**kw) -> dict:
    return {'py': sys.executable, **kw}


def test_output_is_prefixed_and_sigint_shuts_down_in_order(launch_system):
    with launch_system(PROCS, procs_args(a_opts='--text alpha --lines 3 --stderr'), **FAST) as s:
        ready(s)
        assert s.wait_for_output(r'^\[b\] env MBRL_TEST_VALUE=set_by_launch$')
        assert s.wait_for_output(r'^\[a\] env MBRL_TEST_VALUE=$')  # env only where the file sets it
        pids = s.pids()
        assert set(pids) == {'a', 'b'}
    assert s.returncode == 0
    out = s.output_text()
    for i in range(3):
        assert f'[a] alpha {i}' in out and f'[a] err alpha {i}' in out  # stdout and stderr, line by line
    assert '[b] beta 0' in out
    assert '[launch] SIGINT received: shutting down' in out
    assert f"[launch] process 'a' (pid {pids['a']}) exited with code 0" in out
    assert all(gone(p, 0) for p in pids.values())


def test_sigterm_to_runner_also_takes_grandchildren(launch_system, tmp_path):
    pid_file = tmp_path / 'pids'
    with launch_system(PROCS, procs_args(a_opts=f'--child --pid-file {pid_file}'), **FAST) as s:
        ready(s)
        node_pid, child_pid = map(int, pid_file.read_text().split())
        assert psutil.pid_exists(child_pid)
        s.runner.send_signal(signal.SIGTERM)
        assert s.wait_exit(15) == 0
    assert '[launch] SIGTERM received: shutting down' in s.output_text()
    assert gone(node_pid) and gone(child_pid)


def test_fixture_catches_and_kills_a_process_that_escaped(launch_system, tmp_path):
    """A grandchild in its own session survives group kills; the fixture finds it, kills it, fails."""
    pid_file = tmp_path / 'pids'
    with pytest.raises(LaunchFailed, match='processes left behind after shutdown') as info:
        with launch_system(PROCS, procs_args(a_opts=f'--child --escape --pid-file {pid_file}'), **FAST) as s:
            ready(s)
    _, child_pid = map(int, pid_file.read_text().split())
    assert str(child_pid) in str(info.value)
    assert gone(child_pid)


def test_a_dying_process_takes_the_launch_down(launch_system):
    with launch_system(PROCS, procs_args(b_opts='--text beta --exit-after 0.5 --code 3'), **FAST) as s:
        ready(s)
        pid_a, pid_b = s.pid('a'), s.pid('b')
        assert s.wait_exit(15) == 1
    out = s.output_text()
    assert f"[launch] process 'b' (pid {pid_b}) exited with code 3; shutting down the other processes" in out
    assert f"[launch] process 'a' (pid {pid_a}) exited with code 0" in out  # a got its orderly SIGINT
    assert gone(pid_a, 0) and gone(pid_b, 0)


def test_a_killed_process_is_reported_by_signal(launch_system):
    with launch_system(PROCS, procs_args(), **FAST) as s:
        ready(s)
        pid = s.kill('b', signal.SIGKILL)
        assert s.wait_exit(15) == 1
    assert f"[launch] process 'b' (pid {pid}) killed by SIGKILL" in s.output_text()
    assert gone(s.pids()['a'], 0)


def test_respawn_restarts_the_process(launch_system):
    args = procs_args(b_opts='--text beta --exit-after 0.2 --code 1', b_respawn='true')
    with launch_system(PROCS, args, **FAST) as s:
        assert s.wait_for_output(r"started process 'b' \(pid \d+\) \(restart 2\)", timeout=20)
        assert s.runner.poll() is None  # respawned processes do not end the launch
        assert s.wait_for_output(r"process 'b' \(pid \d+\) exited with code 1; respawning in 0.1 s")
    assert s.returncode == 0


def test_respawn_gives_up_after_max_retries(launch_system):
    args = procs_args(b_opts='--text beta --exit-after 0.1 --code 1', b_respawn='true', b_retries='2')
    with launch_system(PROCS, args, **FAST) as s:
        assert s.wait_exit(30) == 1
    out = s.output_text()
    assert out.count("started process 'b'") == 3  # the first start and two retries
    assert 'respawned 2 times already (respawn_max_retries 2): shutting down the other processes' in out


def test_configuration_error_exit_is_not_respawned(launch_system):
    # Exit 78 (EX_CONFIG): the node cannot start with its configuration; a restart every
    # respawn_delay would fail the same way, so the runner gives up at once and says why.
    args = procs_args(b_opts='--text beta --exit-after 0.1 --code 78', b_respawn='true')
    with launch_system(PROCS, args, **FAST) as s:
        assert s.wait_exit(30) == 1
    out = s.output_text()
    assert out.count("started process 'b'") == 1
    assert 'exited with code 78 (configuration error; its log says what to fix): not respawning it' in out
    assert 'respawning in' not in out


def test_processes_ignoring_sigint_and_sigterm_get_sigkill(launch_system):
    args = procs_args(b_opts='--ignore-sigint --ignore-sigterm')
    with launch_system(PROCS, args, sigint_timeout=0.5, sigterm_timeout=0.5) as s:
        ready(s)
        pid = s.pid('b')
    out = s.output_text()
    assert 'still running after SIGINT, sending SIGTERM: b' in out
    assert 'still running after SIGTERM, killing: b' in out
    assert f"[launch] process 'b' (pid {pid}) killed by SIGKILL" in out
    assert s.returncode == 1  # not an orderly shutdown
    assert gone(pid, 0)


def test_second_sigint_skips_the_wait(launch_system):
    """Like ros2 launch: a second Ctrl-C does not wait out the SIGINT grace period."""
    with launch_system(PROCS, procs_args(b_opts='--ignore-sigint'), sigint_timeout=60, sigterm_timeout=60) as s:
        ready(s)
        pid = s.pid('b')
        t0 = time.monotonic()
        s.runner.send_signal(signal.SIGINT)
        assert s.wait_for_output(r"process 'a' \(pid \d+\) exited with code 0")
        s.runner.send_signal(signal.SIGINT)
        assert s.wait_exit(30) == 0  # b honoured SIGTERM
        assert time.monotonic() - t0 < 30
    assert f"[launch] process 'b' (pid {pid}) exited with code 0" in s.output_text() or \
        f"[launch] process 'b' (pid {pid}) killed by SIGTERM" in s.output_text()
    assert 'still running after SIGINT, sending SIGTERM: b' in s.output_text()


def test_runner_killed_outright_takes_its_children(tmp_path):
    """PR_SET_PDEATHSIG: even a SIGKILLed runner leaves no node behind."""
    s = LaunchedSystem(PROCS, procs_args(), **FAST)
    with s:
        ready(s)
        pids = s.pids()
        os.killpg(s.runner.pid, signal.SIGKILL)
        s.wait_exit(10)
        assert all(gone(p) for p in pids.values())


def test_output_log_keeps_stdout_off_screen(launch_system, tmp_path):
    # stderr is still shown (as with ros2 launch); stdout goes to the log file only.
    with launch_system(PROCS, procs_args(b_opts='--text quiet --stderr', b_output='log'), **FAST) as s:
        assert s.wait_for_output(r'^\[a\] env') and s.wait_for_output(r'^\[b\] err quiet 0')
    assert '[b] quiet 0' not in s.output_text()


def test_fixture_fails_with_the_output_when_a_node_cannot_start(launch_system):
    with pytest.raises(LaunchFailed) as info:
        with launch_system(PROCS, procs_args(b_opts='--text doomed --exit-after 0 --code 2'),
                           wait_topics=['/never_published'], timeout=30, **FAST):
            pass
    msg = str(info.value)
    assert 'exited with code 1 before it was up' in msg and '[b] doomed 0' in msg
    assert "process 'b'" in msg and 'exited with code 2' in msg


def test_fixture_times_out_on_a_missing_topic(launch_system):
    with pytest.raises(LaunchFailed, match=r'no publisher on /never_published after 1\.5 s'):
        with launch_system(PROCS, procs_args(), wait_topics=['/never_published'], timeout=1.5, **FAST):
            pass


def test_bad_launch_file_fails_the_fixture_with_the_parse_error(launch_system):
    with pytest.raises(LaunchFailed, match=r"required argument 'py' not given"):
        with launch_system(PROCS, {}, **FAST):
            pass


def test_manager_in_process_all_exit_cleanly():
    """ProcessManager on its own: processes that finish by themselves end the launch with 0."""
    out = io.StringIO()
    procs = [ProcessDescription('one', [sys.executable, '-c', 'print("a"); print("b")']),
             ProcessDescription('two', [sys.executable, '-c', 'import sys; print("c", file=sys.stderr)'],
                                env={'UNUSED': None})]
    assert ProcessManager(procs, out=out).run() == 0
    text = out.getvalue()
    assert '[one] a\n[one] b\n' in text and '[two] c\n' in text
    assert "process 'one'" not in text  # kind defaults to node
    assert text.count('exited with code 0') == 2


def test_manager_reports_a_command_that_cannot_start():
    out = io.StringIO()
    procs = [ProcessDescription('ok', [sys.executable, '-c', 'import time; time.sleep(30)']),
             ProcessDescription('bad', ['/nonexistent/binary'])]
    t0 = time.monotonic()
    assert ProcessManager(procs, out=out).run() == 1
    assert time.monotonic() - t0 < 15  # 'ok' was shut down, not waited for
    assert "node 'bad' could not be started" in out.getvalue()


# ---- a real ROS node ----------------------------------------------------------------------------

@pytest.fixture
def talker_prefix(tmp_path):
    """An ament-style prefix holding package `mbrl_test_pkg` with executable `talker`."""
    exe = tmp_path / 'prefix' / 'lib' / 'mbrl_test_pkg' / 'talker'
    exe.parent.mkdir(parents=True)
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "talker_node.py"}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return {'AMENT_PREFIX_PATH': str(tmp_path / 'prefix')}


@pytest.mark.ros
def test_real_node_with_namespace_params_and_remap(launch_system, talker_prefix):
    from std_msgs.msg import String
    with launch_system(HERE / 'talker.launch.yaml', {'ns': 'arm1', 'message': 'hello there'},
                       wait_topics=['/arm1/chatter_remapped'], timeout=60, env=talker_prefix) as s:
        msg = s.probe.wait_for('/arm1/chatter_remapped', String, timeout=15)
        assert msg is not None and msg.data == 'hello there'
        # Types survive the params file: "7" -> int, "true" -> bool, [1, 2.5] -> doubles.
        assert s.probe.get_param('/arm1/talker', 'count') == 7
        assert s.probe.get_param('/arm1/talker', 'flag') is True
        assert list(s.probe.get_param('/arm1/talker', 'gains')) == [1.0, 2.5]
        assert s.probe.get_param('/arm1/talker', 'rate_hz') == 50.0  # from the `from:` file
        assert s.wait_for_output(r"^\[talker\] talker /arm1/talker up: message='hello there' count=7")
    assert s.returncode == 0
    assert "node 'talker'" in s.output_text() and 'exited with code 0' in s.output_text()


@pytest.mark.ros
def test_real_node_killed_brings_the_launch_down(launch_system, talker_prefix):
    with launch_system(HERE / 'talker.launch.yaml', wait_topics=['/demo/chatter_remapped'],
                       timeout=60, env=talker_prefix) as s:
        pid = s.kill('talker', signal.SIGKILL)
        assert s.wait_exit(20) == 1
    assert f"[launch] node 'talker' (pid {pid}) killed by SIGKILL; shutting down" in s.output_text()


@pytest.mark.ros
def test_real_node_respawns_and_publishes_again(launch_system, talker_prefix):
    with launch_system(HERE / 'talker.launch.yaml', {'respawn': 'true'}, wait_topics=['/demo/chatter_remapped'],
                       timeout=60, env=talker_prefix) as s:
        first = s.kill('talker', signal.SIGKILL)
        assert s.wait_for_output(r"started node 'talker' \(pid \d+\) \(restart 1\)", timeout=20)
        assert s.pid('talker') != first
        assert s.probe.wait_for_publishers('/demo/chatter_remapped', timeout=30)
    assert s.returncode == 0


@pytest.mark.system
def test_sim_robot_through_the_runner(launch_system, tmp_path):
    """The package's own node resolved as `pkg: mbrl_ros` (once sim_robot exists)."""
    pytest.importorskip('mbrl_ros.nodes.sim_robot')
    from sensor_msgs.msg import JointState
    f = tmp_path / 'sim.launch.yaml'
    f.write_text('launch:\n- node: {pkg: mbrl_ros, exec: sim_robot, name: sim_robot, '
                 'param: [{name: robot, value: arm3}]}\n')
    with launch_system(f, wait_topics=['/joint_states'], timeout=90) as s:
        msg = s.probe.wait_for('/joint_states', JointState, timeout=20)
        assert msg is not None and len(msg.position) == 3
    assert s.returncode == 0
