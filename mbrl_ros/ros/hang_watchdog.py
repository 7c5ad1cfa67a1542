"""A watchdog that ends a node process whose executor has stopped running, even while a C call
holds the GIL.

Why: a Fast DDS publish() can block inside the transport with the GIL held (docs/reliability.md,
"state_estimator hangs"). Then no Python code of the process runs: no timer, no /diagnostics, no
SIGINT/SIGTERM handler. A Python thread cannot watch for that; faulthandler's watchdog is a C
thread that needs no GIL. Each executor tick re-arms it; when no tick comes for `timeout_s`, it
prints every Python thread's stack to stderr (the launch runner shows it, prefixed with the node's
name) and calls _exit(1). The launch runner then respawns the node or, for a node it does not
respawn, shuts the stack down: either way the failure is visible instead of a silent hang.

faulthandler has one such timer per process, so this is for a node that owns its process (run by
main_for); the node arms it only when its `hang_timeout_s` parameter is > 0.
"""
from __future__ import annotations

import faulthandler
import sys

from rclpy.clock import Clock, ClockType


class HangWatchdog:
    def __init__(self, node, timeout_s: float, period_s: float | None = None):
        if timeout_s <= 0:
            raise ValueError(f'hang watchdog timeout must be > 0, got {timeout_s}')
        self.timeout_s = float(timeout_s)
        self._stream = sys.stderr
        self._arm()
        # Steady clock: a paused or dead sim /clock must not look like a hang (or hide one).
        self._timer = node.create_timer(period_s or min(1.0, self.timeout_s / 4), self._arm,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _arm(self) -> None:
        # Re-arming cancels the previous deadline: the process ends only after timeout_s
        # without a single executor tick.
        faulthandler.dump_traceback_later(self.timeout_s, repeat=False, file=self._stream, exit=True)

    def close(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self._timer.cancel()
