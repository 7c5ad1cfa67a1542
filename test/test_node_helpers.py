"""ROS-free helpers of the control nodes: the active_model follower, JointState reading,
Param specs from the core settings, the workspace goal check, and the paced control loop."""
import os
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState

from _model_helpers import write_bundle
from mbrl_ros.core.bundle import load_bundle
from mbrl_ros.core.planning import CostWeights, PlannerConfig
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.safety import SafetySettings
from mbrl_ros.core.workspace import Workspace
from mbrl_ros.ros.control_loop import ControlLoop
from mbrl_ros.ros.joint_state import JointStateReader
from mbrl_ros.ros.model_source import BundleFollower, parse_active_model, resolve_model_dir
from mbrl_ros.ros.settings_params import params_from_settings
from mbrl_ros.testing.ros_probe import RosProbe

ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']


# ---- active_model ------------------------------------------------------------------------------
def test_parse_active_model():
    sha = 'a' * 64
    assert parse_active_model(f'/m/my bundle {sha}') == (__import__('pathlib').Path('/m/my bundle'), sha)
    for bad in ('', '   ', 'nohash', f'relative/path {sha}', '/m/x ' + 'g' * 64, '/m/x ' + 'a' * 63, None, 42):
        with pytest.raises(ValueError):
            parse_active_model(bad)


def test_bundle_follower_loads_refuses_and_keeps(tmp_path, arm3):
    a = write_bundle(tmp_path / 'a', arm3).resolve()
    f = BundleFollower(arm3)
    ident = load_bundle(a).identity
    bundle, why = f.offer(ident)
    assert why is None and bundle.identity == ident and f.current is bundle
    assert f.offer(ident) == (None, None)                      # same bundle: nothing to do
    for text, check in ((f'{tmp_path}/none {"0" * 64}', 'missing_file'), ('garbage', 'sha256'),
                        (f'{a} {"0" * 64}', 'sha256')):       # announced hash != the file on disk
        bundle, why = f.offer(text)
        assert bundle is None and why and (check in why or 'active_model' in why), (text, why)
        assert f.current.identity == ident
    assert f.refusals == 3 and f.loads == 1
    # A bundle for another robot is refused by load_bundle's checks.
    arm7 = RobotModel.load('arm7')
    b = write_bundle(tmp_path / 'b7', arm7).resolve()
    bundle, why = f.offer(load_bundle(b).identity)
    assert bundle is None and any(c in why for c in ('[robot', '[joint_names', '[dims')), why
    assert f.current.identity == ident


def test_resolve_model_dir(tmp_path):
    assert resolve_model_dir(str(tmp_path), 'arm3') == tmp_path.resolve()
    assert resolve_model_dir('', 'arm3').name == 'arm3'
    assert str(resolve_model_dir('/no/such/dir', 'arm3')) == '/no/such/dir'


# ---- JointState --------------------------------------------------------------------------------
def _js(names, pos=(), vel=(), eff=(), stamp=(5, 0)):
    m = JointState(name=list(names), position=list(pos), velocity=list(vel), effort=list(eff))
    m.header.stamp = Time(sec=stamp[0], nanosec=stamp[1])
    return m


