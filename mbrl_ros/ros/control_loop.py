"""A control loop in its own thread, paced against absolute deadlines (core `Pacer`).

Why not an rclpy timer: with subscriptions arriving at 100-250 Hz, rclpy's executors (the
multi-threaded one especially) dispatch callbacks slowly enough on a loaded machine that a
50 Hz timer in the same executor fell to ~20-30 Hz in our tests. A dedicated thread keeps
the period whatever the executor is doing; the executor then only stores inputs.

The loop paces on the wall clock (monotonic); nodes still judge message ages on the ROS
clock (sim time when use_sim_time), so under sim time the loop rate is in wall seconds.

`wake()` runs the next cycle at once instead of at its deadline (the safety filter forwards a
fresh MPC command as it arrives: waiting for its own phase added 0-1 period of delay between
the state the command was planned from and the actuator). After a woken cycle the next deadline
is one period plus `wake_grace` later, so a source running at the loop's rate drives the loop,
and the deadline only fires when that source is late. Woken cycles are at least
`min_interval` apart, which bounds the rate whatever floods the wake-ups.

`priority` > 0 runs the loop thread (only it: not the executor, not the DDS threads) under Linux's
SCHED_FIFO real-time policy at that priority, as ros2_control does for its update loop: on a
busy machine the other processes then cannot preempt a cycle. It needs CAP_SYS_NICE (root) or an
rtprio limit (`ulimit -r`, /etc/security/limits.conf); without them the loop says so in
`scheduling` and runs under the normal scheduler. The kernel's RT throttling
(sched_rt_runtime_us, 95 % by default) still leaves the core to others if a cycle never ended.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

from mbrl_ros.core.sim import Pacer
from mbrl_ros.ros.parameters import Param


def control_priority_param(what: str = 'the control loop thread') -> Param:
    """`control_thread_priority`, declared by the nodes on the control path (static: read at start)."""
    return Param('control_thread_priority', 0,
                 f'SCHED_FIFO real-time priority (1-98) of {what}, so that other processes '
                 'cannot preempt it; needs CAP_SYS_NICE or an rtprio limit, else the normal '
                 'scheduler with a warning. 0: the normal scheduler', range=(0, 98), dynamic=False)


def set_fifo(priority: int, tid: int = 0) -> str:
    """SCHED_FIFO at `priority` for thread `tid` (0: the calling thread); returns what it got."""
    try:  # on Linux the sched_* calls act on a thread id (0: the caller)
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        return f'SCHED_FIFO {priority}'
    except (OSError, AttributeError) as exc:
        return (f'normal (SCHED_FIFO {priority} refused: {exc}; needs CAP_SYS_NICE or an rtprio limit, '
                '`ulimit -r`)')


def prioritise_process(priority: int) -> str:
    """SCHED_FIFO for every thread of this process (the DDS threads too), for the light nodes on the
    state path (sim_robot, state_estimator): a state that waits behind other processes makes every
    controller downstream plan from an old one. Threads started later inherit it."""
    if priority <= 0:
        return 'normal'
    got = [set_fifo(priority, int(tid)) for tid in os.listdir('/proc/self/task')] or [set_fifo(priority)]
    refused = [g for g in got if not g.startswith('SCHED_FIFO')]
    return refused[0] if refused else f'SCHED_FIFO {priority} ({len(got)} threads)'


def report_priority(scheduling: str, logger, what: str = 'control thread') -> None:
    """One log line for a real-time priority asked for: granted (info) or refused (warning)."""
    if scheduling != 'normal':
        (logger.info if scheduling.startswith('SCHED_FIFO') else logger.warning)(f'{what}: {scheduling}')


def report_scheduling(loop: 'ControlLoop', logger) -> None:
    """One log line when a real-time priority was asked for: granted (info) or refused (warning)."""
    if loop.priority > 0:
        report_priority(loop.scheduling, logger)


class ControlLoop:
    def __init__(self, step: Callable[[], None], rate_hz: float, name: str = 'control',
                 resync_after_s: float = 0.1, wake_grace: float = 0.25, min_interval: float = 0.5,
                 priority: int = 0):
        """`wake_grace`, `min_interval`: fractions of the period; `priority`: SCHED_FIFO priority of the
        loop thread, 0 = the normal scheduler (see the module docstring)."""
        self._step = step
        self._name = name
        self._resync_after = resync_after_s
        self._rate = float(rate_hz)
        self._new_rate: Optional[float] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._wake_grace = float(wake_grace)
        self._min_interval = float(min_interval)
        self._last_start = -1e18
        self._cycle_done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.cycles = 0
        self.resyncs = 0
        self.woken = 0   # cycles started by wake() rather than by the deadline
        self.priority = int(priority)
        self.scheduling = 'normal'   # what the loop thread got (set when it starts)
        self._scheduled = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_rate(self, rate_hz: float) -> None:
        """Takes effect from the next cycle."""
        self._new_rate = float(rate_hz)

    def wait_between_cycles(self, timeout: Optional[float] = None) -> bool:
        """Block until the loop finishes its next cycle (True), so that work the caller does
        next (on another thread of the same process) falls into the loop's slack before its next
        deadline instead of taking the GIL from a cycle. Returns False at once when the loop is not
        running, or after `timeout` (default: two periods) without a cycle ending."""
        if not self.running or self._stop.is_set():
            return False
        self._cycle_done.clear()
        return self._cycle_done.wait(2.0 / self._rate if timeout is None else timeout)

    def wake(self) -> None:
        """Run the next cycle now (not before `min_interval` after the last one started)."""
        self._wake.set()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._wake.clear()
        self._scheduled.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._scheduled.wait(1.0)   # so `scheduling` is known to whoever logs it next

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and wait for the cycle in progress (if any) to finish."""
        self._stop.set()
        self._wake.set()
        self._cycle_done.set()   # (releases a wait_between_cycles)
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _set_scheduling(self) -> None:
        if self.priority > 0:
            self.scheduling = set_fifo(self.priority)
        self._scheduled.set()

    def _run(self) -> None:
        self._set_scheduling()
        pacer = self._pacer()
        while not self._stop.is_set():
            if self._new_rate is not None:
                self._rate, self._new_rate = self._new_rate, None
                pacer = self._pacer()
            self._last_start = time.monotonic()
            self._step()  # the step catches its own errors: the loop must not die
            self.cycles += 1
            self._cycle_done.set()
            if pacer.wait() is not None:
                self.resyncs += 1

    def _pacer(self) -> Pacer:
        pacer = Pacer(1.0 / self._rate, self._resync_after, sleep=lambda s: self._sleep(pacer, s))
        return pacer

    def _sleep(self, pacer: Pacer, seconds: float) -> None:
        """Sleep until the deadline, or less when woken (then move the deadline)."""
        if not self._wake.wait(seconds) or self._stop.is_set():
            return
        self._wake.clear()
        period = 1.0 / self._rate
        rest = self._last_start + self._min_interval * period - time.monotonic()
        if rest > 0:
            self._stop.wait(rest)
        self.woken += 1
        # Pacer.wait() adds one period to the deadline it slept for: next = now + period + grace.
        pacer.deadline = time.monotonic() + self._wake_grace * period
