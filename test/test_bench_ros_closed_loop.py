"""`mbrl-ros bench ros-closed-loop` end to end on arm3 (a small untrained bundle): the launched
stack reaches for chained seeded goals (home once per seed), and the ROS-free reference runs on the
same goals. Figures are not judged here (speed and success belong to the benchmark run); that the
bench measures the right things is: one judged distance series per goal from the simulator, the
filter's periods and the MPC's commands counted per seed, the same goals for both loops. Plus the
pure pieces: resampling the EE stream onto control steps, and the summary."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _model_helpers import write_bundle
from mbrl_ros.bench.ros_closed_loop import goal_distances, summarize
from mbrl_ros.core.evaluation.reaching import ReachMetrics
from mbrl_ros.core.robot import RobotModel

ros_system = [pytest.mark.ros, pytest.mark.system]


def _bench(args, timeout=300):
    env = dict(os.environ, MBRL_TEST_DOMAIN_ID=os.environ['ROS_DOMAIN_ID'], PYTHONUNBUFFERED='1')
    return subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'bench', 'ros-closed-loop', *args], env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True, text=True)


@pytest.mark.ros
@pytest.mark.system
def test_bench_runs_chained_seeded_goals_and_the_ros_free_reference(tmp_path):
    robot = RobotModel.load('arm3')
    bundle = write_bundle(tmp_path / 'bundle', robot)
    p = _bench(['--robot', 'arm3', '--model-dir', str(bundle), '--goals', '2', '--goal-s', '2', '--settle', '1.5',
                '--seeds', '3,4', '--compare', '--json', '--set', 'safety_filter.allow_missing_uncertainty=true',
                '--log', str(tmp_path / 'launch.log')])
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    rows = json.loads(p.stdout)
    ros, free = rows['ros'], rows['ros-free']
    assert ros['start'] == 'chained' and [r['seed'] for r in ros['runs']] == [r['seed'] for r in free['runs']] == [3, 4]
    for r in ros['runs'] + free['runs']:
        d = r['per_goal']
        assert len(d['final_distance_m']) == len(d['distance_at_settle_m']) == len(d['settle_time_s']) == 2
        assert all(np.isfinite(v) and v >= 0 for v in d['final_distance_m'] + d['distance_at_settle_m'])
        assert 0.0 <= r['success_rate'] <= 1.0 and r['goals'] == 2
    for r in ros['runs']:
        assert sum(r['filter_periods'][m] for m in ('mpc', 'policy', 'hold')) > 100   # ~4 s of goals at 50 Hz
        assert r['mpc_commands_per_s'] > 0
        # The MPC's own count of periods without a command came from its /diagnostics (a few at most).
        assert isinstance(r['mpc_missed_periods_own'], int) and 0 <= r['mpc_missed_periods_own'] < 50
    assert ros['overall']['goals'] == free['overall']['goals'] == 4
    # The filter's limits were read from its latched topic (arm3: 20, 20, 10 Nm at scale 1).
    assert np.allclose(ros['command_limits']['effort'], [20.0, 20.0, 10.0])
    assert ros['mpc_settings']['horizon'] >= 1
    assert 'left behind' not in p.stderr and 'seed 4 goal 2/2 (4/4)' in p.stderr


def test_bench_refuses_bad_arguments_before_starting_anything(tmp_path):
    for args, what in ((['--set', 'horizon=3'], 'NODE.PARAM=VALUE'), (['--seeds', '1,x'], '--seeds'),
                       (['--arm-process'], 'real_arm.launch.yaml'), (['--settle', '6'], '--settle')):
        p = _bench(['--robot', 'arm3', *args], 60)
        assert p.returncode == 2 and what in p.stdout, p.stdout + p.stderr


def test_goal_distances_resample_the_latest_sample_at_each_control_step():
    goal = np.zeros(3)
    # 250 Hz samples moving along x at 1 m/s from x = 1 at t = 10.0; the goal sent at t0 = 10.0.
    ee = [(10.0 + 0.004 * i, (1.0 + 0.004 * i, 0.0, 0.0)) for i in range(300)]
    d = goal_distances(ee[::-1], goal, 10.0, 1.0)      # order of arrival does not matter
    assert d.shape == (50,)
    # step k is at t0 + (k+1)·0.02: the sample at that time exactly (every 5th sample).
    assert np.allclose(d, 1.0 + 0.02 * np.arange(1, 51), atol=1e-9)
    # A gap in the stream holds the last sample (what the arm was last seen doing), never a future one.
    gap = [s for s in ee if not 10.1 < s[0] < 10.3]
    d = goal_distances(gap, goal, 10.0, 1.0)
    assert np.allclose(d[4:14], d[4]) and np.isclose(d[4], 1.1)
    assert goal_distances([], goal, 10.0, 1.0) is None


def test_summary_counts_never_settled_as_the_whole_window():
    m = ReachMetrics()
    s = summarize({'distance_at_settle_m': [0.01, 0.03, 0.001], 'final_distance_m': [0.002, 0.025, 0.001],
                   'settle_time_s': [1.5, float('nan'), float('nan')], 'stalled': [False, True, False]}, m)
    assert s['goals'] == 3 and s['success_rate'] == pytest.approx(2 / 3) and s['success_at_end_rate'] == pytest.approx(2 / 3)
    assert s['final_mm']['median'] == pytest.approx(2.0) and s['settled_rate'] == pytest.approx(1 / 3)
    assert s['settle_s_median'] == float('inf') and s['stalled'] == 1
