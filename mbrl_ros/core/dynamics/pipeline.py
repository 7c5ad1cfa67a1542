"""Data -> trained ensemble -> exported, validated, evaluated bundle (what `mbrl-ros train` runs)."""
from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mbrl_ros.core.bundle import ENSEMBLE_FILE, POLICY_FILE, SCHEMA_VERSION, load_bundle, write_bundle_meta

from .ensemble import EnsembleConfig
from .export import export_ensemble
from .plots import plot_training_curve
from .train import TrainConfig, train_ensemble

CURVE_FILE = 'training_curve.png'


def load_dataset(spec, robot, dt: float = 0.02):
    """A TransitionDataset from an .npz file, or a rosbag2 directory / .mcap file."""
    from mbrl_ros.core.data.dataset import TransitionDataset
    p = Path(spec).expanduser()
    if p.suffix == '.npz' or (not p.exists() and p.with_suffix('.npz').is_file()):
        return TransitionDataset.load(p)
    if p.is_dir() or p.suffix == '.mcap':
        try:
            from mbrl_ros.core.data import read_bag
        except ImportError as e:
            raise RuntimeError(f'cannot read {p}: rosbag2 reading (mbrl_ros.core.data.read_bag) is not '
                               'available in this version') from e
        return read_bag(p, robot, dt)
    raise FileNotFoundError(f'{p}: expected a .npz dataset, a rosbag2 directory or an .mcap file')


def check_dataset(ds, robot) -> None:
    if list(ds.joint_names) != list(robot.joint_names):
        raise ValueError(f'dataset joints {list(ds.joint_names)} != robot {robot.name!r} joints '
                         f'{list(robot.joint_names)}')
    if ds.robot not in (robot.name, robot.mjcf_path):
        raise ValueError(f'dataset was recorded on robot {ds.robot!r}, training for {robot.name!r}')


def _limits(robot) -> dict:
    f = lambda a: [float(v) for v in np.asarray(a, dtype=np.float64)]  # noqa: E731
    return {'q_min': f(robot.q_min), 'q_max': f(robot.q_max), 'qd_max': f(robot.qd_max),
            'effort_max': f(robot.effort_max)}


def bundle_meta(robot, model_cfg: EnsembleConfig, train_cfg: TrainConfig, dt: float, files: dict,
                data_summary: dict, training: dict, command: str, seed: int) -> dict:
    joints = list(robot.joint_names)
    return {
        'schema_version': SCHEMA_VERSION,
        'robot': {'name': robot.name, 'description_hash': robot.description_hash},
        'joint_names': joints,
        'state': {'dim': 2 * len(joints), 'layout': [f'q/{j}' for j in joints] + [f'qd/{j}' for j in joints],
                  'units': 'rad, rad/s'},
        'action': {'dim': len(joints), 'interface': 'effort', 'layout': [f'effort/{j}' for j in joints],
                   'units': 'Nm on top of gravity compensation'},
        'limits': _limits(robot),
        'dt': float(dt),
        'ensemble': {
            'file': ENSEMBLE_FILE, 'size': model_cfg.ensemble_size,
            'predicts': 'next-state delta s\' - s: mean and log-variance per member',
            'inputs': {'state': ['batch', 2 * len(joints)], 'action': ['batch', len(joints)]},
            'outputs': {'mean': [model_cfg.ensemble_size, 'batch', 2 * len(joints)],
                        'logvar': [model_cfg.ensemble_size, 'batch', 2 * len(joints)]},
            'architecture': {'hidden_sizes': list(model_cfg.hidden_sizes), 'activation': model_cfg.activation,
                             'control_affine': model_cfg.control_affine,
                             'affine_inputs': model_cfg.affine_inputs,
                             'raw_angles': model_cfg.raw_angles,
                             'invariant_joints': list(model_cfg.invariant_joints),
                             'angle_features': model_cfg.angle_features,
                             'parameters': _num_params(model_cfg),
                             'normalisation': 'inputs and delta standardised inside the graph',
                             'logvar_bounds': 'learned soft bounds (PETS)'},
        },
        'training': {'data': data_summary, 'config': train_cfg.to_dict(), **training},
        'evaluation': {},
        'command': command,
        'seed': int(seed),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'files': {name: {'sha256': v['sha256']} for name, v in files.items()},
    }


