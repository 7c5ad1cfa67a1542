"""Plan time of the deployed planner (iCEM H=8 N=100 10 elites 3 iterations, expectation, no budget) on
a bundle, with the mean-only graphs (what ships) and with the full graphs, interleaved in blocks so that
both see the same machine load. Prints medians, p99 and the ratio.

    .venv/bin/python docs/results/planner_speed/ab_mean_only.py models/arm7 --plans 300
"""
import argparse
import numpy as np

from mbrl_ros.core.planning import EnsembleDynamics, PlannerConfig
from mbrl_ros.core.planning.bench import benchmark_planner
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.runtime.bundle import load_bundle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('bundle')
    ap.add_argument('--plans', type=int, default=300)
    ap.add_argument('--block', type=int, default=50)
    args = ap.parse_args()
    fast = load_bundle(args.bundle)
    robot = RobotModel.load(fast.meta['robot']['name'])
    slow = load_bundle(args.bundle)
    slow.ensemble.mean_session = slow.ensemble.partitioned_mean = None     # the full graphs
    cfg = PlannerConfig(planner='icem', horizon=8, num_samples=100, num_iterations=3, num_elites=10).validated()
    times = {'mean-only graphs': [], 'full graphs': []}
    for _ in range(args.plans // args.block):
        for name, b in (('mean-only graphs', fast), ('full graphs', slow)):
            row = benchmark_planner(robot, cfg, dynamics=EnsembleDynamics(b.ensemble), plans=args.block)
            times[name].append((row['plan_p50_ms'], row['plan_p99_ms'], row['dynamics_p50_ms']))
    for name, t in times.items():
        t = np.asarray(t)
        print(f'{name:17s} plan p50 {np.median(t[:, 0]):7.2f} ms (median of {len(t)} blocks of {args.block}), '
              f'block p99 up to {t[:, 1].max():7.2f} ms, model p50 {np.median(t[:, 2]):7.2f} ms')
    r = np.median(np.asarray(times['full graphs'])[:, 0]) / np.median(np.asarray(times['mean-only graphs'])[:, 0])
    print(f'ratio of plan p50 (full / mean-only): {r:.2f}x')


if __name__ == '__main__':
    main()
