"""`mbrl-ros bench closed-loop`: reaching success and final distance against the per-plan time budget.

The MPC runs as in the `mpc_controller` node (MpcController, the deployment planner settings of
config/mpc_controller.yaml, a real wall-clock `time_budget_ms` per plan) on the ROS-free reaching
benchmark (core.evaluation.reaching: random reachable goals, success = EE within 2 cm 3 s after the
goal is sent). Every budget sees the same goals. Plan time is the wall time of each
`MpcController.compute` call inside the loop.
"""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument('--model', default='arm7', help='bundle name or directory (default: the shipped arm7)')
    p.add_argument('--budgets', default='5,10,15,20', help='time_budget_ms values')
    p.add_argument('--goals', type=int, default=20, help='goals per budget (the same goals for every budget)')
    p.add_argument('--seed', type=int, default=1000, help='goal seed')
    p.add_argument('--horizon', type=int, default=None, help='override the deployment horizon')
    p.add_argument('--samples', type=int, default=None, help='override num_samples')
    p.add_argument('--iterations', type=int, default=None, help='override num_iterations')
    p.add_argument('--elites', type=int, default=None)
    p.add_argument('--planner', default=None, choices=('cem', 'icem'))
    p.add_argument('--weights', default='', metavar='K=V,...', help='cost weights, e.g. uncertainty=0')
    p.add_argument('--propagation', default=None, choices=('expectation', 'ts1', 'tsinf'),
                   help='ensemble propagation (default: config/mpc_controller.yaml, as the node)')
    p.add_argument('--short', action='store_true', help='2 goals, budgets 5 and 15: a smoke run')
    p.add_argument('--progress', action='store_true')
    p.add_argument('--json', action='store_true')


def run(args) -> int:
    from mbrl_ros.commands.options import number_pairs
    from mbrl_ros.core.learning import planner_config
    from mbrl_ros.core.learning.pets import closed_loop_eval
    from mbrl_ros.core.planning.config import CostWeights
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.core.runtime.bundle import BundleError, load_bundle
    from mbrl_ros.resources import find_resource

    try:
        budgets = [5.0, 15.0] if args.short else [float(v) for v in args.budgets.split(',') if v]
        goals = 2 if args.short else args.goals
        bundle = load_bundle(find_resource('models', args.model))
        robot = RobotModel.load(bundle.robot_name)
        weights = CostWeights(**number_pairs(args.weights)).validated()
        cfgs = [planner_config(time_budget_ms=b, horizon=args.horizon, num_samples=args.samples,
                               num_iterations=args.iterations, num_elites=args.elites, planner=args.planner)
                for b in budgets]
    except (ValueError, TypeError, FileNotFoundError, BundleError) as e:
        print(f'mbrl-ros bench closed-loop: {e}')
        return 2
    propagation = args.propagation or deployment_propagation()
    rows = []
    for cfg in cfgs:
        r = closed_loop_eval(robot, bundle, cfg, weights, goals, args.seed, propagation=propagation,
                             progress=args.progress)
        rows.append(r)
    if args.json:
        print(json.dumps({'bundle': str(bundle.path), 'propagation': propagation, 'rows': rows}, indent=1))
        return 0
    c = cfgs[0]
    print(f'bundle {bundle.path} ({robot.name}), {c.planner} H={c.horizon} N={c.num_samples} {propagation} '
          f'iterations<={c.num_iterations}, weights {number_pairs(args.weights) or "default"}, {goals} goals (seed {args.seed}), success = EE within 2 cm after 3 s')
    print(f'{"budget ms":>10}{"success":>9}{"dist med cm":>13}{"dist p90 cm":>13}{"plan p50":>10}{"plan p99":>10}'
          f'{"iters":>7}{"no cmd":>8}')
    for b, r in zip(budgets, rows):
        d = r['final_distance_m']
        print(f'{b:>10.1f}{r["success_rate"]:>9.0%}{100 * d["median"]:>13.2f}{100 * d["p90"]:>13.2f}'
              f'{r["plan_ms"]["p50"]:>10.2f}{r["plan_ms"]["p99"]:>10.2f}{r["iterations_mean"]:>7.2f}'
              f'{r["no_command"]:>8}')
    return 0


def deployment_propagation() -> str:
    """The node's propagation as deployed (config/mpc_controller.yaml), 'expectation' if not set."""
    import yaml

    from mbrl_ros.resources import find_resource
    try:
        params = yaml.safe_load(find_resource('config', 'mpc_controller.yaml').read_text())
        return str(params['mpc_controller']['ros__parameters'].get('propagation', 'expectation'))
    except (OSError, KeyError, TypeError, FileNotFoundError, yaml.YAMLError):
        return 'expectation'
