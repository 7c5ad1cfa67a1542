"""Message <-> numpy helpers and the QoS profiles the nodes agree on."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Latched topics (active_model): a late joiner gets the last value.
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# State and command streams: latest value wins, never queue stale control data.
CONTROL = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
SENSOR = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    # Round once, then split: rounding the fraction alone turned e.g. 1.9999999999 into
    # (1 s, 0 ns), a stamp 1 s in the past.
    sec, nanosec = divmod(int(round(t * 1e9)), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def as_array(values, n: int | None = None) -> np.ndarray | None:
    """A float64 array of a message's sequence field, or None when empty / wrong length."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0 or (n is not None and a.size != n):
        return None
    return a
