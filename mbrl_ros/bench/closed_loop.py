"""`mbrl-ros bench closed-loop`: the reaching benchmark as users drive an arm, controllers side by side.

Goals are chained (each goal starts where the arm stopped after the previous one; `--from-home`
resets to the home pose before each goal instead) on the ROS-free reaching benchmark
(core.evaluation.reaching: success = EE within 2 cm 3 s after the goal is sent, final distance at
5 s, settle time to 5 mm, stalled goals). Every controller and every MPC budget sees the SAME goals
(same seed) on a MuJoCo `SimArm`, optionally with a payload at the end effector whose gravity the
drives do not compensate (`--payload-kg`) and dry joint friction (`--friction`):

  * `mpc`: MpcController as in the `mpc_controller` node (the deployment planner settings of
    config/mpc_controller.yaml), one row per `--budgets` value (wall-clock `time_budget_ms`; 0 = no
    budget: all iterations always run, so the figures do not depend on the machine's load);
  * `osc_pd`: the operational-space PD baseline (mbrl_ros.core.baseline) with the gains shipped in
    config/osc_pd.yaml (or the rule for an arm not in it);
  * `policy`: the bundle's distilled policy.onnx (PolicyRuntime, as the `policy` node runs it).

Step time is the wall time of each controller call inside the loop (for the MPC: one plan).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

CONTROLLERS = ('mpc', 'osc_pd', 'policy')


def add_arguments(p):
    p.add_argument('--model', default=None,
                   help='bundle name under models/ or bundle directory (its robot is used) (default: arm7; none '
                        'for --controller osc_pd alone with --robot)')
    p.add_argument('--robot', default=None,
                   help="the bundle's robot when it is not built in: an MJCF, URDF or robot YAML path "
                        "(checked against the description hash the bundle records); with --controller osc_pd "
                        "alone and no --model, any arm (no bundle is loaded)")
    p.add_argument('--tip-link', default=None,
                   help='URDF --robot: the end-effector link where the chain branches (e.g. panda_grasptarget)')
    p.add_argument('--controller', default='mpc,osc_pd,policy', metavar='LIST',
                   help=f'comma list of {", ".join(CONTROLLERS)}: run side by side on the same goals')
    p.add_argument('--budgets', default='14.5', metavar='MS,...',
                   help='MPC time_budget_ms values, one mpc row each (0 = no budget: load-independent)')
    p.add_argument('--goals', type=int, default=30, help='goals per row (the same goals for every row)')
    p.add_argument('--seed', type=int, default=1000, help='goal seed')
    p.add_argument('--seeds', default='', metavar='S,...',
                   help='several goal seeds (e.g. 1000,2000,3000): rows per seed and pooled; overrides --seed')
    p.add_argument('--from-home', action='store_true',
                   help='reset the arm to its home pose before each goal (the old benchmark) instead of chaining')
    p.add_argument('--payload-kg', type=float, default=0.0,
                   help='point mass at the end effector whose gravity the sim does NOT compensate [kg]')
    p.add_argument('--friction', type=float, default=0.0,
                   help='dry (Coulomb) friction added to every joint [Nm] (MuJoCo frictionloss)')
    p.add_argument('--horizon', type=int, default=None, help='override the deployment horizon (mpc)')
    p.add_argument('--samples', type=int, default=None, help='override num_samples (mpc)')
    p.add_argument('--iterations', type=int, default=None, help='override num_iterations (mpc)')
    p.add_argument('--elites', type=int, default=None, help='override num_elites (mpc)')
    p.add_argument('--planner', default=None, choices=('cem', 'icem'), help='override the planner (mpc)')
    p.add_argument('--weights', default='', metavar='K=V,...', help='cost weights (mpc), e.g. uncertainty=0')
    p.add_argument('--propagation', default=None, choices=('expectation', 'ts1', 'tsinf'),
                   help='ensemble propagation (mpc; default: config/mpc_controller.yaml, as the node)')
    p.add_argument('--osc-gains', default='', metavar='kp=..,kd=..,kq=..',
                   help='override the shipped osc_pd gains (any subset)')
    p.add_argument('--short', action='store_true', help='a smoke run: 2 goals, 2 s windows')
    p.add_argument('--progress', action='store_true', help='a progress bar per row')
    p.add_argument('--json', action='store_true', help='print the rows as JSON instead of a table')


class _Refused(ValueError):
    pass


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise _Refused(f'{what}: expected comma-separated numbers, got {text!r}') from None
    if not vals:
        raise _Refused(f'{what}: no values given')
    return vals


def _parse(args) -> dict:
    ctrls = [c.strip() for c in args.controller.split(',') if c.strip()]
    bad = [c for c in ctrls if c not in CONTROLLERS]
    if bad or not ctrls:
        raise _Refused(f'--controller: unknown {bad or "(empty)"}; choose from {", ".join(CONTROLLERS)}')
    budgets = _floats(args.budgets, '--budgets')
    if any(b < 0 or not np.isfinite(b) for b in budgets):
        raise _Refused(f'--budgets must be >= 0 ms (0 = no budget), got {args.budgets}')
    seeds = [int(s) for s in _floats(args.seeds, '--seeds')] if args.seeds else [args.seed]
    goals = 2 if args.short else args.goals
    if goals < 1:
        raise _Refused(f'--goals must be >= 1, got {goals}')
    if not (np.isfinite(args.payload_kg) and args.payload_kg >= 0):
        raise _Refused(f'--payload-kg must be >= 0, got {args.payload_kg}')
    if not (np.isfinite(args.friction) and args.friction >= 0):
        raise _Refused(f'--friction must be >= 0 Nm, got {args.friction}')
    return {'controllers': list(dict.fromkeys(ctrls)), 'budgets': budgets, 'seeds': seeds, 'goals': goals}


def _osc_gains(robot, text: str):
    import dataclasses

    from mbrl_ros.commands.options import number_pairs
    from mbrl_ros.core.baseline import shipped_gains
    base = shipped_gains(robot)
    changes = number_pairs(text, '--osc-gains') if text else {}
    unknown = set(changes) - {'kp', 'kd', 'kq'}
    if unknown:
        raise _Refused(f'--osc-gains: unknown {sorted(unknown)}; use kp, kd, kq')
    return dataclasses.replace(base, **changes).validated()


def run(args) -> int:
    from mbrl_ros.commands.options import number_pairs
    from mbrl_ros.core.baseline import RULE_CONTROL_PERIOD_S, gains_source
    from mbrl_ros.core.bundle import BundleError
    from mbrl_ros.core.learning import planner_config
    from mbrl_ros.core.planning.config import CostWeights
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.core.sim import SimArm
    from mbrl_ros.resources import find_resource

    try:
        opts = _parse(args)
        if opts['controllers'] == ['osc_pd'] and args.robot and args.model is None:   # no learned model needed
            bundle, robot = None, RobotModel.load(args.robot, tip_link=args.tip_link)
        else:
            bundle, robot = _bundle_and_robot(find_resource('models', args.model or 'arm7'), args.robot,
                                              args.tip_link)
        dt = bundle.dt if bundle is not None else RULE_CONTROL_PERIOD_S
        weights = CostWeights(**number_pairs(args.weights)).validated()
        cfgs = {b: planner_config(time_budget_ms=b, horizon=args.horizon, num_samples=args.samples,
                                  num_iterations=args.iterations, num_elites=args.elites, planner=args.planner)
                for b in opts['budgets']}
        gains = _osc_gains(robot, args.osc_gains)
        SimArm(robot, payload_kg=args.payload_kg, joint_friction=args.friction)   # checks the limits
        if 'policy' in opts['controllers'] and bundle.policy_path is None:
            raise _Refused(f'{bundle.path} has no policy.onnx (mbrl-ros distill), so no policy row; '
                           'leave policy out of --controller')
    except (ValueError, TypeError, FileNotFoundError, BundleError) as e:
        print(f'mbrl-ros bench closed-loop: {e}')
        return 2
    propagation = args.propagation or deployment_propagation()
    start = 'home' if args.from_home else 'chained'
    goal_s = 2.0 if args.short else None
    settle_s = 2.0 if args.short else 3.0

    def controllers():
        """(name, budget or None) per row, in the order asked."""
        for c in opts['controllers']:
            if c == 'mpc':
                for b in opts['budgets']:
                    yield c, b
            else:
                yield c, None

    rows, pooled = [], {}
    for seed in opts['seeds']:
        for name, budget in controllers():
            agent = _make(name, robot, bundle, cfgs.get(budget), weights, propagation, seed, gains)
            sim = SimArm(robot, payload_kg=args.payload_kg, joint_friction=args.friction)
            t0 = time.perf_counter()
            res = _evaluate(agent, robot, opts['goals'], seed, dt, start, sim, args.progress,
                            goal_s, settle_s)
            row = _row(name, budget, seed, res, agent, time.perf_counter() - t0)
            rows.append(row)
            pooled.setdefault((name, budget), []).append(res)
    if len(opts['seeds']) > 1:
        for (name, budget), results in pooled.items():
            rows.append(_row(name, budget, 'all', _concat(results), None, None))
    meta = {'bundle': str(bundle.path) if bundle is not None else None, 'robot': robot.name, 'start': start,
            'goals': opts['goals'],
            'seeds': opts['seeds'], 'payload_kg': args.payload_kg, 'friction_nm': args.friction,
            'propagation': propagation, 'osc_gains': {**gains.__dict__, 'source': gains_source(robot)
                                                      if not args.osc_gains else '--osc-gains'},
            'load_avg_1min': _load()}
    if args.json:
        print(json.dumps({**meta, 'rows': rows}, indent=1))
        return 0
    c = next(iter(cfgs.values()))
    print(f'bundle {meta["bundle"] or "none (osc_pd only)"} ({robot.name}); {opts["goals"]} goals {start}, '
          f'seeds {opts["seeds"]}; '
          f'payload {args.payload_kg:g} kg, friction {args.friction:g} Nm; load {meta["load_avg_1min"]}')
    if 'mpc' in opts['controllers']:
        print(f'mpc: {c.planner} H={c.horizon} N={c.num_samples} iterations<={c.num_iterations} {propagation}, '
              f'weights {number_pairs(args.weights) or "default"}')
    if 'osc_pd' in opts['controllers']:
        print(f'osc_pd: kp {gains.kp:g} N/m, kd {gains.kd:g} N·s/m, kq {gains.kq:g} N·m·s/rad ({meta["osc_gains"]["source"]})')
    print(f'success = EE within 2 cm {settle_s:g} s after the goal; distance at the end of the '
          f'{goal_s or 5:g} s window; settled = stays within 5 mm')
    print(f'{"controller":<16}{"seed":>6}{"success":>9}{"dist med mm":>13}{"dist p90 mm":>13}{"settle med s":>14}'
          f'{"settled":>9}{"stalled":>9}{"step p50 ms":>13}{"step p99 ms":>13}')
    for r in rows:
        d, st = r['final_distance_m'], r['step_ms']
        print(f'{r["label"]:<16}{str(r["seed"]):>6}{r["success_rate"]:>9.0%}{1e3 * d["median"]:>13.1f}'
              f'{1e3 * d["p90"]:>13.1f}{_settle(r["settle_time_s"]["median"]):>14}{r["settled_fraction"]:>9.0%}'
              f'{r["stalled"]:>9}{st["p50"]:>13.3f}{st["p99"]:>13.3f}')
    return 0


def _bundle_and_robot(path, description, tip_link=None):
    """(bundle, the RobotModel it was learned on): `description` (the bundle is loaded against it: joints,
    limits and description hash must match) or, without it, the built-in robot the bundle names."""
    from mbrl_ros.core.bundle import load_bundle
    from mbrl_ros.core.robot import RobotModel
    if description:
        robot = RobotModel.load(description, tip_link=tip_link)
        return load_bundle(path, robot), robot
    bundle = load_bundle(path)
    try:
        return bundle, RobotModel.load(bundle.robot_name)
    except (ValueError, FileNotFoundError) as exc:
        raise _Refused(f"{bundle.path} was learned on robot '{bundle.robot_name}', which is not built in: "
                       'give its description with --robot <MJCF, URDF or robot YAML>') from exc


def _settle(t: float) -> str:
    """The median settle time; 'never' when most goals did not settle within the window."""
    return f'{t:.2f}' if np.isfinite(t) else 'never'


def _make(name, robot, bundle, cfg, weights, propagation, seed, gains):
    if name == 'mpc':
        from mbrl_ros.core.learning.agent import MpcAgent
        return MpcAgent(robot, bundle, cfg, weights, propagation=propagation, dt=bundle.dt, seed=seed)
    if name == 'osc_pd':
        from mbrl_ros.core.baseline import OscPd
        return OscPd(robot, gains)
    from mbrl_ros.core.policy import PolicyRuntime
    return PolicyRuntime(bundle.policy_path)


def _evaluate(agent, robot, goals, seed, dt, start, sim, progress, goal_s, settle_s):
    from mbrl_ros.core.evaluation.reaching import evaluate_reaching
    return evaluate_reaching(agent, robot, n_goals=goals, seed=seed, dt=dt, start=start, sim=sim,
                             progress=progress, goal_s=goal_s, settle_s=settle_s)


def _row(name, budget, seed, res, agent, wall_s) -> dict:
    with np.errstate(invalid='ignore'):   # the settle-time median over never-settled (inf) goals
        s = res.summary()
    label = name if budget is None else f'{name} {budget:g} ms'
    row = {'label': label, 'controller': name, 'budget_ms': budget, 'seed': seed, **s}
    if agent is not None and hasattr(agent, 'iterations'):
        it = np.asarray(agent.iterations)
        row['iterations_mean'] = float(it.mean()) if len(it) else 0.0
        row['no_command'] = int(agent.no_command)
    if wall_s is not None:
        row['wall_s'] = round(wall_s, 1)
    return row


def _concat(results):
    """One ReachingResult of several seeds' results (for the pooled row)."""
    from mbrl_ros.core.evaluation.reaching import ReachingResult
    cat = lambda k: np.concatenate([getattr(r, k) for r in results])   # noqa: E731
    ok = cat('successes')
    return ReachingResult(float(ok.mean()), cat('final_distance_m'), ok, cat('step_ms'),
                          [f for r in results for f in r.failures], cat('distance_at_settle_m'),
                          cat('settle_time_s'), cat('stalled'), results[0].start)


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def deployment_propagation() -> str:
    """The node's propagation as deployed (config/mpc_controller.yaml), 'expectation' if not set."""
    import yaml

    from mbrl_ros.resources import find_resource
    try:
        params = yaml.safe_load(find_resource('config', 'mpc_controller.yaml').read_text())
        return str(params['mpc_controller']['ros__parameters'].get('propagation', 'expectation'))
    except (OSError, KeyError, TypeError, FileNotFoundError, yaml.YAMLError):
        return 'expectation'