def _num_params(cfg: EnsembleConfig) -> int:
    S = cfg.state_dim
    sizes = [cfg.input_dim] + list(cfg.hidden_sizes) + [2 * S + S * cfg.affine_dim]
    return cfg.ensemble_size * (sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:])) + 2 * S)


def _data_summary(ds, source: str) -> dict:
    return {'transitions': int(len(ds)), 'episodes': int(ds.num_episodes), 'source': str(source),
            'provenance': {str(k): str(v) for k, v in (ds.meta or {}).items()}}


def train_bundle(dataset, robot, out_dir, model_cfg: EnsembleConfig, train_cfg: TrainConfig,
                 holdout_frac: float = 0.1, source: str = '', command: str = '',
                 horizon: int = 15, progress: bool = True, partitioned: bool = True,
                 log=print, calibration_episodes=None, calibration_data: str = '') -> dict:
    """Train, export and evaluate; the bundle appears at out_dir only once it validates.
    `calibration_episodes`: episode ids of `dataset` whose holdout part the variance is calibrated on
    (`calibration_data` says what they are); default: the whole holdout."""
    from mbrl_ros.core.runtime.evaluate import evaluate

    check_dataset(dataset, robot)
    train, holdout = dataset.split_by_episode(holdout_frac, seed=train_cfg.seed)
    log(f'training on {len(train)} transitions ({train.num_episodes} episodes), '
        f'holdout {len(holdout)} ({holdout.num_episodes} episodes)')
    calibration, calib_note = None, 'the holdout'
    if calibration_episodes is not None:
        part = holdout.subset(np.isin(holdout.episode, np.asarray(calibration_episodes)))
        if len(part):
            calibration, calib_note = part, f'the holdout episodes of {calibration_data or "a part of the data"}'
        else:
            log(f'no holdout episode of {calibration_data or "the calibration part"}: calibrating on the whole holdout')
    res = train_ensemble(train, holdout, model_cfg, train_cfg, progress=progress, calibration=calibration)
    log(f'trained in {res.wall_time_s:.1f} s, {res.epochs_run} epochs (stopped: {res.stopped}), '
        f'best epoch per member {res.best_epoch}')

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and swap in at the end: a failed run never leaves half a bundle.
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', dir=out_dir.parent))
    try:
        files = export_ensemble(res.model, tmp, partitioned=partitioned)
        plot_training_curve(res.history, tmp / CURVE_FILE, title=f'{robot.name}: {out_dir.name}')
        training = {'wall_time_s': round(res.wall_time_s, 1), 'epochs_run': res.epochs_run,
                    'stopped': res.stopped, 'best_epoch_per_member': res.best_epoch,
                    'parameters': res.model.num_parameters(),
                    'train_transitions': int(len(train)), 'holdout_transitions': int(len(holdout)),
                    'calibrated_on': {'data': calib_note,
                                      'transitions': int(len(holdout if calibration is None else calibration))},
                    'onnx_parity_max_error': max(v['parity_max_error'] for v in files.values())}
        meta = bundle_meta(robot, model_cfg, train_cfg, dataset.dt, files, _data_summary(dataset, source),
                           training, command, train_cfg.seed)
        write_bundle_meta(tmp, meta)
        bundle = load_bundle(tmp, robot)
        metrics = evaluate(bundle.ensemble, holdout, robot, horizon=horizon)
        metrics['data'] = 'holdout episodes of the training data'
        meta['evaluation'] = _rounded(metrics)
        write_bundle_meta(tmp, meta)
        load_bundle(tmp, robot)
        # Keep unrelated files (e.g. policy.onnx is another tool's) out of the way: replace ours only.
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            shutil.move(str(f), str(out_dir / f.name))
        old_policy = out_dir / POLICY_FILE
        if old_policy.exists():
            # A policy distilled from the previous model no longer matches; never ship it unlisted.
            old_policy.rename(out_dir / (POLICY_FILE + '.stale'))
            log(f'note: {old_policy} was distilled from the previous model; moved to policy.onnx.stale')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {'meta': meta, 'metrics': metrics, 'result': res}


def _rounded(d):
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_rounded(v) for v in d]
    if isinstance(d, float):
        return float(f'{d:.6g}')
    return d
