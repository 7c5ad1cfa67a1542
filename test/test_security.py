"""Security checks of the robot-side code (issue 7, item 6).

(a) An `ast` scan of everything that runs on the robot (nodes, ros helpers, the bundle format, the ONNX
    runtime, the planner, the safety filter, the policy runtime, the sim/robot/estimation modules the nodes
    use): no pickle / marshal / shelve / dill / joblib, no torch (torch.load unpickles), no
    np.load(allow_pickle=True), no yaml.load / unsafe_load / full_load or unsafe loaders, no
    eval / exec / compile / __import__. The scanner is tested on planted snippets so it can fail.
(b) Bundle hashes: a bundle whose file changed after bundle.yaml recorded its sha256 is refused
    [sha256] (offline here; over DDS in test_world_model_node and test_bad_bundles).
(c) model_roots: a model_dir outside every root, or a symlink / '..' leading out of one, is
    refused [model_roots] by load_bundle, and by the world_model node over real DDS.
(d) The followers (mpc_controller, policy, safety_filter) enforce the same roots on the bundles
    announced on /mbrl/world_model/active_model: a valid bundle outside them, or a symlink out of
    one, is refused [model_roots] (log and diagnostics) and the old model keeps serving; a bundle
    inside a root is still followed.
"""
import ast
import shutil
import time
from pathlib import Path

import pytest

from mbrl_ros.core.bundle import BundleError, load_bundle
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.resources import default_model_dir

PKG = Path(__file__).resolve().parent.parent / 'mbrl_ros'
ROBOT_SIDE = ['nodes', 'ros', 'core/bundle', 'core/runtime', 'core/planning', 'core/safety.py',
              'core/policy/runtime.py', 'core/policy/__init__.py', 'core/commands.py', 'core/robot.py',
              'core/sim.py', 'core/estimation.py', 'core/world_model.py', 'core/workspace.py']
BANNED_MODULES = {'pickle', 'cPickle', '_pickle', 'marshal', 'shelve', 'dill', 'cloudpickle', 'joblib', 'torch'}
BANNED_CALLS = {'eval', 'exec', 'compile', '__import__'}
YAML_UNSAFE = {'load', 'unsafe_load', 'full_load', 'load_all', 'unsafe_load_all', 'full_load_all'}
YAML_UNSAFE_LOADERS = {'Loader', 'UnsafeLoader', 'FullLoader', 'CLoader', 'CUnsafeLoader', 'CFullLoader'}


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return '.'.join(reversed(parts))


def scan(source: str, name: str = '<src>') -> list[str]:
    """Findings in `source`: 'name:line: what'."""
    found = []
    tree = ast.parse(source, name)
    for node in ast.walk(tree):
        where = f'{name}:{getattr(node, "lineno", 0)}'
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split('.')[0] in BANNED_MODULES:
                    found.append(f'{where}: import {a.name}')
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or '').split('.')[0]
            if mod in BANNED_MODULES:
                found.append(f'{where}: from {node.module} import ...')
            if mod == 'yaml' and any(a.name in YAML_UNSAFE | YAML_UNSAFE_LOADERS for a in node.names):
                found.append(f'{where}: from yaml import {", ".join(a.name for a in node.names)}')
            if mod in ('numpy',) and any(a.name == 'load' for a in node.names):
                found.append(f'{where}: from numpy import load (check allow_pickle by hand)')
        elif isinstance(node, ast.Call):
            fn = _dotted(node.func)
            last = fn.split('.')[-1]
            if fn in BANNED_CALLS or fn in {f'builtins.{c}' for c in BANNED_CALLS}:
                found.append(f'{where}: {fn}()')
            if fn.startswith('yaml.') and last in YAML_UNSAFE:
                found.append(f'{where}: {fn}()')
            if fn in ('torch.load', 'pickle.load', 'pickle.loads'):
                found.append(f'{where}: {fn}()')
            if last == 'load' and fn.split('.')[0] in ('np', 'numpy'):
                for kw in node.keywords:
                    safe = isinstance(kw.value, ast.Constant) and kw.value.value is False
                    if kw.arg == 'allow_pickle' and not safe:
                        found.append(f'{where}: {fn}(allow_pickle=...)')
            if last in ('getattr',) and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                    and node.args[1].value in BANNED_CALLS:
                found.append(f'{where}: getattr(..., {node.args[1].value!r})')
        elif isinstance(node, ast.Attribute) and _dotted(node) in {f'yaml.{n}' for n in YAML_UNSAFE_LOADERS}:
            found.append(f'{where}: {_dotted(node)}')
    return found


