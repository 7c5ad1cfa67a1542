"""`mbrl-ros evaluate-model`: one-step nRMSE, open-loop end-effector error and calibration of a bundle."""
from __future__ import annotations

import json
import sys


def add_arguments(p):
    p.add_argument('bundle', help='bundle directory, or a name under the package models/ (e.g. arm7)')
    p.add_argument('--data', help='held-out transitions (.npz, rosbag2 dir or .mcap); default: fresh '
                   'trajectories from collect_sim with --seed')
    p.add_argument('--robot', help='robot name or MJCF (default: the bundle\'s robot)')
    p.add_argument('--transitions', type=int, default=4000, help='fresh transitions to collect')
    p.add_argument('--seed', type=int, default=1234, help='collection seed (differs from training)')
    p.add_argument('--exploration', choices=['colored', 'uniform'],
                   help='exploration of the fresh data (default: as recorded for the training data, else colored)')
    p.add_argument('--amplitude', type=float,
                   help='effort amplitude of the fresh data (default: as recorded for the training data, else 0.1)')
    p.add_argument('--episode-len', type=int,
                   help='episode length of the fresh data (default: as recorded for the training data, else 200)')
    p.add_argument('--horizon', type=int, default=15, help='open-loop horizon (steps)')
    p.add_argument('--json', action='store_true', help='print the metrics as JSON')


def run(args) -> int:
    from mbrl_ros.core.bundle import BundleError, load_bundle
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.core.runtime.evaluate import evaluate, format_metrics
    from mbrl_ros.resources import find_resource

    try:
        path = find_resource('models', args.bundle)
        bundle = load_bundle(path)
        robot = RobotModel.load(args.robot or bundle.robot_name)
        bundle = load_bundle(path, robot)
        if args.data:
            from mbrl_ros.core.dynamics.pipeline import load_dataset
            data = load_dataset(args.data, robot, bundle.dt)
        else:
            import yaml

            from mbrl_ros.core.data.collect import collect_sim
            # Same exploration as the training data by default: held out, not out of distribution.
            prov = ((bundle.meta.get('training') or {}).get('data') or {}).get('provenance') or {}
            kind = args.exploration or prov.get('exploration', 'colored')
            # provenance values are strings: '0.1', or '[0.11, 0.25, ...]' for a calibrated per-joint one
            amp = args.amplitude if args.amplitude is not None else yaml.safe_load(str(prov.get('amplitude', 0.1)))
            ep_len = args.episode_len or int(prov.get('episode_len', 200))
            print(f'collecting {args.transitions} fresh transitions: {kind} exploration, amplitude {amp}, '
                  f'episodes of {ep_len}, seed {args.seed}', file=sys.stderr)
            data = collect_sim(robot, args.transitions, exploration=kind, seed=args.seed,
                               episode_len=ep_len, amplitude=amp, dt=bundle.dt, progress=False)
    except (BundleError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f'mbrl-ros evaluate-model: {e}', file=sys.stderr)
        return 2
    metrics = evaluate(bundle.ensemble, data, robot, horizon=args.horizon)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(f'bundle {bundle.identity}')
        print(format_metrics(metrics))
    return 0
