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
main_for); the node arms it only when its `hang_timeout_s` parameter is > 0. Every long-running node
takes the same parameter (`hang_timeout_param()`, one spec) and arms it last in its constructor
(`start_hang_watchdog`), after the slow start-up work (bundle loading), and cancels it first in
close(): a slow orderly exit is not a hang.

Two more GIL-free guards for every node process run by run_node (mbrl_ros.ros.node_main):
- `arm_teardown_deadline()`: from the end of spin to the process's exit. A teardown stuck for
  TEARDOWN_TIMEOUT_S (once in CI: world_model still there after SIGINT and SIGTERM, killed) prints
  the stacks and exits 1 before the launcher's SIGINT grace (5 s, as in ros2 launch) runs out, so the
  log says where it stuck instead of only "killed by SIGKILL". It replaces the hang watchdog's timer
  (one per process), and HangWatchdog.close() then leaves it armed.
- `enable_stack_dump_signal()`: `kill -USR1 <pid>` prints every Python thread's stack and the node runs
  on (what py-spy dump would show, with nothing installed).

The watchdog ticks on the executor, not on a node's control-loop thread: a control loop stuck in a
publish() with the GIL held stops the executor too (no Python runs), so it is caught; a loop that is
merely late is the loop's own business (the safety filter holds, the robot's command timeout acts).
"""
from __future__ import annotations

import faulthandler
import signal
import sys
from typing import Optional

from rclpy.clock import Clock, ClockType

from mbrl_ros.ros.parameters import Param

# Below the launchers' SIGINT grace (5 s: mbrl-ros launch and ros2 launch), above any orderly
# teardown here (the longest is sim_robot joining its physics thread, at most 2 s).
TEARDOWN_TIMEOUT_S = 4.0
_teardown_armed = False

# Below this the watchdog could not tell a hang from a busy moment (a model swap validated in the
# executor, a lifecycle transition, a loaded machine) and would restart healthy nodes.
MIN_TIMEOUT_S = 1.0


def _check_timeout(value) -> Optional[str]:
    if 0.0 < value < MIN_TIMEOUT_S:
        return f'must be 0 (off) or at least {MIN_TIMEOUT_S:g} s, got {value}'
    return None


def hang_timeout_param() -> Param:
    """The `hang_timeout_s` parameter every long-running node declares (static: read at start)."""
    return Param('hang_timeout_s', 0.0,
                 'end the process (exit 1, Python stacks on stderr) when the executor has not run for this '
                 'long, e.g. a publish() stuck in the DDS transport holding the GIL; the launch files respawn '
                 f'the node. 0: off; else at least {MIN_TIMEOUT_S:g} s (docs/reliability.md)',
                 range=(0.0, 3600.0), dynamic=False, validator=_check_timeout)


def start_hang_watchdog(node, timeout_s) -> Optional['HangWatchdog']:
    """A HangWatchdog on `node` when `timeout_s` > 0, else None."""
    timeout_s = float(timeout_s)
    return HangWatchdog(node, timeout_s) if timeout_s > 0 else None


def arm_teardown_deadline(timeout_s: float = TEARDOWN_TIMEOUT_S) -> None:
    """The process ends itself (stacks on stderr, exit 1) when its teardown takes longer than `timeout_s`."""
    global _teardown_armed
    _teardown_armed = True
    faulthandler.dump_traceback_later(timeout_s, repeat=False, file=sys.stderr, exit=True)


def disarm_teardown_deadline() -> None:
    global _teardown_armed
    if _teardown_armed:
        faulthandler.cancel_dump_traceback_later()
        _teardown_armed = False


def enable_stack_dump_signal(signum: int = signal.SIGUSR1) -> None:
    """Every Python thread's stack to stderr on `signum`; the process runs on."""
    faulthandler.register(signum, file=sys.stderr, all_threads=True, chain=False)


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
        if not _teardown_armed:  # the teardown deadline has taken the process's one timer
            faulthandler.cancel_dump_traceback_later()
        self._timer.cancel()
