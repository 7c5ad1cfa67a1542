"""`mbrl-ros bench mppi-compare`: our planner against `pytorch-mppi` (PyPI) on the same ensemble.

Equal work per plan: both push N samples x H steps through the same ONNX ensemble (one
onnxruntime session, 1 thread; torch also on 1 thread) with the same propagation, through the
same adapter (`EnsembleDynamics`): `--propagation expectation` evaluates every member on every row
(next state = state + member-mean delta); `tsinf` evaluates each sample with one member through
the partitioned graph (PETS TS-inf with one particle: 1/E of the work). pytorch-mppi reaches the
model through a torch wrapper (tensor -> numpy -> the adapter -> tensor, no copies beyond the
float32 casts) and scores trajectories with *our* task cost (`make_task_cost`, including the
disagreement term) as its terminal cost over the whole trajectory, so cost and model are identical
and only the optimiser differs. Ours runs with one iteration (`cem`: exactly N samples; `icem`: N
plus the kept elites), no time budget, so per-plan times are compared at equal samples x horizon.
Success on the same reaching goals (core.evaluation.reaching).

`--mppi-model torch` gives pytorch-mppi the ensemble as a pytorch-mppi user would: the same weights
as a torch module (`model_from_onnx`), evaluated in torch eager on the same states (expectation over
the members with the disagreement computed the same way, or tsinf: one member per sample, picked from
all members' outputs as a torch user writes it; ours evaluates only that member, through the
partitioned graph). That compares the two stacks end to end (optimiser
and runtime); the default `onnx` isolates the optimiser.
"""
from __future__ import annotations

import json

import numpy as np


def add_arguments(p):
    p.add_argument('--model', default='arm7', help='bundle name or directory (default: the shipped arm7)')
    p.add_argument('--samples', type=int, default=200, help='samples per plan (both planners)')
    p.add_argument('--horizon', type=int, default=12, help='planning horizon (steps)')
    p.add_argument('--goals', type=int, default=10, help='reaching goals per planner')
    p.add_argument('--seed', type=int, default=1000, help='goal seed')
    p.add_argument('--lambda', dest='lambda_', type=float, default=0.1, help='MPPI temperature')
    p.add_argument('--ours', default='cem,icem', help='our planners to run (1 iteration each)')
    p.add_argument('--propagation', default='expectation', choices=('expectation', 'tsinf'),
                   help='ensemble propagation for both planners (tsinf: one member per sample)')
    p.add_argument('--mppi-model', default='onnx', choices=('onnx', 'torch'),
                   help="pytorch-mppi's dynamics: our onnxruntime adapter (optimiser only) or the same "
                        'weights in torch eager (how pytorch-mppi is used; expectation propagation)')
    p.add_argument('--weights', default='', metavar='K=V,...',
                   help='cost weights for both, e.g. uncertainty=0 (joint_goal defaults to 0 here: pytorch-mppi '
                        'has no IK guidance)')
    p.add_argument('--short', action='store_true', help='2 goals, N=30, H=5, 0.5 s episodes: a smoke run')
    p.add_argument('--timing-plans', type=int, default=0, metavar='K',
                   help='also time K plans of each planner alternately from the same states (fair under a '
                        'changing machine load), before the closed-loop runs')
    p.add_argument('--json', action='store_true', help='print the results as JSON')


