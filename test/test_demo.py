"""`mbrl-ros demo` and its report module.

Unit tests of mbrl_ros.core.report on constructed records (no ROS); then the demo end to end
on arm3 with an untrained test bundle (this checks the wiring, the report folder and the bag,
not reaching: an untrained model does not reach), and its refusals when the stack cannot come up.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from _model_helpers import write_bundle
from mbrl_ros.core import report
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.workspace import Workspace


# ---- goals ------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['arm3', 'arm7'])
def test_reachable_goals_are_fk_of_configurations_away_from_limits(name):
    robot = RobotModel.load(name)
    ws = Workspace.from_robot(robot, samples=2000)
    start = robot.fk(robot.home_q)
    goals = report.reachable_goals(robot, np.random.default_rng(3), 8, start=start, workspace=ws)
    assert goals.shape == (8, 3) and np.all(np.isfinite(goals))
    assert np.all(goals[:, 2] >= 0.05)
    assert all(ws.check_goal(g) is None for g in goals)
    prev = np.vstack([start, goals[:-1]])
    assert np.all(np.linalg.norm(goals - prev, axis=1) >= 0.1)
    # Same seed, same goals; another seed, others.
    again = report.reachable_goals(robot, np.random.default_rng(3), 8, start=start, workspace=ws)
    np.testing.assert_array_equal(goals, again)
    assert not np.allclose(goals, report.reachable_goals(robot, np.random.default_rng(4), 8, start=start))


def test_reachable_goals_come_from_the_inner_part_of_the_joint_ranges():
    robot = RobotModel.load('arm3')
    drawn = []

    class Recording:  # the only generator method reachable_goals uses
        def __init__(self):
            self.rng = np.random.default_rng(0)

        def uniform(self, lo, hi, *a, **k):
            drawn.append((np.array(lo), np.array(hi)))
            return self.rng.uniform(lo, hi, *a, **k)
    rng = Recording()
    report.reachable_goals(robot, rng, 3, limit_margin=0.2)
    span = robot.q_max - robot.q_min
    for lo, hi in drawn:
        np.testing.assert_allclose(lo, robot.q_min + 0.2 * span)
        np.testing.assert_allclose(hi, robot.q_max - 0.2 * span)


def test_reachable_goals_says_when_it_cannot_find_enough():
    robot = RobotModel.load('arm3')
    with pytest.raises(RuntimeError, match='found only'):
        report.reachable_goals(robot, np.random.default_rng(0), 3, min_height=10.0, max_tries=50)


# ---- per-goal results -------------------------------------------------------------------------
def _record(goal_period=3.0, tau=(0.5, None), dt=0.02, t0=1000.0):
    """Two goals; the EE approaches goal k exponentially with time constant tau[k] (None: stays put)."""
    rec = report.RunRecord()
    start = np.array([0.0, 0.0, 0.5])
    goals = [np.array([0.3, 0.0, 0.5]), np.array([0.3, 0.2, 0.5])]
    pos = start
    rec.mode_t, rec.modes = [t0 - 1.0, t0 + 0.5, t0 + 1.0], ['hold', 'mpc', 'hold']
    for k, g in enumerate(goals):
        tk = t0 + k * goal_period
        rec.goal_times.append(tk)
        rec.goals.append(tuple(g))
        p0 = pos
        for t in np.arange(0.0, goal_period, dt):
            pos = p0 if tau[k] is None else g + (p0 - g) * np.exp(-t / tau[k])
            rec.ee_t.append(tk + t)
            rec.ee.append(tuple(pos))
    rec.t_end = t0 + 2 * goal_period
    return rec, goals


def test_goal_results_success_time_to_radius_and_modes():
    rec, goals = _record()
    r1, r2 = report.goal_results(rec)
    # Goal 1: d(t) = 0.3 exp(-t / 0.5) -> 2 cm at t = 0.5 ln(15) = 1.354 s.
    assert r1.success and r1.time_to_radius_s == pytest.approx(0.5 * np.log(15), abs=0.03)
    assert r1.start_distance == pytest.approx(0.3)
    assert r1.final_distance < 0.01 and r1.check_after_s == 3.0
    assert r1.modes == ['hold', 'mpc']
    assert r1.mpc_fraction == pytest.approx(0.5 / 3.0)
    # Goal 2: the arm never moves: 20 cm away throughout.
    assert not r2.success and r2.time_to_radius_s is None
    assert r2.final_distance == pytest.approx(np.linalg.norm(goals[1] - goals[0]), abs=1e-3)
    assert r2.modes == ['hold'] and r2.mpc_fraction == 0.0
    tot = report.totals([r1, r2], rec)
    assert tot['successes'] == 1 and tot['goals'] == 2 and tot['reached_2cm'] == 1
    table = report.format_table([r1, r2], tot)
    assert 'total: 1/2 within 2 cm after 3 s' in table
    assert table.count('\n') >= 5


def test_goal_shorter_than_the_check_is_judged_at_its_end_and_flagged():
    rec, _ = _record(goal_period=1.0, tau=(0.2, 0.2))
    r1, _ = report.goal_results(rec)
    assert r1.check_after_s == pytest.approx(1.0)
    assert r1.success   # 0.3 exp(-1/0.2) = 2 mm
    assert '(at 1.0s)' in report.format_table([r1], report.totals([r1]))


def test_a_goal_without_samples_is_a_miss_not_a_crash():
    rec, _ = _record()
    rec.ee_t, rec.ee = [], []
    rs = report.goal_results(rec)
    assert [r.success for r in rs] == [False, False]
    assert report.format_table(rs, report.totals(rs, rec))


def test_plots_and_summary_files(tmp_path):
    rec, _ = _record()
    rng = np.random.default_rng(0)
    rec.unc_t = list(np.linspace(1000, 1006, 300))
    rec.unc = list(rng.uniform(0, 0.1, 300))
    rec.latency_t = list(np.linspace(1000, 1006, 300))
    rec.latency_ms = list(rng.gamma(4.0, 2.0, 300))
    rec.plan_t, rec.plan_p50_ms, rec.plan_p99_ms = [1001.0, 1002.0], [7.0, 7.5], [12.0, 13.0]
    results = report.goal_results(rec)
    paths = report.write_plots(tmp_path, rec, results, title='(test)')
    assert sorted(p.name for p in paths) == ['distance.png', 'modes.png', 'plan_time.png', 'uncertainty.png']
    for p in paths:
        assert p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and p.stat().st_size > 5000
    tot = report.totals(results, rec)
    assert tot['command_latency_ms_p50'] == pytest.approx(np.percentile(rec.latency_ms, 50), abs=1e-3)
    assert tot['plan_ms_p99_last'] == 13.0
    y, txt = report.write_summary(tmp_path, results, tot, report.format_table(results, tot), {'robot': 'x'})
    data = yaml.safe_load(y.read_text())
    assert data['totals']['successes'] == 1 and len(data['goals']) == 2
    assert data['goals'][0]['success'] is True and data['goals'][1]['time_to_2cm_s'] is None
    assert 'total:' in txt.read_text()


def test_plots_of_an_empty_run_still_render(tmp_path):
    rec = report.RunRecord(goal_times=[5.0], goals=[(0.1, 0.0, 0.3)], t_end=6.0)
    paths = report.write_plots(tmp_path, rec, report.goal_results(rec))
    assert len(paths) == 4


# ---- the command end to end -----------------------------------------------------------------
REQUIRED_TOPICS = ['/joint_states', '/mbrl/state', '/mbrl/goal', '/mbrl/mpc/command',
                   '/forward_effort_controller/commands', '/mbrl/safety/mode',
                   '/mbrl/world_model/uncertainty', '/diagnostics']


def _demo(args, timeout=300):
    env = dict(os.environ, MBRL_TEST_DOMAIN_ID=os.environ['ROS_DOMAIN_ID'], PYTHONUNBUFFERED='1')
    return subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'demo', *args], env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)


@pytest.mark.ros
@pytest.mark.system
def test_demo_end_to_end_report_folder_and_bag(tmp_path):
    bundle = write_bundle(tmp_path / 'bundle', RobotModel.load('arm3'))
    out = tmp_path / 'run'
    p = _demo(['--robot', 'arm3', '--model-dir', str(bundle), '--goals', '2', '--goal-period', '2.5',
               '--seed', '1', '--out', str(out)])
    text = p.stdout + p.stderr
    assert p.returncode == 0, text[-5000:]
    assert 'stack ready' in p.stdout and 'total:' in p.stdout, text[-3000:]
    for name in ('summary.txt', 'summary.yaml', 'distance.png', 'uncertainty.png', 'plan_time.png',
                 'modes.png', 'launch.log'):
        assert (out / name).is_file(), name
    summary = yaml.safe_load((out / 'summary.yaml').read_text())
    assert len(summary['goals']) == 2 and summary['settings']['robot'] == 'arm3'
    assert summary['totals']['mpc_commands'] > 0
    assert all(g['samples'] > 0 for g in summary['goals'])
    # The bag: rosbag2 with metadata.yaml, readable by rosbags' AnyReader, with every required topic.
    assert (out / 'bag' / 'metadata.yaml').is_file()
    counts = report.bag_topic_counts(out / 'bag')
    for t in REQUIRED_TOPICS:
        assert counts.get(t, 0) > 0, (t, counts)
    assert counts['/mbrl/goal'] == 2
    assert counts['/joint_states'] > 100
    from rosbags.highlevel import AnyReader

    from mbrl_ros.core.data.bags import typestore
    with AnyReader([out / 'bag'], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if c.topic == '/mbrl/goal']
        goals = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    sent = np.array([[g.point.x, g.point.y, g.point.z] for g in goals])
    np.testing.assert_allclose(sent, [g['goal'] for g in summary['goals']], atol=1e-4)
    assert all(g.header.frame_id == 'world' for g in goals)
    assert 'left behind' not in text


def test_demo_refuses_a_missing_bundle_before_starting_anything(tmp_path):
    p = _demo(['--robot', 'arm3', '--model-dir', str(tmp_path / 'nope'), '--out', str(tmp_path / 'run')], 120)
    assert p.returncode == 1
    assert 'no model bundle at' in p.stderr and 'bundle.yaml' in p.stderr
    assert not (tmp_path / 'run').exists()


def test_demo_refuses_bad_options(tmp_path):
    p = _demo(['--goals', '0', '--out', str(tmp_path / 'run')], 120)
    assert p.returncode == 2 and '--goals must be at least 1' in p.stderr


@pytest.mark.ros
def test_demo_says_when_the_stack_does_not_come_up(tmp_path):
    bundle = write_bundle(tmp_path / 'bundle', RobotModel.load('arm3'))
    bad_launch = tmp_path / 'broken.launch.yaml'
    bad_launch.write_text('launch:\n- node:\n    pkg: mbrl_ros\n    exec: no_such_node\n    name: x\n')
    p = _demo(['--robot', 'arm3', '--model-dir', str(bundle), '--launch-file', str(bad_launch),
               '--startup-timeout', '60', '--out', str(tmp_path / 'run')], 180)
    assert p.returncode == 1, p.stdout + p.stderr
    assert 'before it was ready' in p.stderr or 'not ready after' in p.stderr, p.stderr
    assert 'launch.log' in p.stderr


@pytest.mark.ros
@pytest.mark.system
def test_ctrl_c_ends_the_run_early_with_a_report_and_stops_the_stack(tmp_path):
    import psutil

    from mbrl_ros.testing.node_process import interrupt_after
    bundle = write_bundle(tmp_path / 'bundle', RobotModel.load('arm3'))
    out = tmp_path / 'run'
    env = dict(os.environ, MBRL_TEST_DOMAIN_ID=os.environ['ROS_DOMAIN_ID'], PYTHONUNBUFFERED='1')
    p = subprocess.Popen([sys.executable, '-m', 'mbrl_ros.cli', 'demo', '--robot', 'arm3', '--model-dir',
                          str(bundle), '--goals', '20', '--out', str(out)], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children = []

    def the_stack_runs():
        children.extend(psutil.Process(p.pid).children(recursive=True))
        assert children, 'no stack processes'
    # Ctrl-C once the first goal is under way.
    text = interrupt_after(p, lambda line: line.startswith('goal 1/20'), before=the_stack_runs, settle_s=1.0)
    assert p.returncode == 0, text[-4000:]
    assert 'interrupted after' in text and 'total:' in text, text[-3000:]
    assert (out / 'summary.yaml').is_file() and (out / 'bag' / 'metadata.yaml').is_file()
    assert report.bag_topic_counts(out / 'bag')['/mbrl/goal'] < 20
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [c.pid for c in alive]
