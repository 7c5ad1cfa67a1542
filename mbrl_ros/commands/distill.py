"""`mbrl-ros distill --bundle DIR`: DAgger-distil the MPC over the bundle's ensemble into policy.onnx.

Writes policy.onnx (+ its sha256 and a `policy:` section in bundle.yaml) and distill_report.{json,png}
into the bundle, or into a copy with --out (the source bundle is left untouched).

`--attach SRC` distils nothing: it copies the policy of the distilled bundle SRC into --bundle (same
robot; e.g. the shipped bundle after its ensemble was replaced), re-runs the reaching benchmark
(--eval-goals) and records it, and validates the result with load_bundle.
"""
from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from mbrl_ros.commands.options import number_pairs


def add_arguments(p):
    from mbrl_ros.core.policy.distill import DistillConfig
    d = DistillConfig()
    x = d.expert
    p.add_argument('--bundle', required=True, help='model bundle directory (ensemble.onnx + bundle.yaml)')
    p.add_argument('--out', help='copy the bundle here first and write the policy into the copy')
    p.add_argument('--attach', metavar='SRC', help='no distillation: put the policy of the distilled bundle SRC '
                                                  'into --bundle (re-evaluated on --eval-goals goals)')
    p.add_argument('--robot', help='built-in robot name or MJCF path (default: the robot named in bundle.yaml)')
    p.add_argument('--rounds', type=int, default=d.rounds, help='DAgger rounds (round 0: the expert drives)')
    p.add_argument('--episodes-per-round', type=int, default=d.episodes_per_round,
                   help='reaching episodes (one random goal each) per DAgger round')
    p.add_argument('--episode-s', type=float, default=3.0, help='episode length [s]')
    p.add_argument('--beta-decay', type=float, default=d.beta_decay, help='expert mixing beta = decay**round')
    p.add_argument('--label-every', type=int, default=d.label_every,
                   help='rounds >= 1: the expert labels every k-th visited state (cheaper; 1 = all)')
    p.add_argument('--epochs', type=int, default=d.epochs_per_round, help='training epochs per round')
    p.add_argument('--hidden', default='256,256', help='hidden widths')
    p.add_argument('--output', choices=('passive', 'direct'), default=d.output,
                   help="network head: the effort itself, or the gains of a task-space spring-damper "
                        "(zero effort at the goal at rest by construction)")
    p.add_argument('--limit-spring', action='store_true',
                   help='passive head: also a learned spring pushing joints out of a band at their limits')
    p.add_argument('--lr', type=float, default=1e-3, help='Adam learning rate')
    p.add_argument('--eval-goals', type=int, default=100, help='test benchmark goals for the kept policy (seed 1000)')
    p.add_argument('--val-goals', type=int, default=50,
                   help='validation goals after every round (seed 2000); the best round is kept (0: the last)')
    p.add_argument('--expert-eval-goals', type=int, default=0,
                   help='also run the expert on the benchmark (slow: 3 s of MPC per goal)')
    g = p.add_argument_group('expert (MPC) budget')
    g.add_argument('--expert-horizon', type=int, default=x['horizon'], help='expert planning horizon (steps)')
    g.add_argument('--expert-samples', type=int, default=x['num_samples'], help='expert samples per iteration')
    g.add_argument('--expert-iterations', type=int, default=x['num_iterations'],
                   help='expert optimiser iterations per plan')
    g.add_argument('--expert-elites', type=int, default=x['num_elites'], help='expert elites per iteration')
    g.add_argument('--expert-execute', choices=('best', 'mean'), default=x['execute'],
                   help="label with the best sampled plan or the optimiser's final mean (smoother labels)")
    g.add_argument('--expert-warm-start', action='store_true',
                   help='warm-start each label from the previous plan (without it every label is planned from scratch, '
                        'so labels depend only on (state, goal))')
    g.add_argument('--expert-cost', action='append', default=[], metavar='WEIGHT=VALUE',
                   help='a cost weight of the expert (CostWeights field) on top of the default '
                        f'{d.expert_cost}, e.g. uncertainty=0 (repeatable)')
    p.add_argument('--no-jacobian', action='store_true', help='without the J^T (goal - ee), J^T ee-velocity inputs')
    p.add_argument('--seed', type=int, default=0, help='random seed (episodes, network initialisation)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--no-progress', action='store_true', help='no progress output')


