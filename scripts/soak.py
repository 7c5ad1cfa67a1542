#!/usr/bin/env python3
"""Soak check (issue 7): the sim stack reaching a random goal every 3 s for --duration seconds
(30 min by default); prints per-minute progress, then crashes, memory growth per node (RSS at
minute 2 vs the end, psutil), success rate per 5-minute window, missed periods, out-of-limit
commands. See mbrl_ros/reliability/soak.py and docs/reliability.md.

    .venv/bin/python scripts/soak.py --duration 1800 [--robot arm7 --model-dir DIR --seed 0]

Exit status 0 when nothing crashed, every node grew < --max-growth and no command left the limits.
"""
from __future__ import annotations

import argparse
import sys

from mbrl_ros.testing.isolation import isolate_ros_session


def main(argv=None) -> int:
    from mbrl_ros.reliability.harness import add_common_arguments
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_common_arguments(p, 1800.0)
    p.add_argument('--goal-period', type=float, default=3.0, metavar='S', help='seconds per goal (default 3)')
    p.add_argument('--window', type=float, default=300.0, metavar='S', help='success-rate window (default 300)')
    p.add_argument('--memory-ref', type=float, default=120.0, metavar='S',
                   help='RSS reference time after the start (default 120; at most 30 %% of the run)')
    p.add_argument('--max-growth', type=float, default=0.05, help='allowed RSS growth per node (default 0.05)')
    args = p.parse_args(argv)
    domain = isolate_ros_session()

    from mbrl_ros.reliability.harness import script_session, write_json
    from mbrl_ros.reliability.soak import format_summary, run_soak
    with script_session('soak', args, domain, goal_period_s=args.goal_period) as s:
        print(f'[soak] soaking for {args.duration:g} s', flush=True)
        res = run_soak(s, args.duration, args.window, args.memory_ref, say=lambda line: print(line, flush=True))
    res['left_behind'] = s.left_behind
    print(format_summary(res), flush=True)
    write_json(args.json, res)
    g = res['max_memory_growth']
    ok = res['no_crash'] and res['out_of_limit'] == 0 and g is not None and g < args.max_growth and not s.left_behind
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
