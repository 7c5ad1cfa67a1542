"""`mbrl-ros learn`: PETS from nothing -- random data, then K rounds of (train -> MPC episodes -> more data)."""
from __future__ import annotations

import shlex
import sys

from mbrl_ros.commands.options import number_pairs


def _ints(text: str, name: str) -> list[int]:
    try:
        v = [int(x) for x in text.replace(' ', '').split(',') if x]
    except ValueError:
        raise ValueError(f'{name} must be comma-separated integers, got {text!r}') from None
    if not v:
        raise ValueError(f'{name} is empty')
    return v


def _settings(text: str) -> dict:
    """'horizon=8,planner=cem' -> {'horizon': 8, 'planner': 'cem'} (values parsed as YAML scalars)."""
    import yaml
    out = {}
    for item in [t for t in text.replace(' ', '').split(',') if t]:
        k, sep, v = item.partition('=')
        if not sep or not k:
            raise ValueError(f'expected name=value pairs, got {item!r}')
        out[k] = yaml.safe_load(v)
    return out


def add_arguments(p):
    from mbrl_ros.core.dynamics.heads import AFFINE_INPUTS
    from mbrl_ros.core.learning.pets import LearnConfig, _default_planner
    d, dp = LearnConfig(), _default_planner()
    p.add_argument('--out', required=True, help='bundle directory to write (e.g. models/arm7_pets)')
    p.add_argument('--robot', default=d.robot, help='built-in robot name or MJCF path')
    p.add_argument('--seed', type=int, default=d.seed,
                   help='seed of the whole loop (the same seed gives the same bundle)')
    p.add_argument('--work-dir', help='keep the per-iteration bundles here (default: temporary, removed)')
    g = p.add_argument_group('data')
    g.add_argument('--init', type=int, default=d.init_transitions, help='random exploration transitions')
    g.add_argument('--amplitude', type=float, default=d.amplitude,
                   help='exploration effort as a fraction of effort_max (default: calibrated per joint on the '
                        "arm's dynamics so random commands reach 0.6 x qd_max at the 95th percentile; "
                        'written to bundle.yaml learning.derived)')
    g.add_argument('--init-episode-len', type=int, default=d.episode_len,
                   help='steps per random exploration episode: shorter ones start from more configurations '
                        '(arm7: 50 gives a better model from the same transitions, docs/results/world_model_arm7.md)')
    g.add_argument('--iterations', type=int, default=d.iterations, help='K: train -> MPC episodes rounds')
    g.add_argument('--episodes', type=int, default=d.episodes_per_iteration, help='N MPC episodes per iteration')
    g.add_argument('--episode-s', type=float, default=d.episode_s,
                   help='length of an MPC episode (one goal; success judged at its end) [s]')
    g.add_argument('--max-env-steps', type=int, default=d.max_env_steps,
                   help='budget on training-data environment steps (a plan above it is refused)')
    g = p.add_argument_group('model and training')
    g.add_argument('--ensemble-size', type=int, default=d.ensemble_size, help='ensemble members')
    g.add_argument('--hidden', default=','.join(map(str, d.hidden_sizes)), help='hidden widths')
    g.add_argument('--affine-inputs', default=d.affine_inputs, choices=list(AFFINE_INPUTS),
                   help='what the control-affine head multiplies: the action, [action, joint velocity], '
                        'or rigid_body: [action, joint velocity, products of joint velocities]')
    g.add_argument('--no-raw-angles', action='store_true', help='joint angles enter only as sin/cos(q)')
    g.add_argument('--invariant-joints', default=','.join(map(str, d.invariant_joints)), metavar='I,J',
                   help='joint indices whose angle the dynamics do not depend on (masked from the inputs)')
    g.add_argument('--epochs', type=int, default=d.epochs, help='maximum epochs per training')
    g.add_argument('--patience', type=int, default=d.patience,
                   help='early stop after this many epochs without any member improving on the holdout')
    g.add_argument('--nll-beta', type=float, default=d.nll_beta,
                   help='beta-NLL weighting of the training loss (0: plain Gaussian NLL)')
    g.add_argument('--weight-decay', type=float, default=d.weight_decay, help='AdamW weight decay')
    g.add_argument('--calibrate-on', choices=('exploration', 'all'), default=d.calibrate_on,
                   help='holdout episodes the 2-sigma band is calibrated on: the random exploration (drawn like '
                        "evaluate-model's held-out data) or all, on-policy included")
    g.add_argument('--max-train-time', type=float, default=None, help='wall-clock cap per training (s)')
    g.add_argument('--threads', type=int, default=d.threads, help='torch CPU threads')
    g = p.add_argument_group('planner of the on-policy episodes (fixed population: reproducible data)')
    g.add_argument('--horizon', type=int, default=dp['horizon'], help='planning horizon (steps)')
    g.add_argument('--samples', type=int, default=dp['num_samples'], help='samples per iteration')
    g.add_argument('--plan-iterations', type=int, default=dp['num_iterations'], help='optimiser iterations per plan')
    g.add_argument('--elites', type=int, default=dp['num_elites'], help='elites per iteration')
    g.add_argument('--budget-ms', type=float, default=dp['time_budget_ms'],
                   help='wall-clock budget per plan while collecting (0: none, reproducible)')
    g.add_argument('--planner', default='icem', choices=['cem', 'icem'], help='optimiser')
    g.add_argument('--weights', default='', metavar='K=V,...',
                   help='cost weights (CostWeights fields, e.g. uncertainty=1,effort=0.02) on top of the '
                   'node\'s defaults; the loop sets uncertainty=0 unless given')
    g = p.add_argument_group('evaluation and distillation')
    g.add_argument('--eval-goals', type=int, default=d.eval_goals,
                   help='final closed-loop reaching evaluation with the wall-clock budget (0: skip)')
    g.add_argument('--eval-budget-ms', type=float, default=d.eval_budget_ms,
                   help='wall-clock budget per plan in the final evaluation (ms)')
    g.add_argument('--eval-planner', default='', metavar='K=V,...',
                   help='overrides of the deployment planner for the evaluation, e.g. horizon=8,num_samples=100')
    g.add_argument('--distill-rounds', type=int, default=d.distill_rounds, help='DAgger rounds (0: no policy)')
    g.add_argument('--distill-episodes', type=int, default=d.distill_episodes_per_round,
                   help='reaching episodes per DAgger round')
    g.add_argument('--distill-label-every', type=int, default=d.distill_label_every,
                   help='rounds >= 1: the expert labels every k-th visited state')
    g.add_argument('--distill-eval-goals', type=int, default=d.distill_eval_goals,
                   help='test benchmark goals for the distilled policy')
    g.add_argument('--distill-val-goals', type=int, default=d.distill_val_goals,
                   help='validation goals per DAgger round (the best round is kept)')
    g.add_argument('--distill-output', choices=('passive', 'direct'), default=d.distill_output,
                   help='policy head (mbrl-ros distill --output)')
    g.add_argument('--distill-expert', default='', metavar='K=V,...',
                   help=f'planner overrides for the distillation expert on top of {d.distill_expert}, '
                        'e.g. horizon=12')
    g.add_argument('--distill-expert-cost', default='', metavar='K=V,...',
                   help=f'cost weights of the distillation expert on top of {d.distill_expert_cost}')
    p.add_argument('--no-progress', action='store_true', help='no progress output')


