#!/usr/bin/env python3
"""Chaos check (issue 7): SIGKILL and restart each node of the sim stack in a seeded random order
while it reaches random goals; print, per fault, the mode the safety filter went to (against the
designed one), the time to it, the time to recover after the restart and the commands outside the
limits (must be 0). See mbrl_ros/reliability/chaos.py and docs/reliability.md.

    .venv/bin/python scripts/chaos.py --duration 300 [--robot arm7 --model-dir DIR --seed 0]

Exit status 0 when every fault ended as designed, the stack recovered from each and no command
left the limits; 1 otherwise; 2 when the stack did not come up.
"""
from __future__ import annotations

import argparse
import sys

from mbrl_ros.testing.isolation import isolate_ros_session


def main(argv=None) -> int:
    from mbrl_ros.reliability.harness import add_common_arguments
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, 300.0)
    p.add_argument('--restart-delay', type=float, default=3.0, metavar='S',
                   help='seconds before a killed node is restarted (default 3)')
    p.add_argument('--nodes', default=None, help='comma-separated nodes to kill (default: all six)')
    p.add_argument('--sequence', default=None, help='comma-separated: exactly these faults in this order')
    p.add_argument('--faults', type=int, default=None, help='stop after this many faults (default: fill --duration)')
    args = p.parse_args(argv)
    domain = isolate_ros_session()   # before rclpy loads: never touch a real robot's domain

    from mbrl_ros.reliability.chaos import NODES, ChaosRun, format_summary
    from mbrl_ros.reliability.harness import script_session, write_json
    nodes = tuple(args.nodes.split(',')) if args.nodes else NODES
    bad = (set(nodes) | set(args.sequence.split(',') if args.sequence else ())) - set(NODES)
    if bad:
        p.error(f'unknown nodes {sorted(bad)}; known: {", ".join(NODES)}')
    with script_session('chaos', args, domain, restart_delay=args.restart_delay, liveness=True) as s:
        print(f'[chaos] faulting for {args.duration:g} s', flush=True)
        res = ChaosRun(s, say=lambda line: print(line, flush=True)).run(
            args.duration, args.seed, nodes, args.faults,
            args.sequence.split(',') if args.sequence else None)
    res['left_behind'] = s.left_behind
    print(format_summary(res), flush=True)
    if s.left_behind:
        print(f'[chaos] processes left behind (killed): {s.left_behind}')
    write_json(args.json, res)
    ok = res['out_of_limit_total'] == 0 and res['all_as_designed'] and res['all_recovered'] and not s.left_behind
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