def test_joint_state_reader_reorders_and_refuses():
    r = JointStateReader(ARM3)
    s, why = r.state(_js(ARM3[::-1], [3, 2, 1], [30, 20, 10]))
    assert why is None and s.stamp == 5.0
    assert np.array_equal(s.q, [1, 2, 3]) and np.array_equal(s.qd, [10, 20, 30])
    c, why = r.command(_js([], eff=[1, 2, 3]))              # no names: robot order
    assert why is None and np.array_equal(c.effort, [1, 2, 3])
    bad_states = [_js([], [1, 2, 3], [1, 2, 3]), _js(ARM3, [1, 2], [1, 2, 3]), _js(ARM3, [1, 2, 3], []),
                  _js(ARM3, [1, np.nan, 3], [1, 2, 3]), _js(ARM3, [1, 2, 3], [1, 2, np.inf]),
                  _js(ARM3 + ['x'], [1, 2, 3, 4], [1, 2, 3, 4]), _js(ARM3[:2] * 2, [1] * 4, [1] * 4),
                  _js(ARM3, [1, 2, 3], [1, 2, 3], stamp=(0, 0))]
    for m in bad_states:
        s, why = r.state(m)
        assert s is None and why, m
    for m in (_js(ARM3, eff=[1, 2]), _js([], eff=[1, 2]), _js(ARM3, eff=[np.nan, 0, 0]),
              _js(['a', 'b', 'c'], eff=[1, 2, 3]), _js(ARM3, eff=[1, 2, 3], stamp=(0, 0))):
        c, why = r.command(m)
        assert c is None and why, m


# ---- parameters from settings ------------------------------------------------------------------
def test_params_from_settings_carry_core_ranges_and_types():
    specs = {p.name: p for p in params_from_settings(PlannerConfig)}
    assert specs['horizon'].range == (1, 100) and specs['horizon'].default == PlannerConfig().horizon
    assert specs['planner'].choices == ('cem', 'icem')
    assert isinstance(specs['time_budget_ms'].default, float)
    assert specs['horizon'].check(0) and specs['horizon'].check(100) is None
    w = {p.name: p for p in params_from_settings(CostWeights, rename={'uncertainty': 'uncertainty_penalty'},
                                                 static=['effort'])}
    assert 'uncertainty_penalty' in w and 'uncertainty' not in w and not w['effort'].dynamic
    s = {p.name: p for p in params_from_settings(SafetySettings)}
    assert s['allow_missing_uncertainty'].default is False
    assert s['command_timeout_s'].check(50.0)


def test_node_param_specs_build():
    from mbrl_ros.nodes import mpc_controller, safety_filter
    names = [p.name for p in mpc_controller.SPECS]
    assert len(names) == len(set(names))
    for key in ('horizon', 'num_samples', 'num_iterations', 'num_elites', 'planner', 'uncertainty_penalty',
                'control_rate_hz', 'time_budget_ms', 'robot'):
        assert key in names
    errs, cfg, w = mpc_controller.settings_from({p.name: p.default for p in mpc_controller.SPECS})
    assert errs == [] and cfg.horizon == PlannerConfig().horizon
    errs, _, _ = mpc_controller.settings_from({'num_samples': 10, 'num_elites': 20})
    assert errs and 'num_elites' in errs[0]
    names = [p.name for p in safety_filter.SPECS]
    assert len(names) == len(set(names)) and 'uncertainty_threshold' in names


# ---- workspace ---------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['arm3', 'arm7'])
def test_workspace_reach_covers_sampled_poses_and_refuses_far_goals(name):
    robot = RobotModel.load(name)
    ws = Workspace.from_robot(robot)
    ee = robot.fk(robot.sample_configurations(np.random.default_rng(1), 2000))
    assert all(ws.check_goal(p) is None for p in ee)
    far = ws.base + np.array([ws.reach * 1.1, 0.0, 0.0])
    assert 'reach' in ws.check_goal(far)
    for bad in ([np.nan, 0, 0], [0, np.inf, 0], [1, 2], 'abc', None):
        assert ws.check_goal(bad)


# ---- control loop ------------------------------------------------------------------------------
def test_control_loop_runs_at_rate_and_stops_cleanly():
    ticks = []
    loop = ControlLoop(lambda: ticks.append(time.monotonic()), 100.0)
    loop.start()
    time.sleep(0.5)
    loop.set_rate(20.0)
    time.sleep(0.5)
    loop.stop()
    n = len(ticks)
    time.sleep(0.1)
    assert len(ticks) == n and not loop.running
    t = np.array(ticks)
    fast = np.sum(t < t[0] + 0.45)
    slow = np.sum(t > t[0] + 0.6)
    assert 20 <= fast <= 50, fast       # ~45 at 100 Hz; loose for a loaded machine
    assert 3 <= slow <= 10, slow        # ~8 at 20 Hz


