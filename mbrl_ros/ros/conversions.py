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


def limits_to_msg(limits, joint_names, stamp: Time | None = None):
    from sensor_msgs.msg import JointState
    msg = JointState(name=list(joint_names), position=[float(v) for v in limits.joint_margin],
                     velocity=[float(v) for v in limits.step], effort=[float(v) for v in limits.effort])
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def limits_from_msg(msg, joint_names):
    """(CommandLimits in `joint_names` order, None) or (None, why it is malformed)."""
    from mbrl_ros.core.safety import CommandLimits
    try:
        names = list(msg.name)
        n = len(names)
        if sorted(names) != sorted(joint_names) or len(set(names)) != n:
            return None, f'joint names {names} are not this robot\'s {list(joint_names)}'
        sizes = (len(msg.position), len(msg.velocity), len(msg.effort))
        if sizes != (n, n, n):
            return None, f'position/velocity/effort have {sizes[0]}/{sizes[1]}/{sizes[2]} entries for {n} joints'
        order = [names.index(j) for j in joint_names]
        pick = (lambda seq: np.asarray(seq, dtype=np.float64)[order])
        return CommandLimits(pick(msg.effort), pick(msg.velocity), pick(msg.position)), None
    except (ValueError, TypeError, AttributeError) as exc:
        return None, str(exc)
