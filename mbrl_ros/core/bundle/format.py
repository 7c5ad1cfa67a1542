"""The bundle's layout, size limits, schema, hashes and model-roots rule. No torch, no onnxruntime."""
from __future__ import annotations

import hashlib
import reprlib
from pathlib import Path

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


def sha256_file(path) -> str:
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


# key -> required type(s); nested mappings checked in check_schema.
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


def check_schema(meta: dict) -> None:
    """BundleError('schema') unless `meta` has the required keys with the required types."""
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


def check_size(path: Path, limit: int) -> None:
    size = path.stat().st_size
    if size > limit:
        raise BundleError('file_size', f'{path} is {size / 2**20:.1f} MiB, more than the {limit / 2**20:g} MiB '
                          'a bundle file may have')


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
