"""Stamp helpers in mbrl_ros/ros/conversions.py."""
import pytest

from mbrl_ros.ros.conversions import sec_to_stamp, stamp_to_sec


@pytest.mark.parametrize('t', [0.0, 0.5, 1.9999999999, 0.9999999999996, 2.0, 1795626736.1135206, 123.000000001])
def test_sec_to_stamp_round_trips_and_never_steps_back_a_second(t):
    s = sec_to_stamp(t)
    assert 0 <= s.nanosec < 1_000_000_000
    assert stamp_to_sec(s) == pytest.approx(t, abs=1e-6)


def test_sim_time_accumulated_in_float_steps_stays_monotonic():
    # A simulator adding 0.002 s per step lands just below whole seconds; the stamps must not jump back.
    t, last = 0.0, -1.0
    for _ in range(5000):
        t += 0.002
        now = stamp_to_sec(sec_to_stamp(t))
        assert now > last
        last = now
