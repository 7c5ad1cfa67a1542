"""A control loop in its own thread, paced against absolute deadlines (core `Pacer`).

Why not an rclpy timer: with subscriptions arriving at 100-250 Hz, rclpy's executors (the
multi-threaded one especially) dispatch callbacks slowly enough on a loaded machine that a
50 Hz timer in the same executor fell to ~20-30 Hz in our tests. A dedicated thread keeps
the period whatever the executor is doing; the executor then only stores inputs.

The loop paces on the wall clock (monotonic); nodes still judge message ages on the ROS
clock (sim time when use_sim_time), so under sim time the loop rate is in wall seconds.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

from mbrl_ros.core.sim import Pacer


class ControlLoop:
    def __init__(self, step: Callable[[], None], rate_hz: float, name: str = 'control',
                 resync_after_s: float = 0.1):
        self._step = step
        self._name = name
        self._resync_after = resync_after_s
        self._rate = float(rate_hz)
        self._new_rate: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.cycles = 0
        self.resyncs = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_rate(self, rate_hz: float) -> None:
        """Takes effect from the next cycle."""
        self._new_rate = float(rate_hz)

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and wait for the cycle in progress (if any) to finish."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        pacer = Pacer(1.0 / self._rate, self._resync_after)
        while not self._stop.is_set():
            if self._new_rate is not None:
                self._rate, self._new_rate = self._new_rate, None
                pacer = Pacer(1.0 / self._rate, self._resync_after)
            self._step()  # the step catches its own errors: the loop must not die
            self.cycles += 1
            if pacer.wait() is not None:
                self.resyncs += 1
