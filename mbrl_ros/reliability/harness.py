"""One running system for a reliability check: the sim stack (Stack), a monitor, a goal driver.

    with ReachingSession(robot='arm7', restart_delay=3.0, liveness=True) as s:
        s.wait_ready()
        ... s.stack.kill('mpc_controller') ... s.monitor.commands() ...
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, TextIO

from mbrl_ros.reliability.stack import Stack, default_args


class NotReady(RuntimeError):
    pass


def bundle_has_policy(model_dir: Path) -> bool:
    return (Path(model_dir) / 'policy.onnx').is_file()


class ReachingSession:
    def __init__(self, robot: str = 'arm7', model_dir: Optional[str] = None, restart_delay: Optional[float] = None,
                 liveness: bool = False, goal_period_s: float = 3.0, seed: int = 0,
                 log: Optional[TextIO] = None, log_dir: Optional[str] = None, extra_args: Optional[dict] = None):
        from mbrl_ros.core.robot import RobotModel
        from mbrl_ros.resources import default_model_dir
        self.robot = RobotModel.load(robot)
        self.model_dir = Path(model_dir).resolve() if model_dir else default_model_dir(self.robot.name)
        self.has_policy = bundle_has_policy(self.model_dir)
        self.stack = Stack(args={**default_args(robot, self.model_dir), **(extra_args or {})},
                           restart_delay=restart_delay, log=log, log_dir=log_dir)
        self.liveness = liveness
        self.goal_period_s = goal_period_s
        self.seed = seed
        self.probe = self.monitor = self.driver = None
        self.t_ready: Optional[float] = None

    def __enter__(self) -> 'ReachingSession':
        from mbrl_ros.reliability.goals import GoalDriver
        from mbrl_ros.testing.ros_probe import RosProbe
        from mbrl_ros.testing.stack_observer import StackObserver
        try:
            self.probe = RosProbe('reliability_monitor')
            self.monitor = StackObserver(self.probe, self.robot, liveness=self.liveness)
            self.stack.start()
            self.driver = GoalDriver(self.probe, self.robot, self.goal_period_s, self.seed).start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Until the filter passes MPC commands (mode mpc); returns the time (time.time())."""
        ok = self.monitor.wait(lambda: self.monitor.mode == 'mpc', timeout, 0.05)
        if not ok:
            raise NotReady(f'the stack did not reach mode mpc in {timeout:g} s (mode {self.monitor.mode}); '
                           'launch output:\n' + self.stack.tail(80))
        self.t_ready = time.time()
        return self.t_ready

    def __exit__(self, *exc) -> None:
        if self.driver is not None:
            self.driver.close()
        self.left_behind = self.stack.stop()
        if self.probe is not None:
            self.probe.close()


def load_note() -> str:
    import os
    try:
        l1, l5, l15 = os.getloadavg()
        return f'load average {l1:.2f} {l5:.2f} {l15:.2f} on {os.cpu_count()} CPUs'
    except OSError:
        return 'load average n/a'


# ---- shared by mbrl-ros check chaos, load, soak (reliability/checks.py) ------------------------
def add_common_arguments(p, duration: float) -> None:
    p.add_argument('--duration', type=float, default=duration, metavar='S', help='seconds')
    p.add_argument('--robot', default='arm7', help='built-in robot')
    p.add_argument('--model-dir', default=None, help='model bundle (default: the shipped models/<robot>)')
    p.add_argument('--seed', type=int, default=0, help='seed of goals (and faults)')
    p.add_argument('--log', default=None, metavar='FILE',
                   help="the nodes' output (default /tmp/mbrl_<check>_<pid>.log)")
    p.add_argument('--json', default=None, metavar='FILE', help='write every figure as JSON here')
    p.add_argument('--startup-timeout', type=float, default=120.0, metavar='S',
                   help='seconds to wait for the stack to come up')


def open_log(args, check: str):
    import os
    path = args.log or f'/tmp/mbrl_{check}_{os.getpid()}.log'
    return path, open(path, 'w', buffering=1)


def write_json(path, result: dict) -> None:
    import json
    if path:
        Path(path).write_text(json.dumps(result, indent=1, default=str))


@contextmanager
def script_session(check: str, args, domain: int, **session_kw) -> Iterator[ReachingSession]:
    """The frame every reliability script shares: node output to a log file, a header line, the
    stack up and reaching (exit status 2, with the reason, when it does not come up)."""
    log_path, log = open_log(args, check)
    from mbrl_ros.testing.isolation import describe_isolation
    print(f'[{check}] {describe_isolation()}; {args.robot}; node output: {log_path}; {load_note()}', flush=True)
    t0 = time.time()
    with ReachingSession(args.robot, args.model_dir, seed=args.seed, log=log, **session_kw) as s:
        try:
            s.wait_ready(args.startup_timeout)
        except NotReady as exc:
            print(f'[{check}] {exc}', file=sys.stderr)
            raise SystemExit(2)
        print(f'[{check}] stack up in {time.time() - t0:.1f} s ({s.model_dir})', flush=True)
        yield s
