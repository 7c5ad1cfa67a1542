"""The safety filter's mode-change lines, read back the way the launch tests read them."""
from mbrl_ros.testing.filter_log import LIMIT_REFUSAL, mode_switches, refusal_of

LOG = """[launch] started node 'safety_filter' (pid 1)
[safety_filter] [WARN] [100.5] [safety_filter]: mode None -> hold (state: no state received)
[safety_filter] [INFO] [101.0] [safety_filter]: mode hold -> mpc
[mpc_controller] [INFO] [101.2] [mpc_controller]: mode mpc -> hold (not the filter)
[safety_filter] [WARN] [102.25] [safety_filter]: mode mpc -> hold (mpc: joint 1 predicted past its lower limit margin and the command pushes it further; policy: command is stale (120 ms old > 100 ms))
"""


def test_mode_switches_reads_the_filters_lines_after_a_time():
    assert mode_switches(LOG, 0.0) == [
        (100.5, 'None', 'hold', 'state: no state received'),
        (101.0, 'hold', 'mpc', ''),
        (102.25, 'mpc', 'hold', 'mpc: joint 1 predicted past its lower limit margin and the command pushes it '
                                'further; policy: command is stale (120 ms old > 100 ms)')]
    assert [s[0] for s in mode_switches(LOG, 101.0)] == [102.25]


def test_refusal_of_picks_one_sources_reason():
    why = mode_switches(LOG, 102.0)[0][3]
    assert LIMIT_REFUSAL.match(refusal_of(why, 'mpc'))
    assert refusal_of(why, 'policy') == 'command is stale (120 ms old > 100 ms)'
    assert not LIMIT_REFUSAL.match(refusal_of(why, 'policy'))
    assert refusal_of(why, 'state') is None
