"""`mbrl-ros train`: train the PETS ensemble on recorded or freshly collected data -> model bundle."""
from __future__ import annotations

import shlex
import sys

DEFAULT_HIDDEN = '200,200,200'


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.replace(' ', '').split(',') if v]
    except ValueError:
        raise ValueError(f'--hidden must be comma-separated integers, got {text!r}') from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f'--hidden needs at least one positive width, got {text!r}')
    return sizes


def _indices(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(' ', '').split(',') if v]
    except ValueError:
        raise ValueError(f'expected comma-separated joint indices, got {text!r}') from None


def add_arguments(p):
    from mbrl_ros.core.dynamics.heads import AFFINE_INPUTS
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--data', help='transitions: a .npz TransitionDataset, a rosbag2 directory or an .mcap file')
    src.add_argument('--collect', type=int, metavar='N', help='collect N transitions in simulation first')
    p.add_argument('--out', required=True, help='bundle directory to write (e.g. models/arm7)')
    p.add_argument('--robot', default='arm7', help='built-in robot name or MJCF path')
    p.add_argument('--dt', type=float, default=0.02, help='control period for bag data (s)')
    g = p.add_argument_group('collection (with --collect)')
    g.add_argument('--exploration', default='colored', choices=['colored', 'uniform'],
                   help='exploration noise: colored (temporally correlated) or uniform (white)')
    # 0.1: joint speeds stay mostly within qd_max (at 0.3 a third of the samples exceed it), which is
    # the regime the controller operates in.
    g.add_argument('--amplitude', type=float, default=0.1, help='exploration effort as a fraction of effort_max')
    g.add_argument('--episode-len', type=int, default=200, help='control periods per collected episode')
    g.add_argument('--save-data', help='also save the collected transitions to this .npz')
    g = p.add_argument_group('model')
    g.add_argument('--ensemble-size', type=int, default=5, help='ensemble members')
    g.add_argument('--hidden', default=DEFAULT_HIDDEN, help='hidden widths')
    g.add_argument('--activation', default='silu', choices=['silu', 'relu', 'tanh'], help='hidden activation')
    g.add_argument('--no-affine', action='store_true', help='plain MLP mean head (no control-affine term)')
    g.add_argument('--no-angle-features', action='store_true', help='no sin/cos(q) inputs')
    g.add_argument('--affine-inputs', default='action', choices=list(AFFINE_INPUTS),
                   help='what the control-affine head multiplies: the action, [action, joint velocity], '
                        'or rigid_body: [action, joint velocity, products of joint velocities]')
    g.add_argument('--no-raw-angles', action='store_true', help='joint angles enter only as sin/cos(q)')
    g.add_argument('--invariant-joints', default='', metavar='I,J',
                   help='joint indices whose angle the dynamics do not depend on (masked from the inputs), '
                   'e.g. 0 for a vertical base axis with gravity compensation')
    g = p.add_argument_group('training')
    g.add_argument('--epochs', type=int, default=150, help='maximum epochs (cosine lr decay over them)')
    g.add_argument('--batch-size', type=int, default=256, help='minibatch size')
    g.add_argument('--lr', type=float, default=3e-3, help='peak learning rate (AdamW)')
    g.add_argument('--weight-decay', type=float, default=1e-5, help='AdamW weight decay')
    g.add_argument('--patience', type=int, default=20,
                   help='early stop after this many epochs without any member improving on the holdout')
    g.add_argument('--nll-beta', type=float, default=0.5,
                   help='beta-NLL weighting (0: plain Gaussian NLL)')
    g.add_argument('--no-calibrate', action='store_true',
                   help='skip the per-dim variance scaling fitted on the holdout (95.4%% inside 2 sigma)')
    g.add_argument('--grad-clip', type=float, default=10.0, help='gradient-norm clip (0: off)')
    g.add_argument('--max-time', type=float, default=None, help='wall-clock cap on training (s)')
    g.add_argument('--holdout-frac', type=float, default=0.1, help='episodes held out for early stopping')
    g.add_argument('--seed', type=int, default=0, help='random seed (collection, initialisation, batches)')
    g.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s own choice)')
    p.add_argument('--horizon', type=int, default=15, help='open-loop evaluation horizon (steps)')
    p.add_argument('--no-progress', action='store_true', help='no progress output')


def run(args) -> int:
    from mbrl_ros.core.dynamics.ensemble import EnsembleConfig
    from mbrl_ros.core.dynamics.pipeline import load_dataset, train_bundle
    from mbrl_ros.core.dynamics.train import TrainConfig
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.core.runtime.evaluate import format_metrics

    try:
        hidden = _sizes(args.hidden)
        robot = RobotModel.load(args.robot)
        if args.collect is not None:
            from mbrl_ros.core.data.collect import collect_sim
            data = collect_sim(robot, args.collect, exploration=args.exploration, seed=args.seed,
                               episode_len=args.episode_len, amplitude=args.amplitude,
                               progress=not args.no_progress)
            source = (f'collect_sim(robot={robot.name}, n={args.collect}, exploration={args.exploration}, '
                      f'amplitude={args.amplitude}, episode_len={args.episode_len}, seed={args.seed})')
            if args.save_data:
                print(f'saved collected data to {data.save(args.save_data)}')
        else:
            data = load_dataset(args.data, robot, args.dt)
            source = str(args.data)
        model_cfg = EnsembleConfig(state_dim=2 * robot.dof, action_dim=robot.dof,
                                   ensemble_size=args.ensemble_size, hidden_sizes=hidden,
                                   activation=args.activation, control_affine=not args.no_affine,
                                   affine_inputs=args.affine_inputs, raw_angles=not args.no_raw_angles,
                                   invariant_joints=_indices(args.invariant_joints),
                                   angle_features=0 if args.no_angle_features else robot.dof)
        train_cfg = TrainConfig(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, patience=args.patience,
                                seed=args.seed, max_time_s=args.max_time, threads=args.threads,
                                grad_clip=args.grad_clip or None, nll_beta=args.nll_beta,
                                calibrate_coverage=None if args.no_calibrate else 0.954)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f'mbrl-ros train: {e}', file=sys.stderr)
        return 2
    # Recorded in bundle.yaml so a bundle says how to remake it.
    argv = sys.argv[sys.argv.index('train'):] if 'train' in sys.argv else ['train', '<called from python>']
    command = 'mbrl-ros ' + ' '.join(shlex.quote(a) for a in argv)
    out = train_bundle(data, robot, args.out, model_cfg, train_cfg, holdout_frac=args.holdout_frac,
                       source=source, command=command, horizon=args.horizon,
                       progress=not args.no_progress)
    print(f'wrote bundle {args.out} (training {out["result"].wall_time_s:.1f} s, '
          f'{out["result"].model.num_parameters()} parameters)')
    print(format_metrics(out['metrics']))
    return 0
