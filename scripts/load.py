#!/usr/bin/env python3
"""Load check (issue 7): the sim stack reaching random goals (one every 3 s) while both CPU cores
are busy with other work (--hogs numpy matmul processes, nice 0); prints missed control periods
(count, %), periods per mode (the policy's share covers MPC misses; hold when the bundle has no
policy), out-of-limit commands (must be 0), success rate, and MPC plan time p50/p99.
With --baseline S it first measures S seconds without the hogs, for comparison.
See mbrl_ros/reliability/load.py and docs/reliability.md.

    .venv/bin/python scripts/load.py --duration 300 [--hogs 2 --baseline 60 --robot arm7 --model-dir DIR]

Exit status 0 when no command left the limits; 1 otherwise; 2 when the stack did not come up.
"""
from __future__ import annotations

import argparse
import sys

from mbrl_ros.testing.isolation import isolate_ros_session


def main(argv=None) -> int:
    from mbrl_ros.reliability.harness import add_common_arguments
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_common_arguments(p, 300.0)
    p.add_argument('--hogs', type=int, default=2, help='busy processes (default 2: one per core)')
    p.add_argument('--baseline', type=float, default=0.0, metavar='S',
                   help='first measure S seconds without the hogs (default 0: none)')
    args = p.parse_args(argv)
    domain = isolate_ros_session()

    from mbrl_ros.reliability.harness import script_session, write_json
    from mbrl_ros.reliability.load import CpuHogs, format_result, measure
    out = {}
    with script_session('load', args, domain) as s:
        say = (lambda line: print(line, flush=True))
        if args.baseline > 0:
            out['baseline'] = measure(s, args.baseline, say, 'baseline')
            print(format_result(out['baseline'], 'baseline'), flush=True)
        with CpuHogs(args.hogs) as hogs:
            cpu = hogs.cpu_percent()
            res = measure(s, args.duration, say, 'load')
            res['hogs'], res['hog_cpu'] = args.hogs, [round(c) for c in cpu]
        out['load'] = res
    print(format_result(res, 'load'), flush=True)
    write_json(args.json, out)
    return 0 if res['out_of_limit'] == 0 and not s.left_behind else 1


if __name__ == '__main__':
    sys.exit(main())
