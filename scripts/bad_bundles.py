#!/usr/bin/env python3
"""Bad model files against a live stack (issue 7, item 5).

    scripts/bad_bundles.py --count 100

Generates COUNT corrupt or mismatched copies of a good bundle (mbrl_ros.testing.bad_bundles.KINDS,
cycled: truncated / random / empty ONNX, flipped bytes, wrong dims, joint names, robot, missing
files, broken YAML, alias bombs, NaN / Inf weights, oversized files, symlinks and '..' out of the
model roots, ...), brings up sim_arm.launch.yaml (arm3) with the good bundle while the MPC reaches
for a goal, sets each bad bundle as world_model's model_dir (and announces it on active_model for
mpc_controller, policy and safety_filter), and prints: how many were refused with the failed
check named, whether active_model ever changed, which model each node runs at the end, and the
MPC's missed control periods during the run against a baseline of the same length.
Exit status 0 when every bundle was refused with its check named and nothing changed model.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from mbrl_ros.testing.isolation import describe_isolation, isolate_ros_session


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--count', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--robot', default='arm3')
    ap.add_argument('--good', default='', help="the good bundle (default: the shipped models/<robot>)")
    ap.add_argument('--keep', action='store_true', help='keep the generated bundles (path printed)')
    ap.add_argument('--launch-arg', action='append', default=[], metavar='NAME:=VALUE',
                    help='another sim_arm.launch.yaml argument, e.g. control_thread_priority:=20 (repeatable)')
    args = ap.parse_args(argv)

    isolate_ros_session()
    from mbrl_ros.resources import default_model_dir
    from mbrl_ros.testing.bad_bundles import format_report, make_bad_bundles, run_against_stack
    from mbrl_ros.testing.fuzz import STACK_TOPICS
    from mbrl_ros.testing.pytest_plugin import LaunchedSystem

    work = Path(tempfile.mkdtemp(prefix='bad_bundles_'))
    try:
        # <work>/roots/good/<robot>: the stack starts from it, so <work>/roots/good is a model root
        # (the startup bundle's folder); bad bundles go under it, model_roots cases under <work>/outside.
        good = work / 'roots' / 'good' / args.robot
        shutil.copytree(Path(args.good) if args.good else default_model_dir(args.robot), good,
                        ignore=shutil.ignore_patterns('*.png'))
        bad = make_bad_bundles(good, good.parent / 'bad', args.count, outside=work / 'outside', seed=args.seed)
        print(f'{describe_isolation()}; {len(bad)} bad bundles under {work}', flush=True)
        extra = dict(a.split(':=', 1) for a in args.launch_arg)
        system = LaunchedSystem('sim_arm.launch.yaml', {'robot': args.robot, 'model_dir': str(good),
                                                        'respawn': False, **extra},   # a death must show
                                STACK_TOPICS, timeout=180, echo=False)
        system.start()
        try:
            report = run_against_stack(system, bad, log=lambda s: print(s, flush=True))
            crashed = [n for n, pid in system.pids().items() if not _alive(pid)]
        finally:
            system.stop(check=False)
        print()
        print(format_report(report))
        print(f'node processes that exited during the run: {crashed or "none"}')
        ok = (all(o.refused and o.check_named for o in report.outcomes) and not crashed
              and all(a == report.good_identity for a in report.active_models)
              and all(v == report.good_identity for v in report.models_in_use.values()))
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f'kept {work}')
        else:
            shutil.rmtree(work, ignore_errors=True)


def _alive(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


if __name__ == '__main__':
    sys.exit(main())