def test_background_follower_loads_off_thread_and_keeps_the_newest(tmp_path, arm3):
    from mbrl_ros.ros.model_source import BackgroundBundleFollower
    a = write_bundle(tmp_path / 'a', arm3).resolve()
    b = write_bundle(tmp_path / 'b', arm3).resolve()
    loaded, refused = [], []
    f = BackgroundBundleFollower(arm3, loaded.append, lambda text, why: refused.append(why))
    id_a, id_b = load_bundle(a).identity, load_bundle(b).identity   # (hashing the files: not timed)
    t0 = time.perf_counter()
    f.submit(id_a)
    f.submit(f'{tmp_path}/none {"0" * 64}')
    f.submit(id_b)                              # the newest announcement wins
    assert time.perf_counter() - t0 < 0.05      # submit never waits for a load
    deadline = time.monotonic() + 20
    while not f.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.idle()
    assert loaded[-1].identity == id_b == f.current.identity
    assert len(loaded) + len(refused) <= 3


def test_background_follower_a_burst_validates_only_the_newest(tmp_path, arm3):
    # active_model is latest-wins: announcements replaced before their validation started are
    # superseded (counted, reported, never loaded); the newest one is always validated.
    from mbrl_ros.ros.model_source import BackgroundBundleFollower
    good = write_bundle(tmp_path / 'good', arm3).resolve()
    loaded, refused, superseded, starts = [], [], [], []
    f = BackgroundBundleFollower(arm3, loaded.append, lambda text, why: refused.append(why),
                                 on_superseded=superseded.append, min_interval_s=0.3,
                                 pace=lambda: starts.append(time.monotonic()))
    n = 40
    for i in range(n):
        f.submit(f'{tmp_path}/bad_{i} {"0" * 64}')
    f.submit(load_bundle(good).identity)
    deadline = time.monotonic() + 20
    while not f.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.idle()
    assert [b.identity for b in loaded] == [load_bundle(good).identity] == [f.current.identity]
    # every announcement is accounted for: validated (refused or loaded) or superseded
    assert len(refused) + len(loaded) + f.superseded == n + 1 == f.validations + f.superseded
    assert len(superseded) == f.superseded >= n - 2 and f.validations <= 3, (f.validations, refused)
    assert all('[missing_file]' in why for why in refused), refused   # refusals still name the check
    assert starts, 'pace was never called'


def test_background_follower_spaces_its_validations(tmp_path, arm3):
    from mbrl_ros.ros.model_source import BackgroundBundleFollower
    when = []
    f = BackgroundBundleFollower(arm3, lambda b: None, lambda text, why: when.append(time.monotonic()),
                                 min_interval_s=0.2)
    for i in range(4):   # one at a time, each arriving after the previous was validated
        f.submit(f'{tmp_path}/bad_{i} {"0" * 64}')
        deadline = time.monotonic() + 5
        while len(when) <= i and time.monotonic() < deadline:
            time.sleep(0.005)
    assert len(when) == 4 and f.superseded == 0
    assert min(np.diff(when)) >= 0.19, np.diff(when)   # (a loaded machine only makes them longer)
    f.close()


