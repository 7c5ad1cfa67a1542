"""Which model bundle a node runs, shared by world_model, mpc_controller and safety_filter.

- `resolve_model_dir(value, robot_name)`: a `model_dir` parameter value -> a directory
  ('' = the shipped bundle for the robot, a name under the package models/, or a path).
- `parse_active_model(text)`: the latched /mbrl/world_model/active_model message
  ("<abs path> <sha256 of ensemble.onnx>") -> (path, sha256).
- `BundleFollower`: what a consumer of active_model does with each message: load the bundle
  it names, validate it against the robot (every check of `load_bundle`), make sure the
  ensemble on disk is the one announced (sha256), and either hand back the new bundle or say
  why it was refused (the caller keeps its old model).
- `BackgroundBundleFollower`: the same on a worker thread, so that a node's (single-threaded)
  executor never stalls for the 0.1-1 s a bundle takes to validate; the newest announcement wins.

ROS-free (plain strings in, bundles out), so it is unit-testable without DDS.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

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


class BackgroundBundleFollower(BundleFollower):
    """`submit(text)` returns at once; a worker thread loads and then calls
    `on_loaded(bundle)` or `on_refused(text, reason)` (from the worker thread). Announcements
    arriving during a load are coalesced: only the newest is loaded next."""

    def __init__(self, robot, on_loaded: Callable, on_refused: Callable, intra_op_threads: int = 1):
        super().__init__(robot, intra_op_threads)
        self._on_loaded, self._on_refused = on_loaded, on_refused
        self._lock = threading.Lock()
        self._pending: Optional[str] = None
        self._worker: Optional[threading.Thread] = None

    def submit(self, text) -> None:
        with self._lock:
            self._pending = text
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name='bundle_loader', daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                text, self._pending = self._pending, None
                if text is None:
                    self._worker = None
                    return
            try:
                bundle, why = self.offer(text)
                if why:
                    self._on_refused(text, why)
                elif bundle is not None:
                    self._on_loaded(bundle)
            except Exception as exc:  # a failing callback must not kill the loader for good
                self._on_refused(str(text), f'internal error while loading: {exc!r}')

    def idle(self) -> bool:
        with self._lock:
            return self._worker is None
