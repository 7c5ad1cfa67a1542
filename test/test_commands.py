"""check_command: every way a command can be unfit for an actuator is named."""
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbrl_ros.core.commands import CommandWatchdog, check_command
from mbrl_ros.core.robot import RobotModel


def test_good_commands(arm3):
    assert check_command([0.0, 0.0, 0.0], arm3) is None
    assert check_command(arm3.effort_max, arm3) is None  # the limit itself is allowed
    assert check_command(-arm3.effort_max, arm3) is None
    assert check_command(np.array(arm3.qd_max) * 0.99, arm3, 'velocity') is None


@pytest.mark.parametrize('values, match', [
    ([], 'has 0 values, expected 3'),
    ([1.0, 2.0], 'has 2 values, expected 3'),
    ([1.0, 2.0, 3.0, 4.0], 'has 4 values, expected 3'),
    ([math.nan, 0.0, 0.0], 'non-finite values at arm3_joint1=nan'),
    ([0.0, math.inf, 0.0], 'non-finite values at arm3_joint2=inf'),
    ([0.0, 0.0, -math.inf], 'non-finite values at arm3_joint3=-inf'),
    ([1e9, 0.0, 0.0], r'beyond limits at arm3_joint1=1e\+09 \(limit 20 Nm\)'),
    ([0.0, 0.0, -10.5], r'beyond limits at arm3_joint3=-10.5 \(limit 10 Nm\)'),
    (['a', 'b', 'c'], 'not a sequence of numbers'),
])
def test_bad_effort_commands(arm3, values, match):
    reason = check_command(values, arm3, 'effort')
    assert reason is not None
    assert re.search(match, reason), reason


def test_velocity_limits_are_used_for_velocity(arm3):
    # 15 rad/s is within the 20 Nm effort limit but beyond the 3 rad/s velocity limit.
    assert check_command([15.0, 0.0, 0.0], arm3, 'effort') is None
    assert 'rad/s' in check_command([15.0, 0.0, 0.0], arm3, 'velocity')


def test_unknown_interface(arm3):
    assert 'unknown command interface' in check_command([0, 0, 0], arm3, 'position')


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=6),
       st.sampled_from(['effort', 'velocity']))
@settings(max_examples=300, deadline=None)
def test_accepts_exactly_the_applicable_commands(values, interface):
    robot = RobotModel.load('arm3')
    limit = robot.effort_max if interface == 'effort' else robot.qd_max
    applicable = (len(values) == robot.dof and all(math.isfinite(v) for v in values)
                  and all(abs(v) <= lim for v, lim in zip(values, limit)))
    assert (check_command(values, robot, interface) is None) == applicable


def test_watchdog_holds_then_zeroes_and_counts_trips():
    wd = CommandWatchdog(3, timeout_s=0.1)
    cmd, tripped = wd.current(now=0.0)
    assert np.all(cmd == 0) and not tripped and wd.trips == 0  # never had a command: no trip
    wd.accept([1.0, 2.0, 3.0], now=1.0)
    np.testing.assert_array_equal(wd.current(1.05)[0], [1, 2, 3])
    np.testing.assert_array_equal(wd.current(1.099)[0], [1, 2, 3])
    cmd, tripped = wd.current(1.1001)
    assert np.all(cmd == 0) and tripped and wd.trips == 1 and wd.tripped
    assert not wd.current(5.0)[1] and wd.trips == 1  # one trip per outage, not per cycle
    wd.accept([0.5, 0.0, 0.0], now=6.0)
    assert wd.current(6.0)[0][0] == 0.5 and not wd.tripped
    assert wd.age(6.25) == pytest.approx(0.25)
    wd.clear()
    assert np.all(wd.current(6.01)[0] == 0) and wd.age(6.01) is None
    assert wd.trips == 2
