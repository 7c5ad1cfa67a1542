"""Model bundle (`models/<name>/`): loading and validation. No torch; yaml.safe_load only.

A bundle is refused with `BundleError(check, message)`; `check` names what failed:
model_roots, missing_file, file_size, yaml, schema, robot, joint_names, dims, sha256, onnx_load,
test_inference. Checks run cheapest first, and the ONNX bytes are hashed before they are parsed.
With `roots`, the bundle directory and every file read from it must resolve (symlinks and '..'
followed) inside one of those directories (check model_roots).
"""
from __future__ import annotations

import hashlib
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from .ensemble import EnsembleRuntime, make_session, means_agree

SCHEMA_VERSION = 1
BUNDLE_FILE = 'bundle.yaml'
ENSEMBLE_FILE = 'ensemble.onnx'
PARTITIONED_FILE = 'ensemble_partitioned.onnx'
POLICY_FILE = 'policy.onnx'
CHECKS = ('model_roots', 'missing_file', 'file_size', 'yaml', 'schema', 'robot', 'joint_names', 'dims',
          'sha256', 'onnx_load', 'test_inference')


# Bigger files are refused before they are read or hashed: a model swap is validated inside the
# world_model's set-parameters call, and hashing or parsing gigabytes would stall it.
MAX_YAML_BYTES = 1 << 20
MAX_ONNX_BYTES = 256 << 20
MAX_YAML_NODES = 100_000   # a real bundle.yaml has a few hundred
MAX_YAML_FLOW_OPENERS = 2000

# Values quoted in refusal messages are cut short: a YAML alias bomb expands exponentially in repr().
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 12, 4


def _short(value) -> str:
    return _REPR.repr(value)


class BundleError(Exception):
    def __init__(self, check: str, message: str):
        assert check in CHECKS, check
        self.check = check
        super().__init__(f'model bundle rejected [{check}]: {message}')


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


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


# key -> required type(s); nested mappings checked in _check_schema.
_REQUIRED = {
    'schema_version': int, 'robot': dict, 'joint_names': list, 'state': dict, 'action': dict,
    'dt': (int, float), 'ensemble': dict, 'files': dict,
}


def _type_name(t):
    return ' or '.join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _require(mapping, key, typ, where):
    if key not in mapping:
        raise BundleError('schema', f'{where}: missing required key {key!r}')
    v = mapping[key]
    if isinstance(v, bool) or not isinstance(v, typ):
        raise BundleError('schema', f'{where}.{key} must be {_type_name(typ)}, got {type(v).__name__} {_short(v)}')
    return v


def _check_schema(meta: dict) -> None:
    version = meta.get('schema_version')
    if version != SCHEMA_VERSION:
        raise BundleError('schema', f'schema_version {_short(version)} is not supported (this code reads '
                          f'{SCHEMA_VERSION})')
    for k, t in _REQUIRED.items():
        _require(meta, k, t, BUNDLE_FILE)
    _require(meta['robot'], 'name', str, 'robot')
    _require(meta['robot'], 'description_hash', str, 'robot')
    if not all(isinstance(j, str) for j in meta['joint_names']) or not meta['joint_names']:
        raise BundleError('schema', 'joint_names must be a non-empty list of strings')
    _require(meta['state'], 'dim', int, 'state')
    _require(meta['action'], 'dim', int, 'action')
    _require(meta['ensemble'], 'size', int, 'ensemble')
    if not 0 < meta['dt'] <= 10.0:  # also refuses NaN and inf (a stamp of t + inf cannot be sent)
        raise BundleError('schema', f'dt must be > 0 and <= 10 s, got {_short(meta["dt"])}')
    if ENSEMBLE_FILE not in meta['files']:
        raise BundleError('schema', f'files must list {ENSEMBLE_FILE}')
    for name, entry in meta['files'].items():
        if not isinstance(name, str):
            raise BundleError('schema', f'files keys must be file names, got {type(name).__name__} {_short(name)}')
        if not isinstance(entry, dict):
            raise BundleError('schema', f'files.{name} must be a mapping with sha256')
        sha = _require(entry, 'sha256', str, f'files.{name}')
        if len(sha) != 64 or any(c not in '0123456789abcdef' for c in sha):
            raise BundleError('schema', f'files.{name}.sha256 is not a sha256 hex digest: {_short(sha)}')


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


