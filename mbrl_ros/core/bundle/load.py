"""Loading a bundle: every check, cheapest first, then the ensemble's onnxruntime sessions.

A bundle is refused with `BundleError(check, message)`; `check` names what failed:
model_roots, missing_file, file_size, yaml, schema, robot, joint_names, dims, sha256, onnx_load,
test_inference. The ONNX bytes are hashed before they are parsed. With `roots`, the bundle
directory and every file read from it must resolve (symlinks and '..' followed) inside one of
those directories (check model_roots).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from mbrl_ros.core.runtime.ensemble import EnsembleRuntime, make_session, means_agree

from .format import (BUNDLE_FILE, ENSEMBLE_FILE, MAX_ONNX_BYTES, MAX_YAML_BYTES, PARTITIONED_FILE, POLICY_FILE,
                     BundleError, _short, check_schema, check_size, check_within_roots, sha256_file)
from .read import parse_meta_file


@dataclass
class ModelBundle:
    path: Path
    meta: dict
    ensemble: EnsembleRuntime
    sha256: str                       # of ensemble.onnx
    policy_path: Path | None = None   # validated policy.onnx, when the bundle has one
    file_sha256: dict = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """What /mbrl/world_model/active_model carries: '<abs path> <sha256 of ensemble.onnx>'."""
        return f'{self.path} {self.sha256}'

    @property
    def dt(self) -> float:
        return float(self.meta['dt'])

    @property
    def joint_names(self) -> list[str]:
        return list(self.meta['joint_names'])

    @property
    def robot_name(self) -> str:
        return self.meta['robot']['name']

    @cached_property
    def world_model(self):
        """The one door to this bundle's predictions (core.world_model.WorldModel), made once."""
        from mbrl_ros.core.world_model import WorldModel
        return WorldModel(self.ensemble)


def _check_robot(meta: dict, robot) -> None:
    if robot is None:
        return
    got = meta['robot']
    if got['name'] != robot.name:
        raise BundleError('robot', f'bundle is for robot {got["name"]!r}, this robot is {robot.name!r}')
    if got['description_hash'] != robot.description_hash:
        raise BundleError('robot', f'bundle robot description hash {got["description_hash"][:12]}... does '
                          f'not match {robot.name!r} ({robot.description_hash[:12]}...): the robot model '
                          'changed since training')


def _check_joint_names(meta: dict, robot) -> None:
    names = meta['joint_names']
    if len(set(names)) != len(names):
        raise BundleError('joint_names', f'duplicate joint names in {_short(names)}')
    if robot is not None and list(names) != list(robot.joint_names):
        raise BundleError('joint_names', f'bundle joints {_short(names)} != robot joints {list(robot.joint_names)}')


def _check_dims_meta(meta: dict, robot) -> None:
    n = len(meta['joint_names'])
    S, A = meta['state']['dim'], meta['action']['dim']
    if S != 2 * n or A != n:
        raise BundleError('dims', f'state dim {S} / action dim {A} do not fit {n} joints '
                          f'(state [q, qd] = {2 * n}, action effort = {n})')
    if robot is not None and (S != 2 * robot.dof or A != robot.dof):
        raise BundleError('dims', f'state/action dims {S}/{A} vs robot {robot.name!r} with {robot.dof} joints')
    if meta['ensemble']['size'] < 1:
        raise BundleError('dims', f'ensemble.size must be >= 1, got {meta["ensemble"]["size"]}')


def _check_dims_graph(rt: EnsembleRuntime, meta: dict, name: str) -> None:
    S, A, E = meta['state']['dim'], meta['action']['dim'], meta['ensemble']['size']
    if (rt.state_dim, rt.action_dim, rt.ensemble_size) != (S, A, E):
        raise BundleError('dims', f'{name} graph has state {rt.state_dim}, action {rt.action_dim}, '
                          f'{rt.ensemble_size} members; bundle.yaml says {S}, {A}, {E}')
    for out in ('mean', 'logvar'):
        shape = rt.output_shapes[out]
        if len(shape) != 3 or shape[-1] != S:
            raise BundleError('dims', f'{name} output {out} has shape {shape}, expected (E, batch, {S})')


