"""Soak check, short form (the long one: mbrl-ros check soak --duration 1800), and the reach and
memory figures it reports."""
import io

import numpy as np
import pytest

from mbrl_ros.reliability import analysis as A


def test_reach_outcomes_at_3_s():
    ee_t = np.arange(0.0, 10.0, 0.02)
    ee = np.zeros((len(ee_t), 3))
    ee[ee_t >= 2.0] = [0.3, 0.0, 0.0]               # reaches goal 1 after 2 s
    out = A.reach_outcomes([0.0, 4.0, 8.0], [(0.3, 0.0, 0.0), (0.0, 0.3, 0.0), (0.3, 0.0, 0.0)], ee_t, ee, t_end=10.0)
    assert [o.success for o in out] == [True, False, False]
    assert out[0].distance == pytest.approx(0.0) and out[1].distance == pytest.approx(np.hypot(0.3, 0.3))
    assert not out[2].checked                        # 8 + 3 > t_end
    stale = A.reach_outcomes([0.0], [(0.3, 0.0, 0.0)], ee_t[ee_t < 2.5], ee[ee_t < 2.5], t_end=10.0)
    assert not stale[0].success and np.isnan(stale[0].distance)   # no EE data at 3 s: failed
    s = A.success_summary(out)
    assert s['goals'] == 2 and s['successes'] == 1


def test_success_by_window():
    outs = [A.GoalOutcome(t, (0, 0, 0), 0.0, t < 300, True) for t in np.arange(0, 600, 3.0)]
    rows = A.success_by_window(outs, 0.0, 300.0)
    assert [r['success_rate'] for r in rows] == [1.0, 0.0]


def test_memory_growth():
    mb = 2 ** 20
    samples = [(0, 'a', 1, 100 * mb), (120, 'a', 1, 100 * mb), (1800, 'a', 1, 104 * mb),
               (0, 'b', 2, 50 * mb), (120, 'b', 2, 50 * mb), (1800, 'b', 3, 50 * mb)]
    g = A.memory_growth(samples, 120)
    assert g['a']['growth'] == pytest.approx(0.04) and not g['a']['restarted']
    assert g['b']['growth'] is None and g['b']['restarted']


@pytest.mark.ros
@pytest.mark.system
def test_soak_short():
    from mbrl_ros.reliability.harness import ReachingSession
    from mbrl_ros.reliability.soak import format_summary, run_soak
    log = io.StringIO()
    with ReachingSession('arm3', seed=3, log=log) as s:
        s.wait_ready(90)
        res = run_soak(s, 25.0, window_s=12.0, mem_ref_s=6.0, mem_period_s=2.0, progress_s=12.0)
    print(format_summary(res))
    assert not s.left_behind
    assert res['no_crash'], res['crashes']
    assert res['out_of_limit'] == 0
    assert res['reach']['goals'] >= 5
    # 25 s is too short for the 5 % bound of the 30-minute soak (imports settle, caches fill):
    # only a gross leak fails here.
    assert res['max_memory_growth'] is not None and res['max_memory_growth'] < 0.25, res['memory']
