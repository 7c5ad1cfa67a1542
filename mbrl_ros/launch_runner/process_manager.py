"""Runs a launch plan: one process per entry, output prefixed, orderly shutdown, nothing left behind.

- Each process gets its own session (process group), so a signal reaches the node and any child it
  started, and a terminal's Ctrl-C reaches only the runner, which then shuts everything down in order.
- Linux: each child is also tied to the runner with PR_SET_PDEATHSIG, so even a SIGKILLed runner
  takes its nodes with it.
- Shutdown (SIGINT/SIGTERM to the runner, or a node that died): SIGINT to every group, wait
  `sigint_timeout`, then SIGTERM, wait `sigterm_timeout`, then SIGKILL. A second Ctrl-C skips ahead.
- A node that exits on its own: respawned after `respawn_delay` if `respawn`; otherwise a non-zero
  exit or a signal shuts the rest down and the runner exits 1; a clean exit (0) leaves the rest running.
  Exit status EX_CONFIG (78) means "cannot start with this configuration": it would fail the same
  way every `respawn_delay`, so it is never respawned; it ends the launch like any failure.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from mbrl_ros.launch_runner.description import ProcessDescription

_PR_SET_PDEATHSIG = 1
EX_CONFIG = 78  # sysexits.h: a configuration error (nodes: mbrl_ros.ros.node_main)


def _pdeathsig_fn() -> Callable[[], None] | None:
    if not sys.platform.startswith('linux'):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec():  # runs in the child between fork and exec: keep it to one syscall
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return preexec


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f'killed by {signal.Signals(-code).name}'
        except ValueError:
            return f'killed by signal {-code}'
    return f'exited with code {code}'


@dataclass
class _Proc:
    desc: ProcessDescription
    popen: subprocess.Popen | None = None
    readers: list[threading.Thread] = field(default_factory=list)
    respawn_at: float | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    log: TextIO | None = None
    reaped: bool = True  # no process, or its exit has been handled

    @property
    def alive(self) -> bool:
        return self.popen is not None and not self.reaped


class ProcessManager:
    def __init__(self, processes: list[ProcessDescription], out: TextIO | None = None,
                 sigint_timeout: float = 5.0, sigterm_timeout: float = 3.0,
                 log_dir: str | os.PathLike | None = None, keep_lines: int = 20000):
        self.procs = [_Proc(p) for p in processes]
        self.out = out if out is not None else sys.stdout
        self.sigint_timeout = sigint_timeout
        self.sigterm_timeout = sigterm_timeout
        self.log_dir = Path(log_dir) if log_dir else None
        self.lines: deque[str] = deque(maxlen=keep_lines)  # everything printed, for callers/tests
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._hurry = threading.Event()  # second signal: skip the polite phases
        self._preexec = _pdeathsig_fn()
        self.failed: list[str] = []

    # ---- output -------------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        with self._print_lock:
            self.lines.append(line)
            try:
                self.out.write(line + '\n')
                self.out.flush()
            except (OSError, ValueError):  # stdout closed (e.g. a pipe reader went away): keep running
                pass

    def info(self, msg: str) -> None:
        self.emit(f'[launch] {msg}')

    def _reader(self, proc: _Proc, stream, to_screen: bool) -> None:
        prefix = f'[{proc.desc.name}] '
        for raw in iter(stream.readline, b''):
            line = raw.decode('utf-8', errors='replace').rstrip('\r\n')
            if proc.log is not None:
                try:
                    proc.log.write(line + '\n')
                    proc.log.flush()
                except (OSError, ValueError):
                    pass
            if to_screen:
                self.emit(prefix + line)
            else:
                with self._print_lock:
                    self.lines.append(prefix + line)
        stream.close()

    # ---- processes ----------------------------------------------------------------------------
    def _spawn(self, proc: _Proc) -> bool:
        d = proc.desc
        env = dict(os.environ)
        for k, v in d.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        env.setdefault('PYTHONUNBUFFERED', '1')  # python nodes: lines arrive as they are printed
        proc.respawn_at = None
        try:
            proc.popen = subprocess.Popen(
                d.cmd, env=env, cwd=d.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=self._preexec)
        except OSError as exc:
            self.info(f'{d.kind} {d.name!r} could not be started: {exc} (command: {" ".join(d.cmd)})')
            proc.popen = None
            return False
        proc.starts += 1
        proc.reaped = False
        if d.output == 'log' and self.log_dir is not None and proc.log is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            proc.log = open(self.log_dir / f'{d.name.replace("/", "_")}.log', 'a')
        # 'log': stdout goes to the log file only; stderr is still shown, as with ros2 launch.
        proc.readers = [
            threading.Thread(target=self._reader, args=(proc, proc.popen.stdout, d.output != 'log'), daemon=True),
            threading.Thread(target=self._reader, args=(proc, proc.popen.stderr, True), daemon=True),
        ]
        for t in proc.readers:
            t.start()
        again = f' (restart {proc.starts - 1})' if proc.starts > 1 else ''
        self.info(f'started {d.kind} {d.name!r} (pid {proc.popen.pid}){again}')
        return True

    def _signal_group(self, proc: _Proc, sig: int) -> None:
        if proc.popen is None:
            return
        try:
            os.killpg(proc.popen.pid, sig)  # the session leader's pid is the group id
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self, proc: _Proc) -> int:
        code = proc.popen.returncode
        for t in proc.readers:  # let the last lines come out before the exit message
            t.join(timeout=1.0)
        # A child the node left behind in its group goes with it.
        self._signal_group(proc, signal.SIGKILL)
        proc.exit_codes.append(code)
        proc.reaped = True
        return code

    # ---- main loop ----------------------------------------------------------------------------
    def request_shutdown(self, hurry: bool = False) -> None:
        if hurry:
            self._hurry.set()
        self._stop.set()

    def _on_signal(self, signum, _frame):
        name = signal.Signals(signum).name
        if self._stop.is_set():
            self._hurry.set()
        else:
            self._stop.set()
        self._signal_name = name

    _signal_name: str | None = None

    def run(self) -> int:
        """Start everything and supervise until done; returns the runner's exit status."""
        restore = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                restore[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            for p in self.procs:
                if p.log is not None:
                    p.log.close()

    def _run(self) -> int:
        if not self.procs:
            self.info('nothing to launch')
            return 0
        # Spawns happen on this thread only: PR_SET_PDEATHSIG follows the thread that forked.
        for p in self.procs:
            if not self._spawn(p):
                self.failed.append(p.desc.name)
                self.request_shutdown()
                break
        else:
            self.info(f'all {len(self.procs)} processes started')  # the test fixture waits for this line
        while not self._stop.is_set():
            now = time.monotonic()
            for p in self.procs:
                if p.alive and p.popen.poll() is not None:
                    self._on_exit(p)
                if p.respawn_at is not None and now >= p.respawn_at and not self._stop.is_set():
                    if not self._spawn(p):
                        self.failed.append(p.desc.name)
                        self.request_shutdown()
            if all(not p.alive and p.respawn_at is None for p in self.procs):
                break
            self._stop.wait(0.05)
        if self._signal_name:
            self.info(f'{self._signal_name} received: shutting down')
        forced = self.shutdown()
        if self.failed:
            return 1
        return 1 if forced else 0

    def _on_exit(self, p: _Proc) -> None:
        code = self._reap(p)
        d = p.desc
        msg = f'{d.kind} {d.name!r} (pid {p.popen.pid}) {describe_exit(code)}'
        if code == EX_CONFIG:
            self.failed.append(d.name)
            why = ': not respawning it (a restart would fail the same way)' if d.respawn else ''
            self.info(f'{msg} (configuration error; its log says what to fix){why}; '
                      'shutting down the other processes')
            self._stop.set()
        elif d.respawn and 0 <= d.respawn_max_retries < p.starts:
            self.failed.append(d.name)
            self.info(f'{msg}; respawned {p.starts - 1} times already (respawn_max_retries '
                      f'{d.respawn_max_retries}): shutting down the other processes')
            self._stop.set()
        elif d.respawn:
            p.respawn_at = time.monotonic() + d.respawn_delay
            self.info(f'{msg}; respawning in {d.respawn_delay:g} s')
        elif code != 0:
            self.failed.append(d.name)
            self.info(f'{msg}; shutting down the other processes')
            self._stop.set()
        else:
            self.info(msg)

    def shutdown(self) -> list[str]:
        """Stop every running process: SIGINT, then SIGTERM, then SIGKILL. Returns the names of
        those that needed SIGKILL."""
        for p in self.procs:
            p.respawn_at = None
        phases = [(signal.SIGINT, self.sigint_timeout), (signal.SIGTERM, self.sigterm_timeout),
                  (signal.SIGKILL, 5.0)]
        forced: list[str] = []
        for sig, timeout in phases:
            for p in self.procs:  # exited since the last look: report it like the others
                if p.alive and p.popen.poll() is not None:
                    code = self._reap(p)
                    self.info(f'{p.desc.kind} {p.desc.name!r} (pid {p.popen.pid}) {describe_exit(code)}')
            running = [p for p in self.procs if p.alive]
            if not running:
                break
            if sig == signal.SIGKILL:
                forced = [p.desc.name for p in running]
                self.info('still running after SIGTERM, killing: ' + ', '.join(forced))
            elif sig == signal.SIGTERM:
                self.info('still running after SIGINT, sending SIGTERM: ' + ', '.join(p.desc.name for p in running))
            for p in running:
                self._signal_group(p, sig)
            hurry_seen = self._hurry.is_set()
            deadline = time.monotonic() + (min(timeout, 0.5) if hurry_seen else timeout)
            while True:
                for p in running:  # report each exit as it happens
                    if p.alive and p.popen.poll() is not None:
                        code = self._reap(p)
                        self.info(f'{p.desc.kind} {p.desc.name!r} (pid {p.popen.pid}) {describe_exit(code)}')
                if not any(p.alive for p in running) or time.monotonic() > deadline:
                    break
                if self._hurry.is_set() and not hurry_seen and sig != signal.SIGKILL:
                    break  # a second Ctrl-C: on to the next phase now
                time.sleep(0.02)
        # Whatever is still there (cannot happen short of an unkillable D-state process): say so.
        stuck = [p for p in self.procs if p.alive]
        for p in stuck:
            self.info(f'{p.desc.name!r} (pid {p.popen.pid}) did not exit even after SIGKILL')
        return forced + [p.desc.name for p in stuck]

    def pids(self) -> dict[str, int]:
        return {p.desc.name: p.popen.pid for p in self.procs if p.alive}
