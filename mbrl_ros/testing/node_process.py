"""One node as its own process, for integration tests and reliability checks.

`NodeProcess('world_model', 'robot:=arm3', 'model_dir:=/x')` starts
`python -m mbrl_ros.nodes.world_model --ros-args -p robot:=arm3 -p model_dir:=/x`, captures its
output (shown when an assertion about it fails) and always stops it: SIGTERM first, so the node
shuts down cleanly, SIGKILL if it does not within `stop_timeout_s`.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from typing import Callable, Optional


class NodeProcess:
    def __init__(self, node: str, *params: str, stop_timeout_s: float = 10.0):
        self.node = node
        self.params = params
        self.stop_timeout_s = stop_timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    @property
    def command(self) -> list[str]:
        cmd = [sys.executable, '-m', f'mbrl_ros.nodes.{self.node}', '--ros-args']
        for p in self.params:
            cmd += ['-p', p]
        return cmd

    def start(self) -> 'NodeProcess':
        self._log = tempfile.TemporaryFile(mode='w+')
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> Optional[int]:
        """Stop the process (idempotent); returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> 'NodeProcess':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self, tail: int = 5000) -> str:
        if self._log is None:
            return ''
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-tail:]

    def alive(self) -> None:
        """Assert the node still runs (its output in the message if not)."""
        assert self.proc.poll() is None, f'{self.node} exited ({self.proc.returncode}):\n{self.log_text()}'


def interrupt_after(proc: subprocess.Popen, seen: Callable[[str], bool], *, before: Callable[[], None] = None,
                    settle_s: float = 0.0, wait_s: float = 90.0, timeout_s: float = 90.0) -> str:
    """Ctrl-C a process the way a user does: read its stdout (a text pipe) until a line satisfies
    `seen` (or `wait_s` passes, or the output ends), call `before()`, wait `settle_s`, send SIGINT
    and read the rest. Returns all it printed; a process that outlives `timeout_s` is killed."""
    import signal
    import time
    lines = []
    rest = ''
    try:
        deadline = time.monotonic() + wait_s
        for line in proc.stdout:
            lines.append(line)
            if seen(line) or time.monotonic() > deadline:
                break
        if before is not None:
            before()
        time.sleep(settle_s)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return ''.join(lines) + (rest or '')


class Feeder:
    """Calls `tick(k)` every `period_s` on a daemon thread (k counts ticks) until closed: the test
    side of a stream of messages, like a driver publishing at its rate."""

    def __init__(self, tick: Callable[[int], None], period_s: float = 0.01):
        self._tick = tick
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            self._tick(k)
            k += 1
            self._stop.wait(self._period)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def wait_for_status(probe, diagnostics: list, node_suffix: str, timeout: float,
                    predicate: Callable = lambda status: True, since: Optional[int] = None):
    """The first DiagnosticStatus whose name ends with `node_suffix` and satisfies `predicate`,
    among messages collected in `diagnostics` (a RosProbe subscription) from index `since` on
    (default: only those that arrive from now); None after `timeout`."""
    start = len(diagnostics) if since is None else since

    def find():
        for _, array in diagnostics[start:]:
            for status in array.status:
                if status.name.endswith(node_suffix) and predicate(status):
                    return status
        return None
    return probe.wait_until(find, timeout)


class NodeHarness:
    """The test side of one node under test: the probe, the node's process, and a feeder that
    calls `self.tick(k)` every `period_s` (override it to play the rest of the stack)."""

    def __init__(self, probe, node: NodeProcess, period_s: float = 0.01):
        self.probe, self.node = probe, node
        self._feeder = Feeder(self.tick, period_s)

    def tick(self, k: int) -> None:
        pass

    def close(self) -> None:
        self._feeder.close()

    def log_text(self) -> str:
        return self.node.log_text()

    def alive(self) -> None:
        self.node.alive()

    def grows(self, buffer: list, n: int, timeout: float, what: str) -> None:
        """Assert `buffer` (a probe subscription) gets `n` more messages within `timeout`."""
        start = len(buffer)
        ok = self.probe.wait_until(lambda: len(buffer) >= start + n, timeout)
        self.alive()
        assert ok, f'{what} stopped:\n{self.log_text()}'


class ControllerHarness(NodeHarness):
    """A NodeHarness for a controller node (mpc_controller, policy): publishers for its inputs
    (`state_pub`, `goal_pub`, `active_pub`), and its commands on `command_topic` (`cmd`) and
    /diagnostics (`diag`) recorded."""

    def __init__(self, probe, node: NodeProcess, command_topic: str, depth: int = 1000):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from mbrl_ros.ros.conversions import LATCHED
        from mbrl_ros.topics import ACTIVE_MODEL_TOPIC, DIAGNOSTICS_TOPIC, GOAL_TOPIC, STATE_TOPIC
        self.state_pub = probe.publisher(STATE_TOPIC, JointState, 10)
        self.goal_pub = probe.publisher(GOAL_TOPIC, PointStamped, 10)
        self.active_pub = probe.publisher(ACTIVE_MODEL_TOPIC, String, LATCHED)
        self.cmd = probe.subscribe(command_topic, JointState, depth)
        self.diag = probe.subscribe(DIAGNOSTICS_TOPIC, DiagnosticArray, 50)
        self.feeding = True
        super().__init__(probe, node)
