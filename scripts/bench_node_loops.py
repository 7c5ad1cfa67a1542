#!/usr/bin/env python3
"""Benchmark behind the control-loop design of mpc_controller and safety_filter (prints numbers).

Runs the node (arm3, untrained bundle) against a feeder publishing /mbrl/state at 250 Hz (the
state_estimator's rate with sim_robot's default /joint_states) and measures the command rate the
node achieves plus, for the MPC, its plan-time p50/p99 from /diagnostics. Variants:

  thread  dedicated paced loop thread + SingleThreadedExecutor   (what ships)
  timer1  rclpy timer                 + SingleThreadedExecutor
  mte     dedicated loop thread       + MultiThreadedExecutor(3)
  timer   rclpy timer in its own group + MultiThreadedExecutor(3)

    .venv/bin/python scripts/bench_node_loops.py mpc --variants thread,timer1,mte,timer --reps 2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']


def node_main(which: str, variant: str, ros_args: list[str]) -> None:
    """Child process: the node with its loop swapped for the variant."""
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    if which == 'sf':
        import mbrl_ros.nodes.safety_filter as mod
        cls = mod.SafetyFilterNode
    else:
        import mbrl_ros.nodes.mpc_controller as mod
        cls = mod.MpcControllerNode

    class TimerLoop:
        def __init__(self, step, rate_hz, name=''):
            self.node, self.step, self.rate = step.__self__, step, rate_hz
            self.timer, self.cycles, self.resyncs = None, 0, 0
            self.group = MutuallyExclusiveCallbackGroup()

        def _cb(self):
            self.step()
            self.cycles += 1

        def start(self):
            if self.timer is None:
                self.timer = self.node.create_timer(1.0 / self.rate, self._cb, callback_group=self.group)

        def stop(self, timeout=0):
            if self.timer is not None:
                self.node.destroy_timer(self.timer)
                self.timer = None

        def set_rate(self, hz):
            self.rate = hz
            if self.timer is not None:
                self.stop()
                self.start()

        @property
        def running(self):
            return self.timer is not None

    if variant in ('timer', 'timer1'):
        mod.ControlLoop = TimerLoop
    from mbrl_ros.ros.node_main import main_for
    sys.argv = [sys.argv[0]] + ros_args
    main_for(cls, threads=3 if variant in ('timer', 'mte') else 1)


def measure(which: str, variant: str, identity: str, state_hz: float, seconds: float) -> tuple[float, dict]:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String

    from mbrl_ros.ros.conversions import LATCHED, sec_to_stamp
    from mbrl_ros.testing.ros_probe import RosProbe
    extra = ['-p', 'allow_missing_uncertainty:=true'] if which == 'sf' else ['-p', 'time_budget_ms:=15.0']
    extra += ['-p', f'model_dir:={identity.rsplit(" ", 1)[0]}']   # its folder: one of the node's model roots
    proc = subprocess.Popen([sys.executable, __file__, '--node', which, variant, '--ros-args', '-p', 'robot:=arm3']
                            + extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    try:
        with RosProbe(f'bench_{variant}') as p:
            p.publisher('/mbrl/world_model/active_model', String, LATCHED).publish(String(data=identity))
            sp = p.publisher('/mbrl/state', JointState, 10)
            cmd_pubs = [p.publisher(t, JointState, 10) for t in ('/mbrl/mpc/command', '/mbrl/policy/command')]
            gp = p.publisher('/mbrl/goal', PointStamped, 10)
            topic, typ = (('/forward_effort_controller/commands', Float64MultiArray) if which == 'sf'
                          else ('/mbrl/mpc/command', JointState))
            out = p.subscribe(topic, typ, 1000)
            diag = p.subscribe('/diagnostics', DiagnosticArray, 10)

            def feed():
                k, t0 = 0, time.monotonic()
                while not stop.is_set():
                    m = JointState(name=ARM3, position=[0.0, 0.3, 0.3], velocity=[0.0] * 3)
                    m.header.stamp = sec_to_stamp(time.time())
                    sp.publish(m)
                    if which == 'sf' and k % int(state_hz / 50) == 0:
                        for pub in cmd_pubs:
                            c = JointState(name=ARM3, effort=[1.0, 1.0, 1.0])
                            c.header.stamp = sec_to_stamp(time.time())
                            pub.publish(c)
                    if which == 'mpc' and k % int(state_hz / 2) == 0:
                        g = PointStamped()
                        g.header.frame_id = 'world'
                        g.point.x, g.point.z = 0.3, 0.3
                        gp.publish(g)
                    k += 1
                    delay = t0 + k / state_hz - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            threading.Thread(target=feed, daemon=True).start()
            time.sleep(8.0)   # start-up, model load, first plans
            n, t = len(out), time.time()
            time.sleep(seconds)
            rate = (len(out) - n) / (time.time() - t)
            vals = {kv.key: kv.value for _, d in diag[-1:] for s in d.status for kv in s.values}
            stop.set()
            time.sleep(0.05)   # the feeder's last publish before the probe goes
            return rate, vals
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == '--node':
        node_main(sys.argv[2], sys.argv[3], sys.argv[4:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('node', choices=['mpc', 'sf'])
    ap.add_argument('--variants', default='thread,timer1,mte,timer')
    ap.add_argument('--reps', type=int, default=1)
    ap.add_argument('--state-hz', type=float, default=250.0)
    ap.add_argument('--seconds', type=float, default=6.0)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / 'test'))
    from _model_helpers import write_bundle  # noqa: E402  (torch: dev machines only)

    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.core.runtime.bundle import load_bundle
    with tempfile.TemporaryDirectory() as tmp:
        identity = load_bundle(write_bundle(Path(tmp) / 'b', RobotModel.load('arm3'))).identity
        for _ in range(a.reps):
            for v in a.variants.split(','):
                rate, vals = measure(a.node, v, identity, a.state_hz, a.seconds)
                extra = (f"plan p50 {vals.get('plan_ms_p50')} p99 {vals.get('plan_ms_p99')} ms"
                         if a.node == 'mpc' else '')
                print(f'{a.node} {v:7s} commands {rate:5.1f} Hz (target 50)  load {os.getloadavg()[0]:.1f}  {extra}',
                      flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