def _test_batch(meta: dict, robot, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Plausible states/actions: within the recorded limits when there are any."""
    rng = np.random.default_rng(0)
    S, A = meta['state']['dim'], meta['action']['dim']
    lim = meta.get('limits') or {}
    try:
        lo = np.concatenate([lim['q_min'], -np.asarray(lim['qd_max'])])
        hi = np.concatenate([lim['q_max'], lim['qd_max']])
        emax = np.asarray(lim['effort_max'], dtype=np.float64)
        lo, hi = np.clip(lo, -10, 10), np.clip(hi, -10, 10)
        states = rng.uniform(lo, hi, size=(n, S))
        actions = rng.uniform(-emax, emax, size=(n, A))
    except (KeyError, TypeError, ValueError):
        states, actions = rng.uniform(-1, 1, size=(n, S)), rng.uniform(-1, 1, size=(n, A))
    return states.astype(np.float32), actions.astype(np.float32)


def _load_runtime(path: Path, partitioned: Path | None, threads: int) -> EnsembleRuntime:
    try:
        return EnsembleRuntime(path, intra_op_threads=threads, partitioned_path=partitioned, mean_only=False)
    except Exception as e:  # onnxruntime raises its own exception types for bad bytes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError('onnx_load', f'cannot load {path.name}: {first[:300]}') from e


def _prepare_mean_only(rt: EnsembleRuntime, states, actions, means: list, pace) -> None:
    """The planner's mean-only graphs (runtime.ensemble): built from the checked files, and their means
    must be the full graphs' on the test batch."""
    try:
        rt.prepare_mean_only(pace)
    except ImportError:   # no `onnx` package: the planner takes the means from the full graphs
        rt.mean_session = rt.partitioned_mean = None
        return
    except Exception as e:
        raise BundleError('onnx_load', f'cannot cut the graphs to their mean output: {str(e)[:300]}') from e
    got = [rt.predict_mean(states, actions)]
    if rt.partitioned is not None:
        E = rt.ensemble_size
        got.append(rt.predict_partitioned_mean(np.repeat(states[None], E, 0), np.repeat(actions[None], E, 0)))
    for g, m in zip(got, means):
        if not means_agree(g, m, rt.delta_std):
            raise BundleError('test_inference', 'the mean-only graph does not give the full graph\'s mean on the '
                              'test batch (a file changed while it was loaded?)')


def _check_policy(path: Path, meta: dict) -> None:
    try:
        # one intra-op thread: only the graph's header is needed here, not a thread pool per check
        sess = make_session(path, intra_op_threads=1)
    except Exception as e:
        raise BundleError('onnx_load', f'cannot load {POLICY_FILE}: {str(e).strip()[:300]}') from e
    ins = {i.name: i.shape for i in sess.get_inputs()}
    if 'state' in ins and ins['state'] and ins['state'][-1] != meta['state']['dim']:
        raise BundleError('dims', f'{POLICY_FILE} input state has shape {ins["state"]}, expected '
                          f'(batch, {meta["state"]["dim"]})')
    outs = sess.get_outputs()
    if outs and outs[0].shape and outs[0].shape[-1] != meta['action']['dim']:
        raise BundleError('dims', f'{POLICY_FILE} output {outs[0].name} has shape {outs[0].shape}, '
                          f'expected (batch, {meta["action"]["dim"]})')


def _no_pace() -> None:
    pass


def load_bundle(model_dir, robot=None, intra_op_threads: int = 1, roots=None,
                pace: Callable[[], None] | None = None) -> ModelBundle:
    """Validate and load a bundle directory. `robot`: a RobotModel to check it against (optional).
    `roots`: directories the bundle (and every file read from it) must resolve into (optional).
    `pace`: called before each step that holds the GIL for milliseconds (YAML parse, each hash,
    each onnxruntime session, the test inference); a node validating next to its control loop
    passes one that waits for the loop to finish its cycle, so the step runs in the loop's slack."""
    pace = pace or _no_pace
    if roots is not None:
        check_within_roots(model_dir, roots)
    path = Path(model_dir).expanduser().resolve()
    if not path.is_dir():
        raise BundleError('missing_file', f'{path} is not a directory')
    for name in (BUNDLE_FILE, ENSEMBLE_FILE):
        if roots is not None:  # a file symlinked out of the root is refused like the directory
            check_within_roots(path / name, roots, what='bundle file')
        if not (path / name).is_file():
            raise BundleError('missing_file', f'{path / name} does not exist')
    check_size(path / BUNDLE_FILE, MAX_YAML_BYTES)
    check_size(path / ENSEMBLE_FILE, MAX_ONNX_BYTES)
    pace()
    meta = parse_meta_file(path / BUNDLE_FILE)
    check_schema(meta)
    for name in meta['files']:
        if Path(name).name != name:
            raise BundleError('schema', f'files entry {name!r} must be a plain file name in the bundle')
        if roots is not None:
            check_within_roots(path / name, roots, what='bundle file')
        if not (path / name).is_file():
            raise BundleError('missing_file', f'{path / name} is listed in {BUNDLE_FILE} but does not exist')
        check_size(path / name, MAX_ONNX_BYTES)
    if (path / POLICY_FILE).is_file() and POLICY_FILE not in meta['files']:
        raise BundleError('sha256', f'{POLICY_FILE} is present but has no sha256 in {BUNDLE_FILE}')
    _check_robot(meta, robot)
    _check_joint_names(meta, robot)
    _check_dims_meta(meta, robot)
    digests = {}
    for name, entry in meta['files'].items():
        pace()
        digests[name] = sha256_file(path / name)
        if digests[name] != entry['sha256']:
            raise BundleError('sha256', f'{name} sha256 {digests[name][:16]}... != {entry["sha256"][:16]}... '
                              f'recorded in {BUNDLE_FILE} (file changed or corrupted)')
    partitioned = path / PARTITIONED_FILE if PARTITIONED_FILE in meta['files'] else None
    pace()
    rt = _load_runtime(path / ENSEMBLE_FILE, partitioned, intra_op_threads)
    _check_dims_graph(rt, meta, ENSEMBLE_FILE)
    if rt.partitioned is not None:
        shapes = {i.name: i.shape for i in rt.partitioned.get_inputs()}
        want = {'state': meta['state']['dim'], 'action': meta['action']['dim']}
        if set(shapes) != set(want) or any(len(shapes[k]) != 3 or shapes[k][0] != rt.ensemble_size
                                           or shapes[k][-1] != v for k, v in want.items()):
            raise BundleError('dims', f'{PARTITIONED_FILE} inputs {shapes} do not match (E={rt.ensemble_size}, '
                              f'batch, dim) with state {want["state"]}, action {want["action"]}')
    policy = None
    if POLICY_FILE in meta['files']:
        policy = path / POLICY_FILE
        pace()
        _check_policy(policy, meta)
    states, actions = _test_batch(meta, robot)
    pace()
    try:
        mean, logvar = rt.predict(states, actions)
        checks = [(mean, logvar)]
        if rt.partitioned is not None:
            E = rt.ensemble_size
            checks.append(rt.predict_partitioned(np.repeat(states[None], E, 0), np.repeat(actions[None], E, 0)))
    except Exception as e:
        raise BundleError('test_inference', f'inference on a test batch failed: {str(e)[:300]}') from e
    for m, lv in checks:
        if m.shape != (rt.ensemble_size, len(states), rt.state_dim) or m.shape != lv.shape:
            raise BundleError('dims', f'test inference returned shapes {m.shape}/{lv.shape}')
        if not (np.isfinite(m).all() and np.isfinite(lv).all()):
            raise BundleError('test_inference', 'non-finite outputs (NaN/inf) on a test batch of '
                              f'{len(states)} plausible states')
    _prepare_mean_only(rt, states, actions, [m for m, _ in checks], pace)
    return ModelBundle(path=path, meta=meta, ensemble=rt, sha256=digests[ENSEMBLE_FILE],
                       policy_path=policy, file_sha256=digests)
