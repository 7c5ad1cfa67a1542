"""Runs a node process: init, build, spin, and an orderly exit on SIGINT/SIGTERM.

A node that cannot start (bad parameter, missing file, unusable robot description) logs one
clear line and exits with status EX_CONFIG (78) instead of a traceback; the launch runner does
not respawn a node that exits so (it would fail the same way again). A teardown stuck for longer than TEARDOWN_TIMEOUT_S prints the
stacks and exits 1; `kill -USR1 <pid>` prints the stacks of a running node (mbrl_ros.ros.hang_watchdog).
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from mbrl_ros.launch_runner.process_manager import EX_CONFIG
from mbrl_ros.ros.hang_watchdog import arm_teardown_deadline, disarm_teardown_deadline, enable_stack_dump_signal
from mbrl_ros.ros.parameters import ParameterError


class StartupError(RuntimeError):
    """The node cannot start with the given configuration; the message says why."""


def make_executor(threads: int = 1):
    """The executor a node spins in. One thread: rclpy's EventsExecutor (callbacks dispatched from
    rmw events in C++), which costs a 250 Hz /mbrl/state subscriber about half the CPU of
    SingleThreadedExecutor's Python wait-set loop (15 vs 33 % of a core on the 2-core VM): five
    nodes read that stream, so on a small robot PC the difference is most of a core.
    MBRL_EXECUTOR=single: the classic executor."""
    if threads > 1:
        return MultiThreadedExecutor(num_threads=threads)
    if os.environ.get('MBRL_EXECUTOR') == 'single':
        return SingleThreadedExecutor()
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:  # an rclpy without it (before Jazzy)
        return SingleThreadedExecutor()
    return EventsExecutor()


def spin(executor) -> None:
    """Spin until the context shuts down (SIGINT/SIGTERM). The EventsExecutor's own spin() busy-waits
    at 100 % of a core in this rclpy (Kilted) and never returns on shutdown; spin_once with a timeout
    blocks properly and raises ExternalShutdownException once the context is shut down."""
    if isinstance(executor, (SingleThreadedExecutor, MultiThreadedExecutor)):
        executor.spin()
        return
    reported = set()
    while rclpy.ok():
        try:
            executor.spin_once(timeout_sec=0.5)
        except RuntimeError as exc:
            # The EventsExecutor cannot hand some rmw events to Python (pybind11 "Unable to convert
            # call argument"), seen when a peer's publisher goes away: that event is dropped; the node
            # goes on. Said once per message so a real fault still shows.
            if not rclpy.ok():
                raise ExternalShutdownException() from exc
            if 'Unable to convert call argument' not in str(exc):
                raise
            if str(exc) not in reported:
                reported.add(str(exc))
                print(f'[WARN] executor dropped an event: {exc}', file=sys.stderr, flush=True)


def run_node(factory: Callable[[], object], args=None, threads: int = 1) -> int:
    # rclpy's handler shuts the context down (spin then returns) and chains to the Python handler
    # installed before it: that must neither end the process (mbrl_ros.nodes' import-time handler) nor
    # raise KeyboardInterrupt inside whatever callback runs (the EventsExecutor logs that as a FATAL
    # "Exception in callback" on every Ctrl-C).
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.ALL)
    enable_stack_dump_signal()
    node = None
    try:
        try:
            node = factory()
        except (ParameterError, StartupError, FileNotFoundError, ValueError) as exc:
            print(f'[FATAL] cannot start: {exc}', file=sys.stderr, flush=True)
            return EX_CONFIG
        executor = make_executor(threads)
        executor.add_node(node)
        try:
            spin(executor)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            # A signal's shutdown that lands while the executor builds its wait set raises RCLError
            # ("the given context is not valid") instead of ExternalShutdownException: an orderly
            # exit all the same. With the context still valid it is a real error.
            if rclpy.ok():
                raise
        return 0
    finally:
        if node is not None:
            arm_teardown_deadline()
            close = getattr(node, 'close', None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # shutting down anyway; say why, don't mask the exit
                    print(f'[WARN] error while closing: {exc}', file=sys.stderr)
            node.destroy_node()
        rclpy.try_shutdown()
        disarm_teardown_deadline()


def main_for(factory: Callable[[], object], threads: int = 1) -> None:
    sys.exit(run_node(factory, args=sys.argv, threads=threads))
