"""`mbrl-ros demo`: the stack on the simulated arm with a live readout.

Brings `sim_arm.launch.yaml` up through `mbrl-ros launch` (each node its own process), watches
the topics from a separate node, and prints a summary at the end. Ctrl-C stops it early.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--robot', default='arm7', help='built-in robot name or MJCF path (default arm7)')
    p.add_argument('--duration', type=float, default=20.0, help='seconds to run (default 20)')
    p.add_argument('--launch-file', default='sim_arm.launch.yaml')
    p.add_argument('--excite', type=float, default=0.3,
                   help='amplitude of a gentle test torque on the first joints, as a fraction of the '
                        'effort limit (0 disables); the sim validates it like any command')


def run(args) -> int:
    import numpy as np

    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.testing.isolation import isolate_ros_session

    # A demo must never drive a real arm that happens to share the default domain.
    domain = isolate_ros_session()
    robot = RobotModel.load(args.robot)
    cmd = [sys.executable, '-m', 'mbrl_ros.cli', 'launch', args.launch_file, f'robot:={args.robot}',
           'world_model:=false']
    print(f'[demo] ROS_DOMAIN_ID={domain}; starting: {" ".join(cmd[2:])}', flush=True)
    stack = subprocess.Popen(cmd, start_new_session=True)
    try:
        return _watch(args, robot, np, stack)
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)
            try:
                stack.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait()


def _watch(args, robot, np, stack) -> int:
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from mbrl_ros.ros.conversions import stamp_to_sec
    from mbrl_ros.testing.ros_probe import RosProbe

    with RosProbe('demo_monitor') as probe:
        joint_states = probe.subscribe('/joint_states', JointState)
        states = probe.subscribe('/mbrl/state', JointState)
        ee = probe.subscribe('/mbrl/sim/ee_position', PointStamped)
        pub = probe.publisher('/forward_effort_controller/commands', Float64MultiArray)
        if probe.wait_until(lambda: len(states) > 0 or stack.poll() is not None, 30.0) is None \
                or stack.poll() is not None:
            print('[demo] the stack did not come up (see the node output above)', file=sys.stderr)
            return 1
        t0 = time.monotonic()
        latencies, last_print = [], 0.0
        interactive = sys.stdout.isatty()
        try:
            while time.monotonic() - t0 < args.duration and stack.poll() is None:
                t = time.monotonic() - t0
                if args.excite > 0:
                    effort = np.zeros(robot.dof)
                    effort[:2] = args.excite * robot.effort_max[:2] * np.sin(2 * np.pi * 0.5 * t + np.array([0, 1.5]))
                    pub.publish(Float64MultiArray(data=effort.tolist()))
                if t - last_print >= 0.5 and states:
                    last_print = t
                    rt, s = states[-1]
                    latencies.append(1e3 * (rt - stamp_to_sec(s.header.stamp)))
                    n_js = sum(1 for rt_, _ in joint_states[-600:] if rt_ > time.time() - 1.0)
                    p = ee[-1][1].point if ee else None
                    line = (f't={t:5.1f}s  joint_states {n_js:4d} Hz  q[0:3]=' +
                            ' '.join(f'{v:+.2f}' for v in list(s.position)[:3]) +
                            (f'  ee=({p.x:+.3f},{p.y:+.3f},{p.z:+.3f}) m' if p else '') +
                            f'  state latency {latencies[-1]:.2f} ms')
                    print(('\r' + line) if interactive else line, end='' if interactive else '\n', flush=True)
                time.sleep(0.02)
        except KeyboardInterrupt:
            pass
        if interactive:
            print()
        dur = time.monotonic() - t0
        n_js = len(joint_states)
        print(f'[demo] {dur:.1f} s: {n_js} joint_states ({n_js / max(dur, 1e-9):.1f} Hz incl. start-up), '
              f'{len(states)} /mbrl/state, median sampled state latency '
              f'{np.median(latencies) if latencies else float("nan"):.2f} ms')
        if stack.poll() not in (None, 0):
            print(f'[demo] the stack exited with code {stack.returncode}', file=sys.stderr)
            return 1
    return 0
