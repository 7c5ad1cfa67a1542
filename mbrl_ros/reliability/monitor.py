"""`MemorySampler` records the RSS (psutil) of every node process of the stack, by node name.

What the stack sends and says is watched by mbrl_ros.testing.stack_observer.StackObserver.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import psutil


class MemorySampler:
    """RSS of every node process (pids from `pids_fn() -> {name: pid}`) every `period_s`, on a thread."""

    def __init__(self, pids_fn: Callable[[], dict], period_s: float = 10.0):
        self.pids_fn = pids_fn
        self.period_s = period_s
        self.samples: list[tuple[float, str, int, int]] = []   # (t, node, pid, rss bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name='memory_sampler')

    def start(self) -> 'MemorySampler':
        self._thread.start()
        return self

    def sample(self) -> None:
        t = time.time()
        for name, pid in self.pids_fn().items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.samples.append((t, name, pid, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()  # the end point