def run(args) -> int:
    from mbrl_ros.core.learning.pets import LearnConfig, learn
    try:
        cfg = LearnConfig(robot=args.robot, seed=args.seed, init_transitions=args.init, amplitude=args.amplitude,
                          episode_len=args.init_episode_len,
                          iterations=args.iterations, episodes_per_iteration=args.episodes,
                          episode_s=args.episode_s, max_env_steps=args.max_env_steps,
                          ensemble_size=args.ensemble_size, hidden_sizes=_ints(args.hidden, '--hidden'),
                          affine_inputs=args.affine_inputs, raw_angles=not args.no_raw_angles,
                          invariant_joints=_ints(args.invariant_joints, '--invariant-joints')
                          if args.invariant_joints else [],
                          epochs=args.epochs, patience=args.patience, nll_beta=args.nll_beta,
                          weight_decay=args.weight_decay, calibrate_on=args.calibrate_on,
                          max_train_time_s=args.max_train_time,
                          threads=args.threads,
                          planner={'planner': args.planner, 'horizon': args.horizon, 'num_samples': args.samples,
                                   'num_iterations': args.plan_iterations, 'num_elites': args.elites,
                                   'time_budget_ms': args.budget_ms},
                          weights={**LearnConfig().weights, **number_pairs(args.weights)},
                          eval_goals=args.eval_goals, eval_budget_ms=args.eval_budget_ms,
                          eval_planner=_settings(args.eval_planner),
                          distill_rounds=args.distill_rounds, distill_episodes_per_round=args.distill_episodes,
                          distill_label_every=args.distill_label_every, distill_output=args.distill_output,
                          distill_eval_goals=args.distill_eval_goals, distill_val_goals=args.distill_val_goals,
                          distill_expert={**LearnConfig().distill_expert, **_settings(args.distill_expert)},
                          distill_expert_cost={**LearnConfig().distill_expert_cost,
                                               **number_pairs(args.distill_expert_cost, '--distill-expert-cost')})
        from mbrl_ros.core.robot import RobotModel
        RobotModel.load(cfg.robot)  # an unusable description: its message (with the fix), not a traceback
        errs = cfg.errors()
        if errs:
            raise ValueError('; '.join(errs))
    except ValueError as e:
        print(f'mbrl-ros learn: {e}', file=sys.stderr)
        return 2
    argv = sys.argv[sys.argv.index('learn'):] if 'learn' in sys.argv else ['learn', '<called from python>']
    command = 'mbrl-ros ' + ' '.join(shlex.quote(a) for a in argv)
    report = learn(cfg, args.out, work_dir=args.work_dir, command=command, progress=not args.no_progress)
    print(f'wrote bundle {args.out}: {report["environment_steps"]["training_data_total"]} environment steps of '
          f'training data, training {report["training_wall_time_s"]} s, total {report["wall_time_s"]} s')
    print(f'{"iter":>4}{"random":>8}{"on-pol":>8}{"train s":>9}{"nrmse":>8}{"success":>9}{"dist cm":>9}'
          f'{"plan p50/p99 ms":>17}')
    for s in report['iterations']:
        succ = '-' if s['success_rate'] is None else f'{s["success_rate"]:.0%}'
        dist = '-' if s['final_distance_median_m'] is None else f'{100 * s["final_distance_median_m"]:.1f}'
        pt = '-' if s['plan_ms_p50'] is None else f'{s["plan_ms_p50"]:.1f}/{s["plan_ms_p99"]:.1f}'
        print(f'{s["iteration"]:>4}{s["data_random"]:>8}{s["data_on_policy"]:>8}{s["train_wall_s"]:>9.1f}'
              f'{s["one_step_nrmse"]:>8.3f}{succ:>9}{dist:>9}{pt:>17}')
    cl = report.get('closed_loop')
    if cl:
        print(f'closed loop: {cl["goals"]} goals, success {cl["success_rate"]:.0%}, plan p50/p99 '
              f'{cl["plan_ms"]["p50"]:.1f}/{cl["plan_ms"]["p99"]:.1f} ms')
    return 0
