"""Which model bundle a node runs, shared by world_model, mpc_controller and safety_filter.

- `resolve_model_dir(value, robot_name)`: a `model_dir` parameter value -> a directory
  ('' = the shipped bundle for the robot, a name under the package models/, or a path).
- `parse_active_model(text)`: the latched /mbrl/world_model/active_model message
  ("<abs path> <sha256 of ensemble.onnx>") -> (path, sha256).
- `BundleFollower`: what a consumer of active_model does with each message: load the bundle
  it names, validate it against the robot (every check of `load_bundle`), make sure the
  ensemble on disk is the one announced (sha256), and either hand back the new bundle or say
  why it was refused (the caller keeps its old model).

ROS-free (plain strings in, bundles out), so it is unit-testable without DDS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

_HEX = set('0123456789abcdef')


def resolve_model_dir(value: str, robot_name: str) -> Path:
    from mbrl_ros.resources import default_model_dir, find_resource
    if not value:
        return default_model_dir(robot_name)
    try:
        return find_resource('models', value)
    except FileNotFoundError:
        return Path(value).expanduser()  # load_bundle then names it as missing_file


def parse_active_model(text) -> tuple[Path, str]:
    """'<path> <sha256>' -> (path, sha256); ValueError saying what is wrong otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError('empty active_model message')
    # rsplit: the path may contain spaces, the hash never does.
    parts = text.strip().rsplit(None, 1)
    if len(parts) != 2:
        raise ValueError(f"active_model must be '<bundle path> <sha256>', got {text[:200]!r}")
    path, sha = parts
    if len(sha) != 64 or not set(sha) <= _HEX:
        raise ValueError(f'active_model sha256 {sha[:80]!r} is not 64 lowercase hex digits')
    if not Path(path).is_absolute():
        raise ValueError(f'active_model path {path[:200]!r} is not absolute')
    return Path(path), sha


class BundleFollower:
    """Loads the bundles announced on active_model for one robot; remembers the current one.

    `offer(text)` returns (bundle, None) for a new valid bundle (it becomes `current`),
    (None, None) when `text` names the bundle already in use, and (None, reason) when the
    announced bundle is refused (then `current` is unchanged).
    """

    def __init__(self, robot, intra_op_threads: int = 1):
        self.robot = robot
        self.intra_op_threads = int(intra_op_threads)
        self.current = None
        self.loads = 0
        self.refusals = 0
        self.last_refusal = 'none'

    @property
    def identity(self) -> str:
        return self.current.identity if self.current is not None else 'none'

    def offer(self, text) -> tuple[Optional[object], Optional[str]]:
        from mbrl_ros.core.runtime.bundle import BundleError, load_bundle
        try:
            path, sha = parse_active_model(text)
        except ValueError as exc:
            return None, self._refuse(str(exc))
        if self.current is not None and self.current.identity == f'{path} {sha}':
            return None, None
        try:
            bundle = load_bundle(path, self.robot, intra_op_threads=self.intra_op_threads)
        except BundleError as exc:
            return None, self._refuse(str(exc))
        except Exception as exc:  # anything unexpected refuses the bundle, never the node
            return None, self._refuse(f'model bundle rejected: {exc!r}')
        if bundle.sha256 != sha:
            return None, self._refuse(
                f'model bundle rejected [sha256]: {path}/ensemble.onnx has sha256 {bundle.sha256[:16]}..., '
                f'active_model announced {sha[:16]}... (changed on disk since it was announced)')
        self.current = bundle
        self.loads += 1
        return bundle, None

    def _refuse(self, reason: str) -> str:
        self.refusals += 1
        self.last_refusal = reason
        return reason
