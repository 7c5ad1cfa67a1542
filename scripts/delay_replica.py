#!/usr/bin/env python
"""The ROS-free reaching loop with one effect of the ROS stack added at a time (docs/demo.md,
"The ROS loop against the ROS-free loop"): the command applied D ms after the state it was planned
from, the safety filter (rate limit, joint-limit and uncertainty gating) in the loop, the state
predicted forward by the world model (compensation), the planner iterations.

    scripts/delay_replica.py GOALS SEED SPEC [SPEC ...]
    SPEC = delay_physics_steps,filter(0|1),compensation_periods[,iterations]   e.g. 10,0,0  15,0,1  0,1,0  0,0,0,1

No time budget (every plan runs its iterations): the figures do not depend on the machine's load.
"""
import sys
import time

import numpy as np

from mbrl_ros.core.evaluation.reaching import sample_goals
from mbrl_ros.core.learning.agent import MpcAgent, planner_config
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.runtime.bundle import load_bundle
from mbrl_ros.core.safety import CommandSample, SafetyFilter, SafetySettings, StateSample
from mbrl_ros.core.sim import SimArm


def run(n, seed, delay_steps, use_filter, comp, iters=3, bundle_dir='models/arm7'):
    bundle, robot = load_bundle(bundle_dir), RobotModel.load('arm7')
    cfg = planner_config(time_budget_ms=0.0, num_iterations=iters)
    agent = MpcAgent(robot, bundle, cfg, dt=bundle.dt, seed=seed)
    sim = SimArm(robot, physics_rate_hz=500.0)
    starts, _, goals = sample_goals(robot, n, seed)
    filt = SafetyFilter.for_robot(robot, SafetySettings(command_timeout_s=10, state_timeout_s=10))
    ens = bundle.ensemble
    modes, dist = {}, []
    for i in range(n):
        sim.reset(q=starts[i])
        agent.reset()
        filt.reset()
        applied, pending, step = np.zeros(robot.dof), [], 0
        for _ in range(150):
            q, qd, _ = sim.observe()
            if comp:
                x = np.concatenate([q, qd])
                x = x + comp * ens.predict(x[None], agent._last[None])[0].mean(0)[0]
                q, qd = x[:robot.dof], x[robot.dof:]
            u = agent(q, qd, goals[i])
            if use_filter:
                dis = float(ens.disagreement(np.concatenate([q, qd])[None], u[None])[0])
                t = step * 0.002
                out = filt.step(t, StateSample(q, qd, t), CommandSample(u, t, dis))
                u = out.command
                modes[out.mode] = modes.get(out.mode, 0) + 1
            pending.append((step + delay_steps, u))
            for _ in range(10):   # one control period of physics; the command switches when due
                while pending and pending[0][0] <= step:
                    applied = pending.pop(0)[1]
                sim.set_command(applied)
                sim.step(1)
                step += 1
        dist.append(float(np.linalg.norm(sim.ee_position() - goals[i])))
    d = np.array(dist)
    return (d <= 0.02).mean(), np.median(d), np.percentile(d, 90), modes


if __name__ == '__main__':
    n, seed = int(sys.argv[1]), int(sys.argv[2])
    for spec in sys.argv[3:]:
        dl, fl, comp, it = (spec.split(',') + ['3'])[:4]
        t0 = time.time()
        s, med, p90, modes = run(n, seed, int(dl), fl == '1', float(comp), int(it))
        print(f'delay {2 * int(dl):3d} ms filter {fl} compensation {comp} iterations {it}: success {s:.0%} '
              f'median {100 * med:.2f} cm p90 {100 * p90:.2f} cm  modes {modes}  ({time.time() - t0:.0f} s)',
              flush=True)
