"""The safety filter's mode changes, read back from its log output in a launch.

The filter logs every change as `mode OLD -> NEW (source: why; ...)` stamped with its own clock:
what switch timings are judged on, free of the delivery delays a loaded machine adds to a
test-side subscriber.
"""
from __future__ import annotations

import re

_SWITCH = re.compile(r'^\[safety_filter\] \[\w+\] \[(?P<t>[\d.]+)\] \[safety_filter\]: mode (?P<old>\w+) -> '
                     r'(?P<new>\w+)(?: \((?P<why>.*)\))?$')
LIMIT_REFUSAL = re.compile(r'^joint \d+ predicted past its (lower|upper) limit margin and the command pushes it further$')


def mode_switches(output_text: str, after: float) -> list[tuple[float, str, str, str]]:
    """(wall time, old, new, reasons) of the filter's mode changes logged after `after`."""
    out = []
    for line in output_text.splitlines():
        m = _SWITCH.match(line)
        if m and float(m['t']) > after:
            out.append((float(m['t']), m['old'], m['new'], m['why'] or ''))
    return out


def refusal_of(why: str, source: str) -> str | None:
    """What the filter said of `source` in a switch's reasons ('mpc: ...; policy: ...'), or None."""
    for part in why.split('; '):
        name, _, text = part.partition(': ')
        if name == source:
            return text
    return None
