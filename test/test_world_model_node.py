"""world_model node over real DDS: predictions, bad input, and validated hot swap of the bundle.

One node process serves the module; a background thread keeps publishing /mbrl/state and
commands, so every test can check that predictions kept flowing through a refused swap.
Bundles are made with the model engineer's exporter (untrained arm3 ensembles).
"""
import shutil
import time

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from _model_helpers import make_model, write_bundle
from mbrl_ros.core.bundle import load_bundle, sha256_file
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.world_model import WorldModel
from mbrl_ros.ros.conversions import LATCHED, sec_to_stamp, stamp_to_sec
from mbrl_ros.testing.node_process import NodeHarness, NodeProcess
from mbrl_ros.ros.diagnostics import status_values

NODE = '/world_model'
ARM3 = ['arm3_joint1', 'arm3_joint2', 'arm3_joint3']
STATE = np.array([0.3, -0.4, 0.5, 0.1, -0.2, 0.05])
COMMAND = np.array([1.0, -2.0, 0.5])


@pytest.fixture(scope='module')
def robot():
    return RobotModel.load('arm3')


@pytest.fixture(scope='module')
def bundles(tmp_path_factory, robot):
    root = tmp_path_factory.mktemp('bundles')
    a = write_bundle(root / 'a', robot, model=make_model(6, 3, seed=0))
    b = write_bundle(root / 'b', robot, model=make_model(6, 3, seed=1))
    return root, a.resolve(), b.resolve()


def _edit_yaml(d, fn):
    meta = yaml.safe_load((d / 'bundle.yaml').read_text())
    fn(meta)
    (d / 'bundle.yaml').write_text(yaml.safe_dump(meta))


def _rehash(d, *names):
    for name in names or ('ensemble.onnx', 'ensemble_partitioned.onnx'):
        _edit_yaml(d, lambda m: m['files'].__setitem__(name, {'sha256': sha256_file(d / name)}))


def _save_graphs(d, model):
    import onnx

    from mbrl_ros.core.dynamics.export import build_graph
    onnx.save_model(build_graph(model), str(d / 'ensemble.onnx'))
    onnx.save_model(build_graph(model, partitioned=True), str(d / 'ensemble_partitioned.onnx'))
    _rehash(d)


def _bad_bundle(kind, root, good):
    """A copy of the good bundle broken in one way; returns (path, the check that must fail)."""
    if kind == 'missing':
        return root / 'does_not_exist', 'missing_file'
    d = root / f'bad_{kind}'
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(good, d)
    onnx_path = d / 'ensemble.onnx'
    if kind == 'wrong_dims':          # a 4-joint model under an arm3 bundle.yaml
        _save_graphs(d, make_model(8, 4, seed=2))
        return d, 'dims'
    if kind == 'wrong_joint_names':
        _edit_yaml(d, lambda m: m.__setitem__('joint_names', ARM3[::-1]))
        return d, 'joint_names'
    if kind == 'truncated_onnx':
        onnx_path.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
        _rehash(d, 'ensemble.onnx')   # the hash matches: the bytes themselves are bad
        return d, 'onnx_load'
    if kind == 'random_onnx':
        onnx_path.write_bytes(np.random.default_rng(0).bytes(8192))
        _rehash(d, 'ensemble.onnx')
        return d, 'onnx_load'
    if kind == 'sha_mismatch':        # a file changed after bundle.yaml was written
        onnx_path.write_bytes(onnx_path.read_bytes() + b'\0')
        return d, 'sha256'
    if kind == 'nan_outputs':
        import torch
        m = make_model(6, 3, seed=3)
        with torch.no_grad():
            m.hidden[0].weight[1, 0, 0] = float('nan')
        _save_graphs(d, m)
        return d, 'test_inference'
    raise AssertionError(kind)


class Harness(NodeHarness):
    def __init__(self, probe, node: NodeProcess):
        self.state_pub = probe.publisher('/mbrl/state', JointState, 10)
        self.cmd_pub = probe.publisher('/forward_effort_controller/commands', Float64MultiArray, 10)
        self.pred = probe.subscribe('/mbrl/world_model/prediction', JointState, 100)
        self.unc = probe.subscribe('/mbrl/world_model/uncertainty', Float64, 100)
        self.active = probe.subscribe('/mbrl/world_model/active_model', String, LATCHED)
        self.diag = probe.subscribe('/diagnostics', DiagnosticArray, 50)
        self.sent_stamps = {}
        super().__init__(probe, node)

    def tick(self, k):
        """/mbrl/state at 100 Hz (constant state) and the command at 50 Hz, like the real stack."""
        m = JointState(name=ARM3, position=STATE[:3].tolist(), velocity=STATE[3:].tolist())
        m.header.stamp = sec_to_stamp(time.time())
        self.state_pub.publish(m)
        if k % 2 == 0:
            self.cmd_pub.publish(Float64MultiArray(data=COMMAND.tolist()))

    def predictions_flow(self, n=5, timeout=10.0):
        self.grows(self.pred, n, timeout, 'predictions')

    def active_model(self, timeout=10.0):
        got = self.probe.wait_until(lambda: self.active[-1][1].data if self.active else None, timeout)
        assert got, 'no active_model'
        return got