def test_control_loop_wait_between_cycles_returns_after_a_cycle():
    inside = []

    def step():
        inside.append(True)
        time.sleep(0.008)
        inside.pop()
    loop = ControlLoop(step, 50.0)
    assert loop.wait_between_cycles(0.5) is False   # not running: no waiting
    loop.start()
    try:
        for _ in range(10):
            assert loop.wait_between_cycles(1.0) is True
            assert not inside   # the cycle has ended: the caller runs in the loop's slack
    finally:
        loop.stop()
    t0 = time.monotonic()
    assert loop.wait_between_cycles(1.0) is False and time.monotonic() - t0 < 0.1


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='SCHED_FIFO is Linux')
def test_control_loop_priority_is_granted_to_its_thread_only_or_refused_with_the_reason(monkeypatch):
    seen = []
    loop = ControlLoop(lambda: seen.append((os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)), 100.0,
                       priority=7)
    loop.start()
    try:
        assert RosProbe.wait_until(lambda: bool(seen), 2.0, period=0.005)
    finally:
        loop.stop()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER      # the caller's thread is untouched
    if loop.scheduling.startswith('SCHED_FIFO'):           # CAP_SYS_NICE here (root): granted
        assert loop.scheduling == 'SCHED_FIFO 7' and seen[0] == (os.SCHED_FIFO, 7)
    else:                                                  # no capability: said why, normal scheduler
        assert 'refused' in loop.scheduling and seen[0][0] == os.SCHED_OTHER

    def refuse(*_):
        raise PermissionError(1, 'Operation not permitted')
    monkeypatch.setattr(os, 'sched_setscheduler', refuse)
    seen.clear()
    loop = ControlLoop(lambda: seen.append(os.sched_getscheduler(0)), 100.0, priority=7)
    loop.start()
    try:
        assert RosProbe.wait_until(lambda: bool(seen), 2.0, period=0.005)     # the loop runs anyway
    finally:
        loop.stop()
    assert seen[0] == os.SCHED_OTHER
    assert loop.scheduling.startswith('normal (SCHED_FIFO 7 refused:') and 'Operation not permitted' in loop.scheduling
    plain = ControlLoop(lambda: None, 100.0)
    plain.start()
    plain.stop()
    assert plain.scheduling == 'normal'


def _sched():
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='SCHED_FIFO is Linux')
@pytest.mark.parametrize('priority, demoted', [(7, (os.SCHED_FIFO, 6)), (1, (os.SCHED_OTHER, 0))])
def test_a_cycle_running_past_demote_after_drops_below_its_priority_until_it_ends(priority, demoted):
    """50 Hz, demote_after 2 periods: the second cycle spins 150 ms; 40 ms into it the guard drops the
    loop thread one step (priority 1: to the normal scheduler), and the next cycle runs at `priority`
    again. Short cycles are never demoted."""
    seen = []

    def step():
        n = len(seen)
        start = _sched()
        if n == 1:
            t_end = time.monotonic() + 0.15
            while time.monotonic() < t_end:
                pass
        seen.append((start, _sched()))
    loop = ControlLoop(step, 50.0, priority=priority, demote_after=2.0)
    loop.start()
    try:
        assert RosProbe.wait_until(lambda: len(seen) >= 6, 3.0, period=0.005)
    finally:
        loop.stop()
    if not loop.scheduling.startswith('SCHED_FIFO'):   # no CAP_SYS_NICE: nothing to demote, no guard
        assert loop.demotions == 0 and all(s == ((os.SCHED_OTHER, 0),) * 2 for s in seen), seen
        return
    full = (os.SCHED_FIFO, priority)
    assert seen[0] == (full, full)
    assert seen[1] == (full, demoted), seen[:3]     # demoted while it ran
    assert all(s == (full, full) for s in seen[2:6]), seen[:6]   # restored, and short cycles left alone
    assert loop.demotions == 1
    assert loop._guard is None    # stopped with the loop


def test_no_guard_and_no_demotion_where_the_priority_is_refused(monkeypatch):
    """Without CAP_SYS_NICE the loop runs on the normal scheduler: a long cycle has nothing to drop."""
    def refuse(*_):
        raise PermissionError(1, 'Operation not permitted')
    monkeypatch.setattr(os, 'sched_setscheduler', refuse)
    seen = []

    def step():
        if len(seen) == 1:
            time.sleep(0.1)
        seen.append(1)
    loop = ControlLoop(step, 50.0, priority=7, demote_after=2.0)
    loop.start()
    try:
        assert loop._guard is None and 'refused' in loop.scheduling
        assert RosProbe.wait_until(lambda: len(seen) >= 3, 3.0, period=0.005)
    finally:
        loop.stop()
    assert loop.demotions == 0



