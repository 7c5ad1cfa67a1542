"""Load check, short form (the long one: mbrl-ros check load --duration 300), and the definitions the
reliability figures rest on (missed periods, limits)."""
import io

import numpy as np
import pytest

from mbrl_ros.reliability import analysis as A


def test_missed_periods_definition():
    P = 0.02
    assert A.missed_in_gap(0.02, P) == 0
    assert A.missed_in_gap(0.0299, P) == 0        # jitter under half a period misses nothing
    assert A.missed_in_gap(0.0301, P) == 1
    assert A.missed_in_gap(0.04, P) == 1          # one period skipped
    assert A.missed_in_gap(0.10, P) == 4


def test_period_stats_on_jittered_stream_with_a_hole():
    rng = np.random.default_rng(0)
    t = np.arange(0, 10, 0.02) + rng.uniform(-0.004, 0.004, 500)
    ok = A.period_stats(t, 0.0, 10.0)
    assert ok.missed == 0 and ok.expected == 500
    holed = t[(t < 4.0) | (t > 4.2)]               # ~10 commands missing
    st = A.period_stats(holed, 0.0, 10.0)
    assert 9 <= st.missed <= 11 and st.gaps_missing == 1 and st.longest_gap_s > 0.2
    assert A.period_stats([], 0.0, 1.0).missed == 49   # nothing at all: every period but the edge one


def test_mode_counts():
    assert A.mode_counts(['mpc', 'mpc', 'hold', 'x'], missed=2) == {'mpc': 2, 'policy': 0, 'hold': 1, 'none': 1,
                                                                   'missed': 2}


@pytest.mark.ros
@pytest.mark.system
def test_load_short_both_cores_busy():
    from mbrl_ros.reliability.harness import ReachingSession
    from mbrl_ros.reliability.load import CpuHogs, format_result, measure
    log = io.StringIO()
    with ReachingSession('arm3', seed=2, log=log) as s:
        s.wait_ready(90)
        with CpuHogs(2) as hogs:
            assert len(hogs.cpu_percent(0.3)) == 2
            res = measure(s, 12.0, tag='load-short')
    print(format_result(res, 'load-short'))
    assert not s.left_behind
    assert res['out_of_limit'] == 0
    # One command per period goes on (the filter's own count), whatever the MPC manages.
    sent = sum(v for v in res['filter_periods'].values() if v is not None)
    assert sent >= 0.8 * res['periods']['expected_periods'], res['filter_periods']
    assert res['periods']['commands'] > 0.5 * res['periods']['expected_periods'], res['periods']