@pytest.fixture(scope='module')
def node(probe, bundles):
    _, a, _ = bundles
    with NodeProcess('world_model', 'robot:=arm3', f'model_dir:={a}', 'prediction_rate_hz:=50.0') as proc:
        h = Harness(probe, proc)
        try:
            h.predictions_flow(n=3, timeout=40.0)
            yield h
        finally:
            h.close()


@pytest.fixture
def serving_a(node, bundles):
    """Each test starts from bundle A being served."""
    _, a, _ = bundles
    if not node.active_model().startswith(f'{a} '):
        ok, reason = node.probe.set_param(NODE, 'model_dir', str(a))
        assert ok, reason
        node.probe.wait_until(lambda: node.active[-1][1].data.startswith(f'{a} '), 10)
        node.predictions_flow(n=3)  # and past any prediction the old model had in flight
    return node


def test_prediction_is_state_plus_ensemble_mean_delta(serving_a, bundles):
    _, a, _ = bundles
    node = serving_a
    ident = node.active_model()
    bundle = load_bundle(a)
    assert ident == bundle.identity == f'{a} {sha256_file(a / "ensemble.onnx")}'
    node.predictions_flow(n=10)
    mean, _ = bundle.ensemble.predict(STATE[None], COMMAND[None])
    want = STATE + mean[:, 0].astype(np.float64).mean(0)
    recent = node.pred[-10:]
    got = [np.r_[m.position, m.velocity] for _, m in recent]
    assert all(list(m.name) == ARM3 for _, m in recent)
    # (A feeding stall past command_timeout_s on a busy machine may make one use zero effort.)
    assert sum(np.allclose(g, want, atol=1e-5) for g in got) >= 5, (got, want)
    # Stamped at the state's stamp + dt: a little in the future of when it was received.
    for t_recv, msg in recent:
        ahead = stamp_to_sec(msg.header.stamp) - t_recv
        assert -0.2 < ahead < 0.021
    # Uncertainty is the world model's disagreement for this state and command.
    unc = [u.data for _, u in node.unc[-10:]]
    expected_unc = float(WorldModel(bundle.ensemble).disagreement_from(mean)[0])
    assert any(u == pytest.approx(expected_unc, rel=1e-4) for u in unc), (unc, expected_unc)
    # At most prediction_rate_hz (50) predictions a second from 100 Hz states.
    n0 = len(node.pred)
    time.sleep(1.0)
    assert 20 <= len(node.pred) - n0 <= 60


BAD = ['missing', 'wrong_dims', 'wrong_joint_names', 'truncated_onnx', 'random_onnx', 'sha_mismatch',
       'nan_outputs']


@pytest.mark.parametrize('kind', BAD)
def test_bad_bundle_is_refused_and_old_model_keeps_serving(serving_a, bundles, kind):
    root, a, _ = bundles
    node = serving_a
    before = node.active_model()
    n_active = len(node.active)
    path, check = _bad_bundle(kind, root, a)
    ok, reason = node.probe.set_param(NODE, 'model_dir', str(path))
    assert not ok
    assert f'[{check}]' in reason, reason
    node.alive()
    assert node.probe.get_param(NODE, 'model_dir') == str(a)
    node.predictions_flow(n=5)
    time.sleep(0.3)
    assert len(node.active) == n_active and node.active_model() == before
    # A late joiner still gets the old model on the latched topic.
    late = node.probe.wait_for('/mbrl/world_model/active_model', String, timeout=5.0, qos=LATCHED)
    assert late is not None and late.data == before


def test_good_swap_changes_active_model_and_predictions(serving_a, bundles):
    _, a, b = bundles
    node = serving_a
    node.predictions_flow(n=3)
    old_pred = np.r_[node.pred[-1][1].position, node.pred[-1][1].velocity]
    ok, reason = node.probe.set_param(NODE, 'model_dir', str(b))
    assert ok, reason
    want = load_bundle(b).identity
    assert node.probe.wait_until(lambda: node.active[-1][1].data == want, 10.0), node.active[-1][1].data
    assert node.probe.get_param(NODE, 'model_dir') == str(b)
    n = len(node.pred)
    node.predictions_flow(n=5)
    mean, _ = load_bundle(b).ensemble.predict(STATE[None], COMMAND[None])
    want = STATE + mean[:, 0].astype(np.float64).mean(0)
    recent = [np.r_[m.position, m.velocity] for _, m in node.pred[-5:]]
    assert any(np.allclose(p, want, atol=1e-5) for p in recent), (recent, want)
    assert not np.allclose(want, old_pred)
    assert len(node.pred) > n