@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='SCHED_FIFO is Linux')
def test_prioritise_process_reaches_every_thread_and_the_ones_started_later():
    """In a child process (the test process must keep its scheduling): every thread gets SCHED_FIFO,
    or the refusal is reported and nothing changes."""
    import subprocess
    code = '''
import os, threading, time
from mbrl_ros.ros.control_loop import prioritise_process
ev = threading.Event()
t = threading.Thread(target=ev.wait, daemon=True); t.start()
got = prioritise_process(6)
late = []
t2 = threading.Thread(target=lambda: late.append(os.sched_getscheduler(0))); t2.start(); t2.join()
pols = {}
for tid in os.listdir('/proc/self/task'):
    try:
        pols[int(tid)] = os.sched_getscheduler(int(tid))
    except ProcessLookupError:   # a thread that ended meanwhile
        pass
print(got, sorted(set(pols.values())), late[0], os.SCHED_FIFO, os.SCHED_OTHER, prioritise_process(0))
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    fifo, other = int(words[-3]), int(words[-2])
    assert words[-1] == 'normal'                                   # 0: nothing asked, nothing done
    if out.stdout.startswith('SCHED_FIFO 6 ('):                     # granted (root here)
        assert f'[{fifo}]' in out.stdout and int(words[-4]) == fifo   # every thread, and one started later
    else:
        assert out.stdout.startswith('normal (SCHED_FIFO 6 refused:') and f'[{other}]' in out.stdout


# run_node in a process of its own: node_main.spin replaced by one that fails the way rclpy does when a
# signal's shutdown lands while the wait set is built (argv[1] == 'shutdown'), or with the context still valid.
_SPIN_FAILS = """
import sys
import rclpy
from rclpy.node import Node
import mbrl_ros.ros.node_main as node_main

def spin(executor):
    if sys.argv[1] == 'shutdown':
        rclpy.shutdown()
    raise RuntimeError('failed to initialize wait set: the given context is not valid')

node_main.spin = spin
sys.exit(node_main.run_node(lambda: Node('spin_fails'), args=['x', '--ros-args']))
"""


@pytest.mark.ros
@pytest.mark.parametrize('case, rc', [('shutdown', 0), ('context_valid', 1)])
def test_a_spin_error_after_shutdown_is_an_orderly_exit_and_before_it_is_not(case, rc):
    import subprocess
    p = subprocess.run([sys.executable, '-c', _SPIN_FAILS, case], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='OFF'))
    assert p.returncode == rc, p.stderr[-2000:]
    assert ('RuntimeError' in p.stderr) == (rc != 0), p.stderr[-2000:]


@pytest.mark.parametrize('sig', ['SIGINT', 'SIGTERM'])
def test_a_signal_while_a_node_still_imports_ends_it_without_a_traceback(tmp_path, sig):
    """Ctrl-C (or the launcher's shutdown) in the seconds a node spends importing onnxruntime/mujoco:
    the node ends as the signal says, with no KeyboardInterrupt traceback; once running, SIGINT is
    still an orderly exit 0 (node_main gives rclpy Python's own handlers back)."""
    import shutil
    import signal
    import subprocess
    exe = shutil.which('world_model')
    assert exe, 'the world_model console script is not installed'
    proc = subprocess.Popen([exe, '--ros-args', '-p', 'robot:=arm3'], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20.0   # until it loads numpy: past mbrl_ros.nodes, inside its imports
    while time.monotonic() < deadline and proc.poll() is None:
        with open(f'/proc/{proc.pid}/maps') as maps:
            if 'numpy' in maps.read():
                break
        time.sleep(0.01)
    proc.send_signal(getattr(signal, sig))
    out, _ = proc.communicate(timeout=30)
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
    assert proc.returncode == -getattr(signal, sig), (proc.returncode, out)
