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


# ---- topics the nodes agree on (defined once here) ------------------------------------------------
COMMAND_TOPIC = '/forward_effort_controller/commands'   # what the safety filter sends the robot
# The limits the safety filter enforces, latched, re-sent whenever they change (live parameters too):
# sensor_msgs/JointState, one entry per joint in `name`:
#   effort   = the effort limit it clamps to [Nm] (robot limit x effort_limit_scale), symmetric +-
#   velocity = the largest change of its output from one period to the next [Nm per period]
#              (robot limit x max_effort_step): a rate of the effort, not a joint velocity
#   position = the keep-out band inside each joint range it refuses commands in [rad]
SAFETY_LIMITS_TOPIC = '/mbrl/safety/limits'


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