def robot_side_files() -> list[Path]:
    files = []
    for rel in ROBOT_SIDE:
        p = PKG / rel
        files += sorted(p.rglob('*.py')) if p.is_dir() else [p]
    return files


def test_scanner_catches_planted_unsafe_code():
    planted = {
        'import pickle': 1, 'from marshal import loads': 1, 'import shelve, json': 1,
        'import torch\ntorch.load("m.pt")': 2, 'import numpy as np\nnp.load("a.npy", allow_pickle=True)': 1,
        'import yaml\nyaml.load(s, Loader=yaml.Loader)': 2, 'import yaml\nyaml.unsafe_load(s)': 1,
        'from yaml import load, FullLoader': 1, 'eval("1+1")': 1, 'exec(code)': 1, '__import__("os")': 1,
        'getattr(builtins, "eval")(s)': 1,
    }
    for src, n in planted.items():
        assert len(scan(src)) == n, (src, scan(src))
    for safe in ('import yaml\nyaml.safe_load(s)', 'import numpy as np\nnp.load("a.npy")',
                 'import numpy as np\nnp.load("a.npy", allow_pickle=False)', 'import onnxruntime',
                 'model.eval()', 'self.exec_plan()'):
        assert scan(safe) == [], (safe, scan(safe))


def test_robot_side_code_never_unpickles_or_evaluates():
    files = robot_side_files()
    assert len(files) > 20 and all(f.is_file() for f in files), files
    findings = [f for path in files for f in scan(path.read_text(), str(path.relative_to(PKG.parent)))]
    assert not findings, 'unsafe code on the robot side:\n' + '\n'.join(findings)


@pytest.fixture(scope='module')
def layout(tmp_path_factory):
    work = tmp_path_factory.mktemp('security')
    good = work / 'roots' / 'arm3'
    shutil.copytree(default_model_dir('arm3'), good, ignore=shutil.ignore_patterns('*.png'))
    outside = work / 'outside' / 'arm3'
    shutil.copytree(good, outside)
    return good, outside


