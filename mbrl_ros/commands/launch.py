"""`mbrl-ros launch FILE [name:=value ...]`: run a ROS 2 YAML launch file, each node its own process."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('file', help='launch file: a path, or a name under the package share launch/ '
                                     '(e.g. sim_arm.launch.yaml)')
    parser.add_argument('launch_args', nargs='*', metavar='name:=value', help='launch arguments')
    parser.add_argument('--print', '--dry-run', dest='dry_run', action='store_true',
                        help='show the resolved commands (and inline parameters) without running them')
    parser.add_argument('--show-args', action='store_true',
                        help="list the file's arguments with their defaults and descriptions")
    parser.add_argument('--sigint-timeout', type=float, default=5.0, metavar='S',
                        help='on shutdown, seconds to wait after SIGINT before SIGTERM')
    parser.add_argument('--sigterm-timeout', type=float, default=3.0, metavar='S',
                        help='then seconds to wait after SIGTERM before SIGKILL')
    parser.add_argument('--log-dir', default=None, metavar='DIR',
                        help="where nodes with output: log write (default: $ROS_LOG_DIR or ~/.ros/log)")


def run(args: argparse.Namespace) -> int:
    from mbrl_ros.launch_runner import (
        LaunchError, ProcessManager, declared_arguments, parse_cli_args, parse_launch_file)
    from mbrl_ros.resources import find_resource

    def fail(msg: str) -> int:
        print(f'[launch] error: {msg}', file=sys.stderr, flush=True)
        return 2

    try:
        path = find_resource('launch', args.file)
    except FileNotFoundError as exc:
        return fail(str(exc))
    try:
        if args.show_args:
            return _show_args(path, declared_arguments(path))
        plan = parse_launch_file(path, parse_cli_args(args.launch_args))
    except LaunchError as exc:
        return fail(str(exc))
    try:
        if args.dry_run:
            _print_plan(plan)
            return 0
        log_dir = args.log_dir or os.path.join(
            os.environ.get('ROS_LOG_DIR') or os.path.expanduser('~/.ros/log'),
            time.strftime('mbrl_launch_%Y-%m-%d-%H-%M-%S') + f'_{os.getpid()}')
        manager = ProcessManager(plan.processes, sigint_timeout=args.sigint_timeout,
                                 sigterm_timeout=args.sigterm_timeout, log_dir=log_dir)
        return manager.run()
    finally:
        plan.cleanup()


def _show_args(path: Path, arguments) -> int:
    print(f'Arguments of {path} (pass as name:=value):')
    if not arguments:
        print('  (none)')
    for a in arguments:
        default = "(required)" if a.default is None else f'default: {a.default!r}'
        print(f"  {a.name}  [{default}]" + (f'  choices: {", ".join(a.choices)}' if a.choices else ''))
        if a.description:
            print(f'      {a.description}')
    return 0


def _print_plan(plan) -> None:
    print(f'# {plan.file}')
    if plan.arguments:
        print('# arguments: ' + ' '.join(f'{k}:={v}' for k, v in plan.arguments.items()))
    for p in plan.processes:
        flags = [p.kind, f'output={p.output}']
        if p.respawn:
            flags.append(f'respawn (delay {p.respawn_delay:g} s)')
        print(f'[{p.name}] ({", ".join(flags)})  from {p.source}')
        env = ' '.join(f'{k}={shlex.quote(v)}' if v is not None else f'-u {k}' for k, v in p.env.items())
        print('  ' + (f'env {env} ' if env else '') + shlex.join(p.cmd))
        if p.cwd:
            print(f'  (in {p.cwd})')
        # Inline parameters live in temporary files that go away after this: show them.
        for f in p.params_files:
            if plan.workdir is not None and Path(f).parent == plan.workdir:
                print(f'  {f}:')
                for line in Path(f).read_text().splitlines():
                    print('    ' + line)
