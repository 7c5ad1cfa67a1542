"""pytest plugin: bring a launch file up through the real `mbrl-ros launch` CLI (launch_pytest style).

    def test_sim(launch_system):
        with launch_system('sim_arm.launch.yaml', args={'robot': 'arm3'},
                           wait_topics=['/joint_states'], timeout=30) as system:
            msg = system.probe.wait_for('/joint_states', JointState)
            system.kill('state_estimator', signal.SIGKILL)
            ...
        assert system.returncode == 0

The runner runs as a subprocess (`python -m mbrl_ros.cli launch ...`), so tests exercise the same
code path as users. Startup waits until every topic in `wait_topics` has a publisher; if the runner
exits first (a node failed), the fixture fails with the launch output. Teardown sends the runner
SIGINT (its orderly shutdown), then checks with psutil that every process it ever started is gone,
kills any that is not and fails the test naming it.

Enable with `pytest_plugins = ['mbrl_ros.testing.pytest_plugin']` in a conftest.py.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from typing import Iterator

import psutil
import pytest

_STARTED = re.compile(r"^\[launch\] started \w+ '(?P<name>.+)' \(pid (?P<pid>\d+)\)")
_ALL_STARTED = re.compile(r'^\[launch\] all \d+ processes started$')
_WATCHDOG_DUMP = re.compile(r'^\[(?P<name>[^\]]+)\] (?P<what>Timeout \(\d+:\d\d:\d\d\)!)')


class LaunchFailed(RuntimeError):
    """The launched system did not come up (or did not go down) as asked; the message has its output."""


class LaunchedSystem:
    def __init__(self, file: str | os.PathLike, args: dict | None = None, wait_topics=(),
                 timeout: float = 30.0, env: dict | None = None, sigint_timeout: float = 5.0,
                 sigterm_timeout: float = 3.0, echo: bool = True):
        self.file = str(file)
        self.args = {k: _arg_text(v) for k, v in (args or {}).items()}
        self.wait_topics = list(wait_topics)
        self.timeout = timeout
        self.env = dict(env or {})
        self.sigint_timeout = sigint_timeout
        self.sigterm_timeout = sigterm_timeout
        self.echo = echo  # copy the launch output to stdout (pytest shows it for failed tests)
        self.output: list[str] = []
        self.runner: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._pids: dict[str, int] = {}
        self._procs: list[psutil.Process] = []  # every process seen, for the no-orphan check
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._probe = None
        self._stopped = False
        self._all_started = False

    # ---- start --------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return ([sys.executable, '-m', 'mbrl_ros.cli', 'launch', self.file]
                + [f'{k}:={v}' for k, v in self.args.items()]
                + ['--sigint-timeout', str(self.sigint_timeout), '--sigterm-timeout', str(self.sigterm_timeout)])

    def start(self) -> 'LaunchedSystem':
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.env.items()})
        env['PYTHONUNBUFFERED'] = '1'
        self.runner = subprocess.Popen(
            self.command(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self._track(self.runner.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._wait_up()
        except BaseException:
            self.stop(check=False)  # `with` never calls __exit__ when __enter__ raises
            raise
        return self

    def _read(self) -> None:
        for raw in iter(self.runner.stdout.readline, b''):
            line = raw.decode('utf-8', errors='replace').rstrip('\r\n')
            m = _STARTED.match(line)
            if m:
                pid = int(m['pid'])
                with self._lock:
                    self._pids[m['name']] = pid
                self._track(pid)
            with self._lock:
                self.output.append(line)
                if _ALL_STARTED.match(line):
                    self._all_started = True
            if self.echo:
                print(line, flush=True)
        self.runner.stdout.close()

    def _track(self, pid: int) -> None:
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        with self._lock:
            self._procs.append(proc)

    def _wait_up(self) -> None:
        deadline = time.monotonic() + self.timeout
        missing = list(self.wait_topics)
        probe = self.probe if self.wait_topics else None
        while True:
            if self.runner.poll() is not None:
                self._reader.join(timeout=2)
                raise LaunchFailed(
                    f'{self.file}: the launch exited with code {self.runner.returncode} before it was up'
                    + (f' (waiting for {", ".join(missing)})' if missing else '') + '; output:\n'
                    + self.output_text())
            if probe is not None:
                missing = [t for t in self.wait_topics if probe.node.count_publishers(t) < 1]
            if not missing and self._all_started:
                return
            if time.monotonic() > deadline:
                what = (f'no publisher on {", ".join(missing)}' if missing
                        else 'the runner did not report its processes started')
                raise LaunchFailed(f'{self.file}: {what} after {self.timeout:g} s; output:\n' + self.output_text())
            time.sleep(0.05)

    # ---- handle -------------------------------------------------------------------------------
    @property
    def probe(self):
        if self._probe is None:
            from mbrl_ros.testing.ros_probe import RosProbe  # rclpy only when a test needs it
            self._probe = RosProbe('launch_probe')
        return self._probe

    def pids(self) -> dict[str, int]:
        """Latest pid of every process the runner started, by name (a respawn updates it)."""
        with self._lock:
            return dict(self._pids)

    def pid(self, name: str) -> int:
        pids = self.pids()
        if name not in pids:
            raise KeyError(f'no process {name!r} in this launch (have: {", ".join(pids) or "none"})')
        return pids[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def output_text(self) -> str:
        with self._lock:
            return '\n'.join(self.output)

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> str | None:
        """The first output line matching the regex `pattern`, or None after `timeout`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.output:
                    if rx.search(line):
                        return line
            time.sleep(0.02)
        return None

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the runner to end by itself (e.g. after a node died); its exit code or None."""
        try:
            self.returncode = self.runner.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=2)
        return self.returncode

    # ---- stop ---------------------------------------------------------------------------------
    def stop(self, check: bool = True) -> list[str]:
        """SIGINT to the runner (orderly shutdown), then make sure nothing it started survives.
        Returns what had to be killed; with `check`, raises LaunchFailed if anything had to be."""
        if self._stopped or self.runner is None:
            return []
        self._stopped = True
        if self._probe is not None:
            self._probe.close()
        # Everything alive now descends from the runner; remember it all before it goes.
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.runner.pid).children(recursive=True):
                with self._lock:
                    self._procs.append(child)
        if self.runner.poll() is None:
            self.runner.send_signal(signal.SIGINT)
        try:
            self.returncode = self.runner.wait(timeout=self.sigint_timeout + self.sigterm_timeout + 10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.runner.pid, signal.SIGKILL)
            self.returncode = self.runner.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        left = []
        with self._lock:
            procs = list(self._procs)
        gone_by = time.monotonic() + 2.0  # PR_SET_PDEATHSIG / group kills land asynchronously
        for proc in procs:
            while _alive(proc) and time.monotonic() < gone_by:
                time.sleep(0.02)
            with contextlib.suppress(psutil.NoSuchProcess):
                if _alive(proc):
                    left.append(f'{proc.pid} {" ".join(proc.cmdline()[:4])}')
                    proc.kill()
        self._report_watchdog_dumps()
        if left and check:
            raise LaunchFailed(f'{self.file}: processes left behind after shutdown (killed now): '
                               + '; '.join(left) + '\noutput:\n' + self.output_text())
        return left

    def _report_watchdog_dumps(self) -> None:
        """A node that ended itself by a watchdog (hang or stuck teardown: mbrl_ros.ros.hang_watchdog) leaves
        faulthandler's 'Timeout (h:mm:ss)!' and its stacks in the output: a pytest warning with them, so a test
        that otherwise passes still shows it in the summary."""
        with self._lock:
            lines = list(self.output)
        for i, line in enumerate(lines):
            m = _WATCHDOG_DUMP.match(line)
            if m:
                stack = [x for x in lines[i + 1:i + 40] if x.startswith(f'[{m["name"]}] ')]
                warnings.warn(f'{self.file}: {m["name"]} ended by its watchdog ({m["what"]}):\n' + '\n'.join(stack),
                              stacklevel=2)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *_):
        self.stop(check=exc_type is None)


def _alive(proc: psutil.Process) -> bool:
    """Still running (a zombie has exited; whoever inherited it reaps it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _arg_text(v) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    return str(v)


@pytest.fixture
def launch_system() -> Iterator:
    """Factory of context managers: `with launch_system(file, args=..., wait_topics=..., timeout=...) as s:`."""
    systems: list[LaunchedSystem] = []

    @contextlib.contextmanager
    def factory(file: str | os.PathLike, args: dict | None = None, wait_topics=(), timeout: float = 30.0,
                env: dict | None = None, **kwargs):
        system = LaunchedSystem(file, args, wait_topics, timeout, env, **kwargs)
        systems.append(system)
        ok = False
        try:
            system.start()
            yield system
            ok = True
        finally:
            system.stop(check=ok)

    yield factory
    for s in systems:  # a generator left unfinished still gets its processes stopped
        s.stop(check=False)


__all__ = ['LaunchFailed', 'LaunchedSystem', 'launch_system']