def test_bundle_hashes_are_checked(layout, tmp_path):
    good, _ = layout
    d = tmp_path / 'tampered'
    shutil.copytree(good, d)
    data = bytearray((d / 'ensemble.onnx').read_bytes())
    data[len(data) // 2] ^= 0x01   # one bit: still a loadable graph, just not the one recorded
    (d / 'ensemble.onnx').write_bytes(bytes(data))
    with pytest.raises(BundleError) as ei:
        load_bundle(d, RobotModel.load('arm3'))
    assert ei.value.check == 'sha256' and '[sha256]' in str(ei.value)


def test_model_dir_confined_to_roots(layout, tmp_path):
    good, outside = layout
    robot = RobotModel.load('arm3')
    roots = [str(good.parent)]
    assert load_bundle(good, robot, roots=roots).path == good.resolve()
    link = good.parent / 'link_out'
    link.symlink_to(outside, target_is_directory=True)
    file_link = good.parent / 'file_link'
    shutil.copytree(good, file_link)
    (file_link / 'ensemble.onnx').unlink()
    (file_link / 'ensemble.onnx').symlink_to(outside / 'ensemble.onnx')
    for path in (outside, link, good.parent / 'nothing' / '..' / '..' / 'outside' / 'arm3', file_link):
        with pytest.raises(BundleError) as ei:
            load_bundle(path, robot, roots=roots)
        assert ei.value.check == 'model_roots', (path, str(ei.value))
        assert 'outside every model root' in str(ei.value)
    # Without roots (what load_bundle's other callers do) the same bundle loads: the check is the roots'.
    load_bundle(outside, robot)


@pytest.mark.ros
def test_world_model_refuses_model_dir_outside_its_roots(layout):
    from std_msgs.msg import String

    from mbrl_ros.ros.conversions import LATCHED
    from mbrl_ros.testing.node_process import NodeProcess
    from mbrl_ros.testing.ros_probe import RosProbe
    good, outside = layout
    with NodeProcess('world_model', 'robot:=arm3', f'model_dir:={good}') as node, RosProbe('security') as probe:
        active = probe.wait_for('/mbrl/world_model/active_model', String, timeout=60, qos=LATCHED)
        assert active is not None, node.log_text()
        # The default roots: the package models/, ~/.mbrl_ros/models and the startup bundle's folder.
        roots = probe.get_param('/world_model', 'model_roots')
        assert isinstance(roots, list) and any(r.endswith('models') for r in roots), roots
        ok, why = probe.set_param('/world_model', 'model_roots', ['/'])
        assert not ok and 'read-only' in why                  # no widening at runtime
        ok, why = probe.set_param('/world_model', 'model_dir', str(outside))
        assert not ok and '[model_roots]' in why, why
        ok, why = probe.set_param('/world_model', 'model_dir', str(default_model_dir('arm3')))
        assert ok, why                                        # the package models/ is a root
        ok, why = probe.set_param('/world_model', 'model_dir', str(good))
        assert ok, why                                        # and so is the startup bundle's folder
        time.sleep(0.5)
        node.alive()


def test_bundle_follower_enforces_roots(layout, tmp_path):
    from mbrl_ros.ros.model_source import BundleFollower, configured_roots
    good, outside = layout
    robot = RobotModel.load('arm3')
    roots = configured_roots([], str(good), 'arm3')     # only the startup bundle's folder
    assert roots == [str(good.resolve().parent)]
    f = BundleFollower(robot, roots=roots)
    ok = load_bundle(good, robot)
    assert f.offer(f'{good} {ok.sha256}')[0] is not None
    link = tmp_path / 'link'
    link.symlink_to(outside, target_is_directory=True)
    inner_link = good.parent / f'follower_link_{tmp_path.name}'
    inner_link.symlink_to(outside, target_is_directory=True)
    try:
        for path in (outside, inner_link, link):
            bundle, why = f.offer(f'{path} {ok.sha256}')     # a valid bundle, the right hash
            assert bundle is None and '[model_roots]' in why and 'outside every model root' in why, why
            assert f.current.path == good.resolve()
    finally:
        inner_link.unlink()
    # Without roots (offline tools) the same announcement is followed: the refusal is the roots'.
    assert BundleFollower(robot).offer(f'{outside} {ok.sha256}')[0] is not None


FOLLOWERS = {'mpc_controller': ('num_samples:=50', 'num_elites:=5', 'horizon:=5', 'time_budget_ms:=15.0'),
             'policy': (), 'safety_filter': ()}


@pytest.mark.ros
def test_followers_refuse_announced_bundles_outside_their_roots(tmp_path):
    """Each follower runs with the default model_roots plus its startup model_dir's folder (as the
    launch files start it). A probe plays world_model and announces bundles on active_model."""
    from contextlib import ExitStack

    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from mbrl_ros.ros.conversions import LATCHED, sec_to_stamp
    from mbrl_ros.testing.goals import goal_msg
    from mbrl_ros.ros.diagnostics import status_values
    from mbrl_ros.testing.node_process import Feeder, NodeProcess
    from mbrl_ros.testing.ros_probe import RosProbe

    robot = RobotModel.load('arm3')
    good = tmp_path / 'roots' / 'arm3'
    shutil.copytree(default_model_dir('arm3'), good, ignore=shutil.ignore_patterns('*.png'))
    sibling = shutil.copytree(good, tmp_path / 'roots' / 'arm3_b')          # inside the root: followed
    outside = shutil.copytree(good, tmp_path / 'outside' / 'arm3')          # a valid copy outside
    link = tmp_path / 'roots' / 'link_out'                                   # in the root, leads out
    link.symlink_to(outside, target_is_directory=True)
    sha = load_bundle(good, robot).sha256
    good_id = f'{good.resolve()} {sha}'

    with ExitStack() as stack:
        probe = stack.enter_context(RosProbe('follower_roots'))
        nodes = {n: stack.enter_context(NodeProcess(n, 'robot:=arm3', f'model_dir:={good}', *extra))
                 for n, extra in FOLLOWERS.items()}
        diag = probe.subscribe('/diagnostics', DiagnosticArray, 200)
        cmds = probe.subscribe('/mbrl/mpc/command', JointState, 1000)
        state_pub = probe.publisher('/mbrl/state', JointState, 10)
        goal_pub = probe.publisher('/mbrl/goal', PointStamped, 10)
        active = probe.publisher('/mbrl/world_model/active_model', String, LATCHED)

        def feed(k):
            m = JointState(name=list(robot.joint_names), position=[0.1, 0.4, 0.5], velocity=[0.0] * 3)
            m.header.stamp = sec_to_stamp(time.time())
            state_pub.publish(m)
            if k % 25 == 0:
                goal_pub.publish(goal_msg((0.3, 0.1, 0.35)))
        feeder = Feeder(feed, 0.02)
        stack.callback(feeder.close)

        def latest(since):
            out = {}
            for _, arr in diag[since:]:
                for st in arr.status:
                    for n in FOLLOWERS:
                        if st.name.endswith(n):
                            out[n] = status_values(st)
            return out

        def wait_all(pred, timeout, what):
            since = len(diag)
            got = probe.wait_until(lambda: (lambda v: v if set(v) == set(FOLLOWERS) and all(
                pred(x) for x in v.values()) else None)(latest(since)), timeout)
            for n, proc in nodes.items():
                proc.alive()
            assert got, f'{what}: {latest(since)}\n' + '\n'.join(
                f'--- {n}\n{p.log_text(2000)}' for n, p in nodes.items())
            return got

        # Read-only roots: no widening at runtime, on any follower.
        for n in FOLLOWERS:
            roots = probe.get_param(f'/{n}', 'model_roots', timeout=30)
            assert isinstance(roots, list) and any(r.endswith('models') for r in roots), (n, roots)
            ok, why = probe.set_param(f'/{n}', 'model_roots', ['/'])
            assert not ok and 'read-only' in why, (n, why)

        active.publish(String(data=good_id))
        wait_all(lambda v: v['model'] == good_id, 60, 'the startup bundle (inside a root) was not followed')
        assert probe.wait_until(lambda: len(cmds) > 5, 30), nodes['mpc_controller'].log_text()

        for path in (outside, link):   # a valid bundle with the right hash: only the roots refuse it
            active.publish(String(data=f'{path} {sha}'))
            v = wait_all(lambda v: '[model_roots]' in v['last_refused_model'] and str(path) in v['last_refused_model'],
                         30, f'{path} not refused')
            assert all(x['model'] == good_id for x in v.values()), v
        for n, proc in nodes.items():
            log = proc.log_text(20000)
            assert 'refused model' in log and '[model_roots]' in log and 'outside every model root' in log, log
        n0 = len(cmds)   # the old model still serves: the MPC keeps planning with it
        assert probe.wait_until(lambda: len(cmds) > n0 + 10, 20), nodes['mpc_controller'].log_text()

        sibling_id = f'{sibling.resolve()} {sha}'
        active.publish(String(data=sibling_id))
        wait_all(lambda v: v['model'] == sibling_id, 30, 'a bundle inside a root was not followed')
        n0 = len(cmds)
        assert probe.wait_until(lambda: len(cmds) > n0 + 10, 20), nodes['mpc_controller'].log_text()
