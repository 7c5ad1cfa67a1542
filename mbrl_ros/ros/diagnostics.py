"""A node's health on /diagnostics (diagnostic_msgs/DiagnosticArray): `Diagnostics` publishes it,
`status_values` reads a status back (for every tool that watches the stack)."""
from __future__ import annotations

from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from mbrl_ros.topics import DIAGNOSTICS_TOPIC

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR
STALE = DiagnosticStatus.STALE

StatusFn = Callable[[], tuple[int, str, dict]]


def status_values(status) -> dict[str, str]:
    """A DiagnosticStatus's key/values as a dict (values are the strings the node published)."""
    return {kv.key: kv.value for kv in status.values}


class Diagnostics:
    """Calls `status()` every `period_s` and publishes (level, message, key/values).

    Nodes keep counters; this only formats them, so the control path never waits on it.
    """

    def __init__(self, node, status: StatusFn, period_s: float = 1.0, hardware_id: str = 'mbrl_ros'):
        self._node = node
        self._status = status
        self._hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        level, message, values = self._status()
        # The level constants above are bytes (b'\x02'); accept a plain int too.
        level = level if isinstance(level, bytes) else bytes([int(level)])
        st = DiagnosticStatus(level=level, name=self._node.get_fully_qualified_name(),
                              message=message, hardware_id=self._hardware_id,
                              values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()])
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(arr)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:.6g}'
    return str(v)