def run(args) -> int:
    import yaml

    from mbrl_ros.core.bundle import (BUNDLE_FILE, POLICY_FILE, BundleError, load_bundle, read_bundle_meta,
                                      write_bundle_meta)
    from mbrl_ros.core.policy.distill import DistillConfig, distill, save_to_bundle
    from mbrl_ros.core.robot import RobotModel

    src = Path(args.bundle)
    try:
        hidden = [int(h) for h in args.hidden.split(',') if h.strip()]
        meta = read_bundle_meta(src) if (src / BUNDLE_FILE).is_file() else {}
        robot = RobotModel.load(args.robot or (meta.get('robot') or {}).get('name') or 'arm7')
        cfg = DistillConfig(rounds=args.rounds, episodes_per_round=args.episodes_per_round,
                            episode_s=args.episode_s, beta_decay=args.beta_decay, epochs_per_round=args.epochs,
                            label_every=args.label_every,
                            hidden_sizes=hidden, lr=args.lr, eval_goals=args.eval_goals, val_goals=args.val_goals,
                            expert_eval_goals=args.expert_eval_goals, seed=args.seed, threads=args.threads,
                            expert={'horizon': args.expert_horizon, 'num_samples': args.expert_samples,
                                    'num_iterations': args.expert_iterations, 'num_elites': args.expert_elites,
                                    'execute': args.expert_execute, 'time_budget_ms': 0.0},
                            expert_cost={**DistillConfig().expert_cost,
                                         **number_pairs(','.join(args.expert_cost), '--expert-cost')},
                            expert_warm_start=args.expert_warm_start,
                            jacobian_features=not args.no_jacobian, output=args.output,
                            limit_spring=args.limit_spring)
        errs = cfg.errors()
        if errs:
            raise ValueError('; '.join(errs))
        if args.attach:
            return _attach(args, src, robot)
        bundle = load_bundle(src, robot)
    except (ValueError, FileNotFoundError, BundleError, yaml.YAMLError) as e:
        print(f'mbrl-ros distill: {e}', file=sys.stderr)
        return 2
    dest = src
    if args.out:
        dest = Path(args.out)
        if dest.resolve() != src.resolve():
            dest.mkdir(parents=True, exist_ok=True)
            for f in [BUNDLE_FILE, *meta['files']]:
                if f != POLICY_FILE:
                    shutil.copy2(src / f, dest / f)
            # The copy must not claim a policy it does not have yet.
            m = read_bundle_meta(dest)
            m['files'].pop(POLICY_FILE, None)
            m.pop('policy', None)
            write_bundle_meta(dest, m)
            (dest / POLICY_FILE).unlink(missing_ok=True)
    argv = sys.argv[sys.argv.index('distill'):] if 'distill' in sys.argv else ['distill', '<called from python>']
    command = 'mbrl-ros ' + ' '.join(shlex.quote(a) for a in argv)
    sections = []
    # The bundle is written after every round: a distillation cut short keeps its latest policy.
    distill(bundle, robot, cfg, progress=not args.no_progress, log=lambda m: print(m, flush=True),
            on_round=lambda res: sections.append(save_to_bundle(res, dest, robot, command=command,
                                                                log=lambda m: print(m, flush=True))))
    section = sections[-1]
    try:
        load_bundle(dest, robot)   # the written bundle must pass every check, policy included
    except BundleError as e:
        print(f'mbrl-ros distill: the written bundle fails validation: {e}', file=sys.stderr)
        return 1
    m = section['metrics']
    print(f'wrote {dest / POLICY_FILE}: success {m["success_rate"]:.0%} on {cfg.eval_goals} goals '
          f'(median final distance {m["final_distance_median_m"] * 100:.1f} cm), held-out action rmse '
          f'{m["heldout_action_rmse"]:.4f}, step p50 {m["step_ms_p50"] * 1e3:.0f} us / p99 '
          f'{m["step_ms_p99"] * 1e3:.0f} us, {m["speedup_vs_expert_p50"]:.0f}x faster than the expert '
          f'({m["expert_step_ms_p50"]:.1f} ms)')
    print(f'report: {dest / "distill_report.png"}, {dest / "distill_report.json"}')
    return 0


def _attach(args, dest: Path, robot) -> int:
    from mbrl_ros.core.policy.distill import attach_policy
    argv = sys.argv[sys.argv.index('distill'):] if 'distill' in sys.argv else ['distill', '<called from python>']
    section = attach_policy(args.attach, dest, robot, eval_goals=args.eval_goals,
                            command='mbrl-ros ' + ' '.join(shlex.quote(a) for a in argv),
                            progress=not args.no_progress)
    m = section['metrics']
    print(f'attached {Path(args.attach) / "policy.onnx"} to {dest}: success {m["success_rate"]:.0%} '
          f'(median final distance {m["final_distance_median_m"] * 100:.1f} cm)')
    return 0