def test_static_robot_parameter_is_refused(node):
    ok, reason = node.probe.set_param(NODE, 'robot', 'arm7')
    assert not ok and ('read-only' in reason or 'static' in reason), reason


def test_bad_messages_never_crash_and_never_predict(serving_a, bundles):
    _, a, _ = bundles
    node = serving_a
    n0 = len(node.pred)
    bad_pub = node.probe.publisher('/mbrl/state', JointState, 10)
    cmd_pub = node.probe.publisher('/forward_effort_controller/commands', Float64MultiArray, 10)
    bad_states = [
        JointState(name=['x', 'y', 'z'], position=[0.0] * 3, velocity=[0.0] * 3),
        JointState(name=ARM3, position=[float('nan'), 0.0, 0.0], velocity=[0.0] * 3),
        JointState(name=ARM3, position=[0.0] * 2, velocity=[0.0] * 3),
        JointState(name=ARM3, position=[0.0] * 3, velocity=[]),
        JointState(),
    ]
    bad_cmds = [[1.0, 2.0], [float('inf'), 0.0, 0.0], [1e6, 0.0, 0.0], []]
    for _ in range(3):
        for m in bad_states:
            m.header.stamp = sec_to_stamp(time.time())
            bad_pub.publish(m)
        for c in bad_cmds:
            cmd_pub.publish(Float64MultiArray(data=c))
        time.sleep(0.05)
    node.predictions_flow(n=5)
    # Every prediction since is from the good state and the good command (or, if the feeding
    # thread stalled past command_timeout_s on a busy machine, zero effort): none from bad input.
    ens = load_bundle(a).ensemble
    allowed = [STATE + ens.predict(STATE[None], c[None])[0][:, 0].astype(np.float64).mean(0)
               for c in (COMMAND, np.zeros(3))]
    for _, m in node.pred[n0:]:
        got = np.r_[m.position, m.velocity]
        assert any(np.allclose(got, w, atol=1e-5) for w in allowed), got
    # The two topics are served independently: a report may count the bad states before the bad
    # commands, so wait for one that has counted both.
    def counted_both(s):
        values = status_values(s)
        return int(values.get('bad_states', 0)) > 0 and int(values.get('bad_commands', 0)) > 0
    diag = node.probe.wait_until(lambda: next(
        (s for _, a in reversed(node.diag) for s in a.status if s.name == NODE and counted_both(s)),
        None), 5.0)
    assert diag is not None, 'no /diagnostics report counted both the bad states and the bad commands'
    assert int(status_values(diag)['internal_errors']) == 0


def test_diagnostics_report_running_prediction_error(serving_a):
    node = serving_a
    # The state is constant, so the measured state at t+dt is STATE; the error is the model's delta.
    def rmse():
        for _, arr in reversed(node.diag):
            for s in arr.status:
                if s.name == NODE:
                    v = status_values(s)
                    if v.get('rmse_q', 'n/a') != 'n/a':
                        return v
        return None
    v = node.probe.wait_until(rmse, 10.0)
    assert v is not None
    assert float(v['rmse_q']) > 0 and float(v['rmse_qd']) > 0 and int(v['settled_predictions']) > 0
    assert v['active_model'] == node.active_model()


def _exit_code_and_log(*params):
    with NodeProcess('world_model', *params) as proc:
        rc = proc.wait(timeout=30)
        return rc, proc.log_text(tail=20000)


def test_start_fails_clearly_without_a_bundle(tmp_path):
    rc, text = _exit_code_and_log('robot:=arm3', f'model_dir:={tmp_path / "nothing_here"}')
    assert rc == 78, text
    assert 'cannot load the model bundle' in text and '[missing_file]' in text


def test_start_fails_clearly_when_the_robot_has_no_shipped_bundle(tmp_path):
    # A robot whose name has no models/<name>: the default model_dir cannot exist.
    mjcf = tmp_path / 'zz_unshipped_arm.xml'
    shutil.copy(RobotModel.load('arm3').mjcf_path, mjcf)
    rc, text = _exit_code_and_log(f'robot:={mjcf}')
    assert rc == 78, text
    assert 'no shipped bundle' in text and 'mbrl-ros train' in text
