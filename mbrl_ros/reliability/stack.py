"""The sim stack for the reliability checks: the same launch file, parsed and run by the same
launch runner (mbrl_ros.launch_runner) as `mbrl-ros launch`, but in this process, so that the
check knows every node's pid and start count without parsing output.

`restart_delay`: when set, every node of the launch is restarted that many seconds after it dies:
the file's `respawn_delay` argument is set to it (the launch files respawn every node by default)
and any node the arguments leave unrespawned (`respawn:=false`, sim_robot under sim time) is
respawned too. This is how the chaos check restarts the nodes it kills; without respawn, the
runner shuts the whole stack down when a node dies (its documented behaviour).
"""
from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path
from typing import Optional, TextIO

import psutil

from mbrl_ros.launch_runner import ProcessManager, parse_launch_file
from mbrl_ros.resources import find_resource


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, launch_file: str = 'sim_arm.launch.yaml', args: Optional[dict] = None,
                 restart_delay: Optional[float] = None, log: Optional[TextIO] = None,
                 log_dir: Optional[str] = None):
        self.file = find_resource('launch', launch_file)
        self.args = {k: str(v) for k, v in (args or {}).items()}
        if restart_delay is not None:
            self.args.setdefault('respawn_delay', str(restart_delay))
        self.restart_delay = restart_delay
        self.log = log if log is not None else io.StringIO()
        self.log_dir = log_dir
        self.plan = None
        self.manager: Optional[ProcessManager] = None
        self._thread: Optional[threading.Thread] = None
        self.rc: Optional[int] = None
        self._seen: list[psutil.Process] = []

    def start(self, timeout: float = 30.0) -> 'Stack':
        self.plan = parse_launch_file(self.file, self.args)
        for p in self.plan.processes:
            if self.restart_delay is not None and not p.respawn:
                p.respawn, p.respawn_delay = True, float(self.restart_delay)
        self.manager = ProcessManager(self.plan.processes, out=self.log, log_dir=self.log_dir)
        self._thread = threading.Thread(target=self._run, daemon=True, name='launch_runner')
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not any(line.startswith('[launch] all ') for line in list(self.manager.lines)):
            if self.rc is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError(f'{self.file}: the stack did not start:\n' + self.tail())
            time.sleep(0.05)
        self._track()
        return self

    def _run(self) -> None:
        # Spawns happen on this thread, and PR_SET_PDEATHSIG is tied to the thread that forked:
        # the nodes live exactly as long as this thread (and die with this process however it ends).
        self.rc = self.manager.run()

    def _track(self) -> None:
        for pid in self.pids().values():
            try:
                self._seen.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def pids(self) -> dict[str, int]:
        return self.manager.pids() if self.manager else {}

    def names(self) -> list[str]:
        return [p.desc.name for p in self.manager.procs]

    def starts(self, name: str) -> int:
        return next(p.starts for p in self.manager.procs if p.desc.name == name)

    def exit_codes(self) -> dict[str, list[int]]:
        return {p.desc.name: list(p.exit_codes) for p in self.manager.procs}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pids().get(name)
        if pid is None:
            raise StackError(f'{name} is not running (running: {", ".join(self.pids())})')
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float) -> Optional[float]:
        """time.time() when a new process for `name` is up, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pids().get(name)
            if pid is not None and pid != old_pid:
                self._track()
                return time.time()
            time.sleep(0.01)
        return None

    def tail(self, n: int = 60) -> str:
        return '\n'.join(list(self.manager.lines)[-n:]) if self.manager else ''

    def lines(self) -> list[str]:
        return list(self.manager.lines) if self.manager else []

    def stop(self) -> list[str]:
        """Orderly shutdown through the runner; returns 'pid cmd' of anything that had to be killed after."""
        if self.manager is not None:
            self._track()
            self.manager.request_shutdown()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.plan is not None:
            self.plan.cleanup()
        left = []
        for proc in self._seen:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f'{proc.pid} {" ".join(proc.cmdline()[:4])}')
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
        return left

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def default_args(robot: str, model_dir: Optional[str | Path]) -> dict:
    args = {'robot': robot}
    if model_dir:
        args['model_dir'] = str(Path(model_dir).resolve())
    return args