class _RecordingDynamics:
    """The ensemble for pytorch-mppi: torch in/out through the same `EnsembleDynamics` adapter our
    planner uses; the disagreement of every step is kept for the cost."""

    def __init__(self, runtime, horizon: int, propagation: str = 'expectation', seed: int = 0):
        import torch

        from mbrl_ros.core.planning import EnsembleDynamics
        self.torch = torch
        self.dyn = EnsembleDynamics(runtime, propagation=propagation, num_particles=1, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.dis = None
        self.horizon = horizon

    def __call__(self, state, u, t):
        s = state.detach().numpy()
        if t == 0 or self.dis is None or self.dis.shape[0] != s.shape[0]:
            self.dis = np.zeros((s.shape[0], self.horizon))
            self.dyn.begin_rollout(s.shape[0], self.rng)
        nxt, self.dis[:, t] = self.dyn.step(s, u.detach().numpy())
        return self.torch.from_numpy(nxt.astype(np.float32))


class _TorchEnsembleDynamics:
    """The ensemble for pytorch-mppi in torch eager (its native use): the bundle's weights as a torch
    module. `expectation`: next = state + mean over members, disagreement as `EnsembleDynamics`
    computes it; `tsinf`: each sample follows one member for the whole rollout (every member is
    evaluated on every row and the sample's member picked, as one writes it in torch)."""

    def __init__(self, bundle_path, horizon: int, propagation: str = 'expectation', seed: int = 0):
        import torch

        from mbrl_ros.core.dynamics.export import model_from_onnx
        self.torch = torch
        self.model = model_from_onnx(bundle_path / 'ensemble.onnx')
        self.inv_std = 1.0 / self.model.out_std.detach().clone()
        self.propagation = propagation
        self.gen = torch.Generator().manual_seed(seed)
        self.members = None
        self.dis = None
        self.horizon = horizon

    def __call__(self, state, u, t):
        if t == 0 or self.dis is None or self.dis.shape[0] != state.shape[0]:
            self.dis = np.zeros((state.shape[0], self.horizon))
            self.members = self.torch.randint(0, self.model.config.ensemble_size, (state.shape[0],),
                                              generator=self.gen)
        with self.torch.no_grad():
            mean, _ = self.model(state.float(), u.float())
            if self.propagation == 'tsinf':
                return state + mean[self.members, self.torch.arange(state.shape[0])]
            self.dis[:, t] = (mean.std(dim=0, unbiased=False) * self.inv_std).mean(dim=-1).numpy()
            return state + mean.mean(dim=0)


class MppiAgent:
    """pytorch-mppi as a reaching controller `(q, qd, goal) -> effort` with `reset()`."""

    def __init__(self, robot, runtime, samples: int, horizon: int, lambda_: float = 0.1,
                 init_std: float = 0.25, weights=None, seed: int = 0, propagation: str = 'expectation',
                 torch_model_from=None):
        import torch
        from pytorch_mppi import MPPI

        from mbrl_ros.core.planning.costs import make_task_cost
        self.torch = torch
        torch.manual_seed(seed)
        self.robot = robot
        self.cost = make_task_cost(robot, weights)
        self.goal = None
        self.state = None
        self.dyn = (_TorchEnsembleDynamics(torch_model_from, horizon, propagation, seed) if torch_model_from is not None
                    else _RecordingDynamics(runtime, horizon, propagation, seed))
        u_max = torch.tensor(np.asarray(robot.effort_max, np.float32))
        sigma = torch.diag((init_std * u_max) ** 2)     # same initial spread as ours (fraction of half-range)
        self.mppi = MPPI(self.dyn, self._running, 2 * robot.dof, sigma, num_samples=samples, horizon=horizon,
                         device='cpu', terminal_state_cost=self._trajectory_cost, lambda_=lambda_,
                         u_min=-u_max, u_max=u_max, step_dependent_dynamics=True)

    def _running(self, state, u, t):
        return self.torch.zeros(state.shape[0], dtype=state.dtype)

    def _trajectory_cost(self, states, actions):
        # states (1, K, T, S) after each step; prepend the start state -> our (K, 1, T+1, S) layout.
        st = states[0].detach().numpy().astype(np.float64)
        k = st.shape[0]
        full = np.concatenate([np.broadcast_to(self.state, (k, 1, st.shape[-1])), st], axis=1)[:, None]
        batch = self.cost.batch(full, actions[0].detach().numpy().astype(np.float64),
                                self.dyn.dis[:, None, :], self.goal)
        return self.torch.from_numpy(self.cost(batch).astype(np.float32))

    def reset(self):
        self.mppi.reset()

    def __call__(self, q, qd, goal):
        self.goal = np.asarray(goal, float)
        self.state = np.concatenate([q, qd])
        u = self.mppi.command(self.torch.from_numpy(self.state.astype(np.float32)))
        return u.detach().numpy().astype(np.float64).reshape(-1)


def interleaved_plan_times(agents: dict, robot, plans: int, seed: int = 0) -> dict:
    """Per-plan wall time [ms] of each agent, called in turn on the same random states and goals,
    so that a load change on the machine hits every planner alike. -> name -> (plans,) array."""
    import time

    from mbrl_ros.core.evaluation.reaching import sample_goals
    starts, _, goals = sample_goals(robot, plans, seed)
    times = {k: np.empty(plans) for k in agents}
    rng = np.random.default_rng(seed)
    for i in range(plans):
        qd = 0.1 * rng.standard_normal(robot.dof)
        for name in (list(agents) if i % 2 == 0 else list(agents)[::-1]):
            t0 = time.perf_counter()
            agents[name](starts[i], qd, goals[i])
            times[name][i] = 1e3 * (time.perf_counter() - t0)
    return times


def run(args) -> int:
    import torch

    from mbrl_ros.core.bundle import BundleError, load_bundle
    from mbrl_ros.core.evaluation.reaching import evaluate_reaching
    from mbrl_ros.core.learning import MpcAgent, planner_config
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.resources import find_resource

    try:
        import pytorch_mppi  # noqa: F401
    except ImportError:
        print("mbrl-ros bench mppi-compare: needs pytorch-mppi (pip install -e '.[bench]')")
        return 2
    torch.set_num_threads(1)   # the ensemble runs on one onnxruntime thread for both
    n, h, goals, settle = (30, 5, 2, 0.5) if args.short else (args.samples, args.horizon, args.goals, 3.0)
    from mbrl_ros.commands.options import number_pairs
    from mbrl_ros.core.planning.config import CostWeights
    try:
        # pytorch-mppi has no IK guidance: both optimise the same cost without it unless asked.
        given = {'joint_goal': 0.0, **number_pairs(args.weights)}
        weights = CostWeights(**given).validated()
        bundle = load_bundle(find_resource('models', args.model), intra_op_threads=1)
        robot = RobotModel.load(bundle.robot_name)
        ours = {k.strip(): planner_config(planner=k.strip(), horizon=h, num_samples=n, num_iterations=1,
                                          num_elites=max(2, n // 10), time_budget_ms=0.0)
                for k in args.ours.split(',') if k.strip()}
    except (ValueError, TypeError, FileNotFoundError, BundleError) as e:
        print(f'mbrl-ros bench mppi-compare: {e}')
        return 2
    if args.mppi_model == 'torch' and args.propagation not in ('expectation', 'tsinf'):
        print('mbrl-ros bench mppi-compare: --mppi-model torch runs the expectation or tsinf propagation')
        return 2
    torch_from = bundle.path if args.mppi_model == 'torch' else None
    results, timing = {}, {}
    if args.timing_plans > 0:
        agents = {f'ours {k} x1': MpcAgent(robot, bundle, cfg, weights, propagation=args.propagation, dt=bundle.dt)
                  for k, cfg in ours.items()}
        agents['pytorch-mppi'] = MppiAgent(robot, bundle.ensemble, n, h, lambda_=args.lambda_, weights=weights,
                                           propagation=args.propagation, torch_model_from=torch_from)
        for a in agents.values():   # warm up (first-call allocations, onnxruntime arenas)
            interleaved_plan_times({'a': a}, robot, 3, seed=args.seed + 1)
        t = interleaved_plan_times(agents, robot, args.timing_plans, seed=args.seed)
        timing = {k: {'p50': float(np.percentile(v, 50)), 'p99': float(np.percentile(v, 99))} for k, v in t.items()}
    for name, cfg in ours.items():
        agent = MpcAgent(robot, bundle, cfg, weights, propagation=args.propagation, dt=bundle.dt)
        results[f'ours {name} x1'] = evaluate_reaching(agent, robot, goals, seed=args.seed, settle_s=settle,
                                                       dt=bundle.dt).summary()
    mppi = MppiAgent(robot, bundle.ensemble, n, h, lambda_=args.lambda_, weights=weights,
                     propagation=args.propagation, torch_model_from=torch_from)
    results['pytorch-mppi'] = evaluate_reaching(mppi, robot, goals, seed=args.seed, settle_s=settle,
                                                dt=bundle.dt).summary()
    if args.json:
        print(json.dumps({'bundle': str(bundle.path), 'samples': n, 'horizon': h, 'propagation': args.propagation,
                          'mppi_model': args.mppi_model,
                          'results': results, 'interleaved_plan_ms': timing}, indent=1))
        return 0
    print(f'bundle {bundle.path} ({robot.name}): N={n} samples x H={h} steps per plan, {args.propagation} over '
          f'{bundle.ensemble.ensemble_size} members (pytorch-mppi: {args.mppi_model} model), weights {given}, '
          f'{goals} goals (seed {args.seed}), {settle} s episodes')
    print(f'{"planner":<16}{"plan p50 ms":>12}{"plan p99 ms":>12}{"success":>9}{"dist med cm":>13}')
    for name, s in results.items():
        print(f'{name:<16}{s["step_ms"]["p50"]:>12.2f}{s["step_ms"]["p99"]:>12.2f}{s["success_rate"]:>9.0%}'
              f'{100 * s["final_distance_m"]["median"]:>13.2f}')
    ref = results['pytorch-mppi']['step_ms']['p50']
    for name, s in results.items():
        if name != 'pytorch-mppi':
            print(f'{name}: {ref / s["step_ms"]["p50"]:.2f}x faster per plan (p50) than pytorch-mppi')
    if timing:
        print(f'interleaved timing, {args.timing_plans} plans each from the same states (p50 / p99 ms):')
        ref = timing['pytorch-mppi']['p50']
        for name, t in timing.items():
            extra = '' if name == 'pytorch-mppi' else f'  -> {ref / t["p50"]:.2f}x faster (p50)'
            print(f'  {name:<16}{t["p50"]:>9.2f} /{t["p99"]:>8.2f}{extra}')
    return 0
