"""Which model bundle a node runs, shared by world_model, mpc_controller, policy and safety_filter.

- `resolve_model_dir(value, robot_name)`: a `model_dir` parameter value -> a directory
  ('' = the shipped bundle for the robot, a name under the package models/, or a path).
- Model roots (docs/security.md): `default_model_roots()`, the one `model_roots_param()` spec
  (read-only; world_model and the three followers declare the same), `follower_params()` (the
  followers' `model_dir` + `model_roots`) and `configured_roots(roots, model_dir, robot_name)`:
  the roots a node enforces, i.e. `model_roots` plus the folder of the startup bundle.
- `parse_active_model(text)`: the latched /mbrl/world_model/active_model message
  ("<abs path> <sha256 of ensemble.onnx>") -> (path, sha256).
- `BundleFollower`: what a consumer of active_model does with each message: load the bundle
  it names, validate it against the robot (every check of `load_bundle`, including the model
  roots when the follower has them: whoever can publish on active_model must not be able to
  choose an arbitrary directory), make sure the
  ensemble on disk is the one announced (sha256), and either hand back the new bundle or say
  why it was refused (the caller keeps its old model).
- `BackgroundBundleFollower`: the same on a worker thread, so that a node's (single-threaded)
  executor never stalls for the 0.1-1 s a bundle takes to validate. active_model is latest-wins:
  validations start at least `min_interval_s` apart, only the newest announcement is validated,
  and one replaced before its validation started is counted as superseded (never loaded). With
  `pace` (the node's control loop: `ControlLoop.wait_between_cycles`), each GIL-heavy step of a
  validation runs between two control cycles (docs/reliability.md, bad bundles: a storm of bad
  announcements cost the MPC 93 of 491 periods through the GIL).

ROS-free (plain strings in, bundles out), so it is unit-testable without DDS; only the Param
specs import the ROS parameter helper, lazily.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Optional

# At import (node start), not in the loader thread: the bundle code imports onnx, whose extension
# holds the GIL for over a second, freezing the node's executor and control loop mid-run.
from mbrl_ros.core.bundle import BundleError, load_bundle

_HEX = set('0123456789abcdef')


def resolve_model_dir(value: str, robot_name: str) -> Path:
    from mbrl_ros.resources import default_model_dir, find_resource
    if not value:
        return default_model_dir(robot_name)
    try:
        return find_resource('models', value)
    except FileNotFoundError:
        return Path(value).expanduser()  # load_bundle then names it as missing_file


def default_model_roots() -> list:
    """The package models/ and ~/.mbrl_ros/models (only the latter without a package share)."""
    from mbrl_ros.resources import package_share
    try:
        return [str(package_share() / 'models'), '~/.mbrl_ros/models']
    except FileNotFoundError:
        return ['~/.mbrl_ros/models']


MODEL_ROOTS_HELP = (
    'directories a model bundle may lie in (after resolving symlinks and ..); default: the package '
    'models/ and ~/.mbrl_ros/models. The folder holding the startup bundle (model_dir) is always one '
    'too (the operator chose it). A bundle elsewhere is refused [model_roots]')


def model_roots_param():
    """The read-only `model_roots` Param: one spec for world_model and the followers."""
    from mbrl_ros.ros.parameters import Param
    return Param('model_roots', default_model_roots(), MODEL_ROOTS_HELP, dynamic=False, type_hint='string_array')


def follower_params() -> list:
    """The Params of a node that follows /mbrl/world_model/active_model: `model_dir` (the
    stack's startup bundle, whose folder is a root, as in world_model) and `model_roots`."""
    from mbrl_ros.ros.parameters import Param
    return [
        Param('model_dir', '', "the bundle the stack starts with: the same value as world_model's model_dir "
              "(the launch files pass it to every node; '' = the shipped bundle for the robot). Its folder "
              'counts as a model root, as in world_model. Not loaded from here: this node runs the bundle '
              'announced on /mbrl/world_model/active_model (swap models on world_model)', dynamic=False),
        model_roots_param(),
    ]


def configured_roots(roots, model_dir: str, robot_name: str) -> list:
    """`roots` plus the folder of the startup bundle `model_dir` (resolved): the roots a node enforces.
    The startup bundle comes from the same static configuration as the roots themselves, so it keeps
    launches with model_dir:=/some/where working and lets them swap to its siblings."""
    out = [str(r) for r in (roots or [])]
    try:
        start = resolve_model_dir(model_dir, robot_name).expanduser().resolve()
    except (FileNotFoundError, OSError):
        return out  # no package share and no model_dir: only the configured roots
    return out + [str(start.parent)]


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
    announced bundle is refused (then `current` is unchanged). `roots`: directories the bundle
    must resolve into (None: not confined, e.g. offline tools; the nodes always pass theirs).
    """

    def __init__(self, robot, intra_op_threads: int = 1, roots=None, pace: Optional[Callable[[], None]] = None):
        self.robot = robot
        self.intra_op_threads = int(intra_op_threads)
        self.roots = None if roots is None else [str(r) for r in roots]
        self.pace = pace   # load_bundle's pace hook (None: no waiting)
        self.current = None
        self.loads = 0
        self.refusals = 0
        self.last_refusal = 'none'

    @property
    def identity(self) -> str:
        return self.current.identity if self.current is not None else 'none'

    def offer(self, text) -> tuple[Optional[object], Optional[str]]:
        try:
            path, sha = parse_active_model(text)
        except ValueError as exc:
            return None, self._refuse(str(exc))
        if self.current is not None and self.current.identity == f'{path} {sha}':
            return None, None
        try:
            bundle = load_bundle(path, self.robot, intra_op_threads=self.intra_op_threads, roots=self.roots,
                                 pace=self.pace)
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
    `on_loaded(bundle)` or `on_refused(text, reason)` (from the worker thread).

    Latest wins: an announcement replaced by a newer one before its validation started is
    superseded (`superseded` counts them, `on_superseded(text)` is called from the submitting
    thread) and never loaded; the newest one is always validated. Validations start at least
    `min_interval_s` apart, so a flood of announcements costs a bounded share of the node's CPU
    (and delays a genuine swap by at most that interval). `pace`: see load_bundle."""

    MIN_INTERVAL_S = 0.5

    def __init__(self, robot, on_loaded: Callable, on_refused: Callable, intra_op_threads: int = 1,
                 roots=None, on_superseded: Optional[Callable] = None, min_interval_s: Optional[float] = None,
                 pace: Optional[Callable[[], None]] = None, clock: Callable[[], float] = time.monotonic):
        super().__init__(robot, intra_op_threads, roots, pace=pace)
        self._on_loaded, self._on_refused, self._on_superseded = on_loaded, on_refused, on_superseded
        self.min_interval_s = self.MIN_INTERVAL_S if min_interval_s is None else float(min_interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: Optional[str] = None
        self._worker: Optional[threading.Thread] = None
        self._last_start = -float('inf')
        self._closed = threading.Event()
        self.superseded = 0
        self.validations = 0   # announcements actually validated (offered to load_bundle or refused unparsed)

    def submit(self, text) -> None:
        with self._lock:
            dropped, self._pending = self._pending, text
            if dropped is not None:
                self.superseded += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name='bundle_loader', daemon=True)
                self._worker.start()
        if dropped is not None and self._on_superseded is not None:
            self._on_superseded(dropped)

    def _run(self) -> None:
        while True:
            # Wait out the interval before taking the newest: what arrives meanwhile replaces it.
            wait = self._last_start + self.min_interval_s - self._clock()
            if wait > 0 and self._closed.wait(wait):
                with self._lock:
                    self._worker = None
                return
            with self._lock:
                text, self._pending = self._pending, None
                if text is None:
                    self._worker = None
                    return
            self._last_start = self._clock()
            self.validations += 1
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

    def close(self) -> None:
        """Stop waiting out an interval (a validation in progress finishes; nothing new starts)."""
        self._closed.set()


def node_follower(node, robot, on_loaded: Callable, on_refused: Callable, roots,
                  loop: Callable[[], object]) -> BackgroundBundleFollower:
    """The follower of a node that runs a control loop (mpc_controller, policy, safety_filter):
    latest wins, superseded announcements logged (at most once a second), and each GIL-heavy
    validation step waits for the end of a control cycle (docs/reliability.md, bad bundles).
    `loop()` returns the node's ControlLoop; it is looked up when called, so the node may create
    the loop after the follower."""
    def superseded(text: str) -> None:
        node.get_logger().info(f'superseded before validation (latest wins, never loaded): {text[:200]!r}; '
                               f'{follower.superseded} so far', throttle_duration_sec=1.0)

    follower = BackgroundBundleFollower(robot, on_loaded, on_refused, roots=roots, on_superseded=superseded,
                                        pace=lambda: loop().wait_between_cycles())
    return follower
