"""The reaching benchmark's goals and judgement (ROS-free)."""
import numpy as np
import pytest

from mbrl_ros.core.evaluation import (GoalSpec, ReachMetrics, evaluate_reaching, judge_distances,
                                      sample_goal_chain)
from mbrl_ros.core.robot import RobotModel


@pytest.fixture(scope='module')
def arm3():
    return RobotModel.load('arm3')


def test_goal_chain_follows_its_spec_and_its_seed(arm3):
    spec = GoalSpec()
    goal_q, goals = sample_goal_chain(arm3, 40, seed=5)
    span = arm3.q_max - arm3.q_min
    lo = arm3.q_min + 0.15 * span
    hi = arm3.q_max - 0.15 * span
    assert np.all(goal_q >= lo) and np.all(goal_q <= hi)
    assert np.allclose(arm3.fk(goal_q), goals)
    assert np.all(goals[:, 2] >= spec.min_height_m)
    steps = np.linalg.norm(np.diff(np.vstack([arm3.fk(arm3.home_q)[None], goals]), axis=0), axis=1)
    assert np.all(steps >= spec.min_separation_m)
    again = sample_goal_chain(arm3, 40, seed=5)[1]
    other = sample_goal_chain(arm3, 40, seed=6)[1]
    assert np.array_equal(goals, again) and not np.allclose(goals, other)


def test_judge_distances_success_settle_and_stall():
    dt, m = 0.02, ReachMetrics()
    t = dt * np.arange(1, 251)
    # Converges exponentially from 30 cm: settles, does not stall.
    d = 0.3 * np.exp(-3 * t)
    at3, final, settle, stalled = judge_distances(d, dt, m)
    assert at3 == pytest.approx(d[149]) and final == pytest.approx(d[-1])
    first_in = t[np.argmax(d <= 0.005)]
    assert settle == pytest.approx(first_in) and not stalled
    # Hovers around 1 cm: never settles (NaN), within 2 cm at 3 s.
    hover = 0.01 + 0.005 * np.sin(20 * t)
    at3, final, settle, stalled = judge_distances(hover, dt, m)
    assert at3 <= 0.02 and np.isnan(settle) and not stalled
    # Stuck 40 cm away: stalled.
    stuck = np.full(250, 0.4)
    assert judge_distances(stuck, dt, m)[3]
    # Slow but steady progress of 6 cm/s while far away: not stalled.
    slow = np.maximum(0.5 - 0.06 * t, 0.0)
    assert not judge_distances(slow, dt, m)[3]
    # Enters the radius, leaves it again, comes back at 4 s: settle time 4 s.
    d = np.where(t < 1.0, 0.1, 0.001)
    d[(t > 2.0) & (t < 4.0)] = 0.01
    assert judge_distances(d, dt, m)[2] == pytest.approx(4.0)


def test_chained_run_starts_where_the_last_goal_left_the_arm(arm3):
    goal_q, goals = sample_goal_chain(arm3, 3, seed=1)
    seen_starts = []

    def pd(q, qd, g):     # joint-space PD to the configuration the goal came from
        i = int(np.argmin(np.linalg.norm(goals - g, axis=1)))
        if not seen_starts or seen_starts[-1][0] != i:
            seen_starts.append((i, q.copy()))
        return 10.0 * (goal_q[i] - q) - 1.0 * qd

    res = evaluate_reaching(pd, arm3, n_goals=3, seed=1)
    assert res.start == 'chained' and res.success_rate == 1.0
    assert np.all(res.final_distance_m < 0.005) and np.all(np.isfinite(res.settle_time_s))
    assert not res.stalled.any()
    # Goal 1 and 2 begin where the previous goal's configuration was reached, not at home.
    assert np.allclose(seen_starts[1][1], goal_q[0], atol=0.02)
    assert np.allclose(seen_starts[2][1], goal_q[1], atol=0.02)
    s = res.summary()
    assert s['settled_fraction'] == 1.0 and s['stalled'] == 0 and s['settle_time_s']['median'] < 5.0
    home = evaluate_reaching(pd, arm3, n_goals=3, seed=1, start='home')
    assert home.start == 'home' and home.success_rate == 1.0