def resolved_roots(roots) -> list[Path]:
    """Root directories as absolute real paths (~ expanded; symlinks and '..' resolved)."""
    return [Path(r).expanduser().resolve() for r in roots if str(r).strip()]


def check_within_roots(path, roots, what: str = 'model_dir') -> Path:
    """`path` resolved; BundleError('model_roots') unless it lies inside one of `roots`."""
    real = Path(path).expanduser().resolve()
    allowed = resolved_roots(roots)
    if not any(real == r or real.is_relative_to(r) for r in allowed):
        shown = ', '.join(str(r) for r in allowed) or 'none configured'
        via = '' if real == Path(path).expanduser().absolute() else f' (resolves to {real})'
        raise BundleError('model_roots', f'{what} {path}{via} is outside every model root ({shown}); '
                          'bundles are only loaded from the configured model_roots')
    return real


def _expanded_nodes(root) -> float:
    """How many nodes the YAML graph has once its aliases are expanded (counted, not expanded:
    each shared node once, so a billion-laughs document costs microseconds)."""
    memo: dict = {}

    def size(node, depth=0) -> float:
        if node is None:
            return 0
        key = id(node)
        if key in memo:
            return memo[key]
        if depth > 200:
            raise RecursionError('YAML nested more than 200 levels deep')
        memo[key] = 1  # (a cycle counts once)
        n = 1.0
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c, depth + 1) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        memo[key] = n
        return n
    return size(root)


# libyaml's safe loader when PyYAML was built with it: the same SafeConstructor (no Python objects
# from tags), 15x less time holding the GIL than the pure-Python one (0.5 vs 7.6 ms for a bundle.yaml).
# The followers validate on a worker thread next to a control loop; pure-Python parsing there
# starved the loop (docs/reliability.md, bad bundles).
_SAFE_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


def _safe_load_bounded(text: str, where: Path):
    """yaml.safe_load(text), composed once: the node graph is sized (aliases counted, not expanded)
    before anything is constructed from it."""
    loader = _SAFE_LOADER(text)
    try:
        root = loader.get_single_node()
        nodes = _expanded_nodes(root)
        if nodes > MAX_YAML_NODES:
            raise BundleError('yaml', f'{where} expands to {nodes:.3g} YAML nodes through its '
                              f'aliases (more than {MAX_YAML_NODES}): an alias bomb, not a bundle description')
        return loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def _no_pace() -> None:
    pass


def _check_size(path: Path, limit: int) -> None:
    size = path.stat().st_size
    if size > limit:
        raise BundleError('file_size', f'{path} is {size / 2**20:.1f} MiB, more than the {limit / 2**20:g} MiB '
                          'a bundle file may have')


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
    _check_size(path / BUNDLE_FILE, MAX_YAML_BYTES)
    _check_size(path / ENSEMBLE_FILE, MAX_ONNX_BYTES)
    pace()
    try:
        text = (path / BUNDLE_FILE).read_text()
        # PyYAML's scanner is quadratic in flow nesting depth (20000 '[' took 20 s): bound the
        # openers first; a bundle.yaml has a few dozen.
        openers = text.count('[') + text.count('{')
        if openers > MAX_YAML_FLOW_OPENERS:
            raise BundleError('yaml', f'{path / BUNDLE_FILE} has {openers} flow collections (more than '
                              f'{MAX_YAML_FLOW_OPENERS}): not a bundle description')
        meta = _safe_load_bounded(text, path / BUNDLE_FILE)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError('yaml', f'{path / BUNDLE_FILE} is not valid YAML: {str(e)[:300] or type(e).__name__}') from e
    if not isinstance(meta, dict):
        raise BundleError('yaml', f'{path / BUNDLE_FILE} must hold a mapping, got {type(meta).__name__}')
    _check_schema(meta)
    for name in meta['files']:
        if Path(name).name != name:
            raise BundleError('schema', f'files entry {name!r} must be a plain file name in the bundle')
        if roots is not None:
            check_within_roots(path / name, roots, what='bundle file')
        if not (path / name).is_file():
            raise BundleError('missing_file', f'{path / name} is listed in {BUNDLE_FILE} but does not exist')
        _check_size(path / name, MAX_ONNX_BYTES)
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
