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

`demote_after` (periods, 0 = off) drops the loop thread one priority step below `priority` (to the
normal scheduler from priority 1) while a cycle runs longer than that, and restores it when the
cycle ends. For the MPC: at the priority of the state path, the policy and the safety filter, a plan
that ran for seconds (a huge num_samples set live) starved them on 2 cores, and the filter held
where the policy should have covered (41 of 200 periods); running the MPC one below all the time
instead cost it 356 against 26 missed periods in normal running, where its plans fit their period.
A guard thread, one step above the loop, watches the cycle's length and does the demoting.
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
    """SCHED_FIFO at `priority` for thread `tid` (0: the calling thread), the normal scheduler for
    priority 0; returns what it got ('gone' when the thread ended meanwhile)."""
    try:  # on Linux the sched_* calls act on a thread id (0: the caller)
        if priority <= 0:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            return 'normal'
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        return f'SCHED_FIFO {priority}'
    except ProcessLookupError:
        return 'gone'
    except (OSError, AttributeError) as exc:
        return (f'normal (SCHED_FIFO {priority} refused: {exc}; needs CAP_SYS_NICE or an rtprio limit, '
                '`ulimit -r`)')


def prioritise_process(priority: int) -> str:
    """SCHED_FIFO for every thread of this process (the DDS threads too), for the light nodes on the
    state path (sim_robot, state_estimator): a state that waits behind other processes makes every
    controller downstream plan from an old one. Threads started later inherit it."""
    if priority <= 0:
        return 'normal'
    got = [g for g in (set_fifo(priority, int(tid)) for tid in os.listdir('/proc/self/task'))
           if g != 'gone'] or [set_fifo(priority)]   # 'gone': a thread that ended meanwhile
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
                 priority: int = 0, demote_after: float = 0.0):
        """`wake_grace`, `min_interval`: fractions of the period; `priority`: SCHED_FIFO priority of the
        loop thread, 0 = the normal scheduler; `demote_after`: periods a cycle may run before the
        loop thread drops below `priority` until it ends, 0 = never (see the module docstring)."""
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
        self.demote_after = float(demote_after)
        self.demotions = 0           # cycles that ran past demote_after periods (and were demoted)
        self._tid = 0                # the loop thread's native id, for the guard
        self._cycle_begun = threading.Event()
        self._cycle_over = threading.Event()
        self._demoted = False
        self._demote_lock = threading.Lock()   # a demotion and the cycle's end never interleave
        self._cycle_id = 0
        self._guard: Optional[threading.Thread] = None

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
        self._cycle_begun.set()  # (releases the guard)
        self._cycle_over.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        g, self._guard = self._guard, None
        if g is not None:
            g.join(timeout)

    def _set_scheduling(self) -> None:
        if self.priority > 0:
            self.scheduling = set_fifo(self.priority)
        self._tid = threading.get_native_id()
        if self.demote_after > 0 and self.scheduling.startswith('SCHED_FIFO'):
            self._guard = threading.Thread(target=self._watch_cycles, name=f'{self._name}-guard', daemon=True)
            self._guard.start()
        self._scheduled.set()

    def _run(self) -> None:
        self._set_scheduling()
        guarded = self._guard is not None   # (no guard: no bookkeeping for it in the cycle)
        pacer = self._pacer()
        while not self._stop.is_set():
            if self._new_rate is not None:
                self._rate, self._new_rate = self._new_rate, None
                pacer = self._pacer()
            self._last_start = time.monotonic()
            if guarded:
                self._cycle_id += 1
                self._cycle_over.clear()
                self._cycle_begun.set()
            self._step()  # the step catches its own errors: the loop must not die
            if guarded:
                with self._demote_lock:
                    self._cycle_over.set()
                    if self._demoted:
                        self._demoted = False
                        set_fifo(self.priority)
            self.cycles += 1
            self._cycle_done.set()
            if pacer.wait() is not None:
                self.resyncs += 1

    def _watch_cycles(self) -> None:
        """The guard: demote the loop thread while a cycle runs past `demote_after` periods."""
        set_fifo(min(self.priority + 1, 98))   # it must get the CPU the loop thread is hogging
        while not self._stop.is_set():
            self._cycle_begun.wait()
            self._cycle_begun.clear()
            cycle, limit = self._cycle_id, self._last_start + self.demote_after / self._rate - time.monotonic()
            if self._stop.is_set() or self._cycle_over.wait(max(limit, 0.0)):
                continue
            with self._demote_lock:
                if self._cycle_over.is_set() or cycle != self._cycle_id:
                    continue   # it ended meanwhile
                set_fifo(self.priority - 1, self._tid)   # (from 1: the normal scheduler)
                self._demoted = True
                self.demotions += 1
            self._cycle_over.wait()

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
