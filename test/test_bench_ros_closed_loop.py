"""`mbrl-ros bench ros-closed-loop` end to end on arm3 (a small untrained bundle): the launched
stack reaches for seeded goals after a reset to the start pose, and the ROS-free reference runs on
the same goals. Figures are not judged here (speed and success belong to the benchmark run);
that the bench measures the right things is: one distance per goal from the simulator, the
filter's periods and the MPC's commands counted, the same goals for both loops."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _model_helpers import write_bundle
from mbrl_ros.core.robot import RobotModel

pytestmark = [pytest.mark.ros, pytest.mark.system]


def _bench(args, timeout=300):
    env = dict(os.environ, MBRL_TEST_DOMAIN_ID=os.environ['ROS_DOMAIN_ID'], PYTHONUNBUFFERED='1')
    return subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'bench', 'ros-closed-loop', *args], env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True, text=True)


def test_bench_runs_the_stack_on_seeded_goals_and_the_ros_free_reference(tmp_path):
    robot = RobotModel.load('arm3')
    bundle = write_bundle(tmp_path / 'bundle', robot)
    p = _bench(['--robot', 'arm3', '--model-dir', str(bundle), '--goals', '2', '--settle', '1.5', '--seed', '3',
                '--compare', '--json', '--set', 'safety_filter.allow_missing_uncertainty=true',
                '--log', str(tmp_path / 'launch.log')])
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    rows = json.loads(p.stdout)
    ros, free = rows['ros'], rows['ros-free']
    assert len(ros['final_distance_m']) == len(free['final_distance_m']) == 2
    assert all(np.isfinite(d) and d >= 0 for d in ros['final_distance_m'] + free['final_distance_m'])
    assert sum(ros['filter_periods'].values()) > 50            # ~3 s of goals at 50 Hz
    assert ros['mpc_commands_per_s'] > 0
    # The MPC's own count of periods without a command came from its /diagnostics (2 goals: a few at most).
    assert isinstance(ros['mpc_missed_periods_own'], int) and 0 <= ros['mpc_missed_periods_own'] < 50
    assert ros['mpc_settings']['horizon'] >= 1
    assert 'left behind' not in p.stderr


def test_bench_refuses_a_bad_set_before_starting_anything(tmp_path):
    p = _bench(['--robot', 'arm3', '--set', 'horizon=3'], 60)
    assert p.returncode == 2 and 'NODE.PARAM=VALUE' in p.stdout, p.stdout + p.stderr
