"""`mbrl-ros bench planner`: time per plan of CEM/iCEM at 50 Hz sizes, and how much is the planner's own.

--model trivial (default): a damped double integrator, so the figure is the planner overhead
(sampling, noise, FK, costs, refits) and 20 ms minus it is what is left for the world model.
--model random: an untrained ensemble of the given architecture exported to ONNX (needs torch;
inference time does not depend on the weights). --model BUNDLE: a trained bundle's ensemble.
"""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument('--robot', default='arm7', help='arm7, arm3 or an MJCF path')
    p.add_argument('--planner', default='cem,icem', help='cem, icem or both')
    p.add_argument('--horizon', type=int, default=12, help='planning horizon (steps)')
    p.add_argument('--samples', type=int, default=300, help='samples per iteration')
    p.add_argument('--iterations', type=int, default=3, help='optimiser iterations per plan')
    p.add_argument('--elites', type=int, default=30, help='elites per iteration')
    p.add_argument('--budget-ms', type=float, default=0.0, help='time budget per plan (ms); 0 = none')
    p.add_argument('--plans', type=int, default=200, help='timed plans')
    p.add_argument('--model', default='trivial', help="'trivial', 'random' or a bundle dir/name")
    p.add_argument('--hidden', default='200,200,200', help='hidden sizes of the random ensemble')
    p.add_argument('--ensemble-size', type=int, default=5, help='members of the random ensemble')
    p.add_argument('--propagation', default='expectation', choices=('expectation', 'ts1', 'tsinf'),
                   help='how samples go through the ensemble: the members\' mean, or trajectory sampling')
    p.add_argument('--particles', type=int, default=1, help='particles per sample (trajectory sampling)')
    p.add_argument('--threads', type=int, default=1, help='onnxruntime intra-op threads')
    p.add_argument('--json', action='store_true', help='print the results as JSON')


def _dynamics(args, robot, tmp):
    from mbrl_ros.core.planning import EnsembleDynamics
    if args.model == 'trivial':
        return None, 'double integrator (trivial)'
    if args.model == 'random':
        import torch  # noqa: F401  (train extra)

        from mbrl_ros.core.dynamics.ensemble import EnsembleConfig, ProbabilisticEnsemble
        from mbrl_ros.core.dynamics.export import export_ensemble
        from mbrl_ros.core.runtime.ensemble import EnsembleRuntime
        hidden = [int(h) for h in args.hidden.split(',')]
        cfg = EnsembleConfig(state_dim=2 * robot.dof, action_dim=robot.dof,
                             ensemble_size=args.ensemble_size, hidden_sizes=hidden)
        export_ensemble(ProbabilisticEnsemble(cfg), tmp)
        rt = EnsembleRuntime(f'{tmp}/ensemble.onnx', intra_op_threads=args.threads,
                             partitioned_path=f'{tmp}/ensemble_partitioned.onnx')
        label = f'random ensemble E={args.ensemble_size} hidden={hidden}'
    else:
        from mbrl_ros.core.bundle import load_bundle
        from mbrl_ros.resources import find_resource
        bundle = load_bundle(find_resource('models', args.model), intra_op_threads=args.threads)
        rt = bundle.ensemble
        label = f'bundle {bundle.identity}'
    dyn = EnsembleDynamics(rt, propagation=args.propagation, num_particles=args.particles)
    return dyn, f'{label}, {args.propagation} x{dyn.num_particles} particles, threads={args.threads}'


def run(args) -> int:
    import tempfile

    from mbrl_ros.core.planning import PlannerConfig
    from mbrl_ros.core.planning.bench import benchmark_planner
    from mbrl_ros.core.robot import RobotModel
    robot = RobotModel.load(args.robot)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            dyn, label = _dynamics(args, robot, tmp)
        except Exception as e:  # CLI boundary: any failure to build the model is reported, not raised
            print(f'mbrl-ros bench planner: cannot build the model ({type(e).__name__}): {e}')
            return 2
        for kind in [k.strip() for k in args.planner.split(',') if k.strip()]:
            try:
                cfg = PlannerConfig(planner=kind, horizon=args.horizon, num_samples=args.samples,
                                    num_iterations=args.iterations, num_elites=args.elites,
                                    time_budget_ms=args.budget_ms).validated()
            except ValueError as e:
                print(f'mbrl-ros bench planner: {e}')
                return 2
            rows.append(benchmark_planner(robot, cfg, dynamics=dyn, plans=args.plans))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f'robot {robot.name}, model: {label}')
    print(f'{"planner":<8}{"H":>4}{"N":>6}{"iters":>6}{"p50 ms":>9}{"p99 ms":>9}{"max ms":>9}'
          f'{"model p50":>11}{"overhead p50/p99":>19}{"cut":>6}')
    for r in rows:
        print(f'{r["planner"]:<8}{r["horizon"]:>4}{r["num_samples"]:>6}{r["iterations_mean"]:>6.1f}'
              f'{r["plan_p50_ms"]:>9.2f}{r["plan_p99_ms"]:>9.2f}{r["plan_max_ms"]:>9.2f}'
              f'{r["dynamics_p50_ms"]:>11.2f}{r["overhead_p50_ms"]:>10.2f} /{r["overhead_p99_ms"]:>6.2f}'
              f'{r["budget_cut_fraction"]:>6.0%}')
    return 0
