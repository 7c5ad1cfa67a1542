#!/usr/bin/env python3
"""Fuzz every subscriber of every node over real DDS while the simulated arm is live.

    scripts/fuzz_nodes.py --messages 10000

Brings up `sim_arm.launch.yaml` (arm3, shipped bundle, controllers not respawned so that a crash
shows) in a ROS domain of its own, sends goals so the MPC is controlling the arm, then publishes
N hypothesis-generated messages on each subscribed topic (mbrl_ros.testing.fuzz) and prints a
table per topic: messages sent, node crashes, safety-filter commands seen meanwhile and how many
were outside the effort limits (or non-finite), whether every node still answers a parameter get
and publishes /diagnostics, and the increase of each node's internal_errors counter.
Exit status 0 only when there were no crashes, no out-of-limit commands and every node answered.
"""
from __future__ import annotations

import argparse
import sys
import time

from mbrl_ros.testing.isolation import describe_isolation, isolate_ros_session


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--messages', type=int, default=10000, help='messages per topic (default 10000)')
    ap.add_argument('--rate', type=float, default=1000.0, help='most messages per second (0: no limit)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--robot', default='arm3')
    ap.add_argument('--model-dir', default='', help="bundle for the stack ('' = the shipped one)")
    ap.add_argument('--topics', nargs='*', help='only these topics (default: all subscribed topics)')
    args = ap.parse_args(argv)

    isolate_ros_session()   # before rclpy: the stack and this probe share a private domain
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.testing.fuzz import STACK_ARGS, STACK_TOPICS, format_table, fuzz_stack
    from mbrl_ros.testing.pytest_plugin import LaunchedSystem

    robot = RobotModel.load(args.robot)
    launch_args = {**STACK_ARGS, 'robot': args.robot}
    if args.model_dir:
        launch_args['model_dir'] = args.model_dir
    print(f'{describe_isolation()}; {args.messages} messages per topic, seed {args.seed}', flush=True)
    t0 = time.monotonic()
    system = LaunchedSystem('sim_arm.launch.yaml', launch_args, STACK_TOPICS, timeout=180, echo=False)
    system.start()
    try:
        results = fuzz_stack(system, robot, args.messages, args.topics, args.rate, args.seed,
                             log=lambda s: print(s, flush=True))
    finally:
        left = system.stop(check=False)
    print()
    print(format_table(results))
    crashes = sum(len(r.crashed) for r in results)
    bad = sum(r.out_of_limit for r in results)
    cmds = sum(r.filter_commands for r in results)
    deaf = [f'{r.topic}: {n}' for r in results for n, v in r.responsive.items() if v != 'yes']
    print(f'\ntotal: {sum(r.sent for r in results)} messages in {time.monotonic() - t0:.0f} s; '
          f'crashes {crashes}; {cmds} safety-filter commands checked, {bad} outside limits; '
          f'unresponsive: {deaf or "none"}; processes left after shutdown: {left or "none"}')
    return 0 if crashes == 0 and bad == 0 and not deaf and cmds > 0 else 1


if __name__ == '__main__':
    sys.exit(main())
