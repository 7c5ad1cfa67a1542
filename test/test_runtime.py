"""The torch-free onnxruntime ensemble: predict, partitioned graph, TS1/TS-inf, disagreement, metrics."""
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from _model_helpers import make_model
from mbrl_ros.core.dynamics.export import export_ensemble
from mbrl_ros.core.runtime.ensemble import EnsembleRuntime
from mbrl_ros.core.runtime.evaluate import evaluate, open_loop_windows
from mbrl_ros.core.world_model import WorldModel

S, A, E = 6, 3, 4


def _runtime(tmp_path, model, partitioned=True):
    export_ensemble(model, tmp_path, partitioned=partitioned)
    return EnsembleRuntime(tmp_path / 'ensemble.onnx',
                           partitioned_path=tmp_path / 'ensemble_partitioned.onnx' if partitioned else None)


def _member_id_model():
    """Member e predicts the constant delta e (every dim) with tiny variance: identifies the member."""
    m = make_model(S, A, E=E)
    with torch.no_grad():
        m.out.weight.zero_()
        m.out_mean.zero_()
        m.out_std.fill_(1.0)
        for e in range(E):
            m.out.bias[e, 0, :S] = float(e)
            m.out.bias[e, 0, S:2 * S] = -20.0     # log-variance
            m.out.bias[e, 0, 2 * S:] = 0.0        # control-affine gain
    return m


def test_runtime_module_never_imports_torch():
    code = ('import sys, mbrl_ros.core.bundle, mbrl_ros.core.runtime, mbrl_ros.core.runtime.evaluate; '
            'assert "torch" not in sys.modules, "runtime or bundle imported torch"')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=60)


def test_predict_shapes_and_partitioned_agrees(tmp_path):
    rt = _runtime(tmp_path, make_model(S, A, E=E))
    assert (rt.ensemble_size, rt.state_dim, rt.action_dim) == (E, S, A)
    rng = np.random.default_rng(0)
    s, a = rng.normal(size=(8, S)), rng.normal(size=(8, A))      # float64 input is converted
    mean, logvar = rt.predict(s, a)
    assert mean.shape == logvar.shape == (E, 8, S) and mean.dtype == np.float32
    # Partitioned: member e on its own rows == the full graph's member e on those rows.
    sp, ap = rng.normal(size=(E, 5, S)), rng.normal(size=(E, 5, A))
    pm, pl = rt.predict_partitioned(sp, ap)
    for e in range(E):
        fm, fl = rt.predict(sp[e], ap[e])
        np.testing.assert_allclose(pm[e], fm[e], atol=1e-5)
        np.testing.assert_allclose(pl[e], fl[e], atol=1e-5)
    # The fallback without the partitioned graph gives the same.
    rt2 = EnsembleRuntime(tmp_path / 'ensemble.onnx')
    np.testing.assert_allclose(rt2.predict_partitioned(sp, ap)[0], pm, atol=1e-5)


@pytest.mark.parametrize('B', [8, 7])   # 8: balanced (partitioned path), 7: gather path
def test_step_uses_each_particles_member(tmp_path, B):
    rt = WorldModel(_runtime(tmp_path, _member_id_model()))
    members = np.arange(B) % E
    np.random.default_rng(0).shuffle(members)
    s = np.zeros((B, S), np.float32)
    nxt = rt.step(s, np.zeros((B, A)), members=members)
    np.testing.assert_allclose(nxt, np.repeat(members[:, None], S, 1), atol=1e-4)
    # members=None: the ensemble mean.
    np.testing.assert_allclose(rt.step(s, np.zeros((B, A))), np.full((B, S), (E - 1) / 2), atol=1e-4)


def test_ts_inf_keeps_members_and_ts1_redraws(tmp_path):
    rt = WorldModel(_runtime(tmp_path, _member_id_model()))
    B, H = 40, 12
    acts = np.zeros((B, H, A))
    traj = rt.rollout(np.zeros(S), acts, mode='tsinf', rng=0)
    inc = np.diff(traj[..., 0], axis=1)                          # the member used at each step
    assert traj.shape == (B, H + 1, S)
    assert (np.abs(inc - inc[:, :1]) < 1e-4).all()                # fixed for the whole trajectory
    assert len(np.unique(np.round(inc[:, 0]))) == E               # and spread over the members
    fixed = np.arange(B) % E
    inc2 = np.diff(rt.rollout(np.zeros(S), acts, mode='tsinf', members=fixed)[..., 0], axis=1)
    np.testing.assert_allclose(inc2, np.repeat(fixed[:, None], H, 1), atol=1e-4)
    inc1 = np.diff(rt.rollout(np.zeros(S), acts, mode='ts1', rng=0)[..., 0], axis=1)
    changes = (np.abs(np.diff(inc1, axis=1)) > 0.5).mean()
    assert changes > 0.5                                          # ~(E-1)/E of steps switch member
    for row in np.round(inc1).astype(int).T:                      # balanced draws each step
        assert np.bincount(row, minlength=E).tolist() == [B // E] * E
    meanroll = rt.rollout(np.zeros(S), acts, mode='expectation')
    np.testing.assert_allclose(np.diff(meanroll[..., 0], axis=1), (E - 1) / 2, atol=1e-4)
    np.testing.assert_array_equal(rt.rollout(np.zeros(S), acts, mode='mean'), meanroll)   # the old name
    with pytest.raises(ValueError):
        rt.rollout(np.zeros(S), acts, mode='average')


def test_aleatoric_sampling_spread(tmp_path):
    m = _member_id_model()
    with torch.no_grad():
        m.out.bias[:, 0, S:2 * S] = np.log(0.25)   # sigma 0.5 in every member
    rt = WorldModel(_runtime(tmp_path, m))
    B = 4000
    members = np.zeros(B, int)
    nxt = rt.step(np.zeros((B, S)), np.zeros((B, A)), members=members, rng=1, sample_aleatoric=True)
    sigma = float(np.exp(0.5 * rt.predict(np.zeros((1, S)), np.zeros((1, A)))[1][0, 0, 0]))
    assert 0.3 < sigma < 0.6                   # the soft bounds shrink it a little
    assert abs(nxt.std() / sigma - 1) < 0.05 and abs(nxt.mean()) < 0.03
    assert rt.step(np.zeros((B, S)), np.zeros((B, A)), members=members).std() < 1e-5


def test_disagreement_zero_for_identical_members(tmp_path):
    m = make_model(S, A, E=E)
    rng = np.random.default_rng(0)
    s, a = rng.normal(size=(16, S)), rng.normal(size=(16, A))
    assert (WorldModel(_runtime(tmp_path / 'a', m)).disagreement(s, a) > 1e-3).all()
    with torch.no_grad():
        for p in m.parameters():
            p[1:] = p[:1]
    d = WorldModel(_runtime(tmp_path / 'b', m)).disagreement(s, a)
    assert d.shape == (16,) and np.abs(d).max() < 1e-5


def test_metrics_are_zero_on_data_the_model_generated(tmp_path):
    """Trajectories rolled out with the ensemble mean itself: nRMSE and open-loop error vanish."""
    from mbrl_ros.core.robot import RobotModel
    robot = RobotModel.load('arm3')
    m = make_model(6, 3, E=3)
    with torch.no_grad():
        for p in m.parameters():
            p[1:] = p[:1]
        m.out_mean.zero_()
        m.out_std.fill_(0.01)       # small, smooth deltas
    rt = _runtime(tmp_path, m)
    rng = np.random.default_rng(0)
    n_ep, T = 6, 40
    acts = rng.uniform(-1, 1, (n_ep, T, 3)).astype(np.float32)
    traj = WorldModel(rt).rollout(np.zeros(6), acts, mode='expectation')
    ds = types.SimpleNamespace(
        states=traj[:, :-1].reshape(-1, 6).astype(np.float64), actions=acts.reshape(-1, 3),
        next_states=traj[:, 1:].reshape(-1, 6).astype(np.float64),
        episode=np.repeat(np.arange(n_ep), T), joint_names=robot.joint_names)
    assert len(open_loop_windows(ds, 15, max_windows=None)) == n_ep * (T - 14)
    met = evaluate(rt, ds, robot, horizon=15)
    assert met['one_step_nrmse'] < 1e-3
    assert met['open_loop_ee_error_median_m'] < 1e-4
    assert met['disagreement_median'] < 1e-5
    # A wrong model gives a large error: the metric can fail.
    rt_bad = _runtime(tmp_path / 'bad', make_model(6, 3, E=3, seed=5))
    assert evaluate(rt_bad, ds, robot, horizon=15)['one_step_nrmse'] > 0.5


@pytest.mark.parametrize('affine', ['action', 'rigid_body', None])
def test_mean_only_graphs_give_the_full_graphs_means_without_the_variance_head(tmp_path, affine):
    import onnx

    from mbrl_ros.core.runtime.ensemble import make_session, mean_only_graph
    head = {'affine_inputs': affine} if affine else {'control_affine': False}
    rt = _runtime(tmp_path, make_model(S, A, E=E, **head))
    cut = onnx.load_from_string(mean_only_graph(tmp_path / 'ensemble.onnx'))
    full = onnx.load(str(tmp_path / 'ensemble.onnx'))
    assert [o.name for o in cut.graph.output] == ['mean']
    assert 'Softplus' in {n.op_type for n in full.graph.node}                  # the log-variance bounds
    assert 'Softplus' not in {n.op_type for n in cut.graph.node} and len(cut.graph.node) < len(full.graph.node)
    onnx.checker.check_model(cut)
    rng = np.random.default_rng(0)
    s, a = rng.normal(size=(33, S)).astype(np.float32), rng.normal(size=(33, A)).astype(np.float32)
    assert rt.mean_session is not None and rt.partitioned_mean is not None
    ps, pa = rng.normal(size=(E, 7, S)).astype(np.float32), rng.normal(size=(E, 7, A)).astype(np.float32)
    # The plain cut computes exactly the full graph's nodes: the same bits.
    plain = make_session(mean_only_graph(tmp_path / 'ensemble.onnx', fold=False))
    np.testing.assert_array_equal(plain.run(['mean'], {'state': s, 'action': a})[0], rt.predict(s, a)[0])
    # The folded head (what the runtime uses): no split, no log-variance columns; float32 rounding apart.
    assert 'Split' not in {n.op_type for n in cut.graph.node}
    w_out = {i.name: tuple(i.dims) for i in full.graph.initializer}['w_out']
    assert {i.name: tuple(i.dims) for i in cut.graph.initializer}['w_mean'][-1] == w_out[-1] - S
    np.testing.assert_allclose(rt.predict_mean(s, a), rt.predict(s, a)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rt.predict_partitioned_mean(ps, pa), rt.predict_partitioned(ps, pa)[0],
                               rtol=1e-5, atol=1e-6)
    # The planner's paths take them (expectation and one member per sample) and agree with the full graphs.
    from mbrl_ros.core.planning.rollout import EnsembleDynamics
    lazy = EnsembleRuntime(tmp_path / 'ensemble.onnx', partitioned_path=tmp_path / 'ensemble_partitioned.onnx',
                           mean_only=False)
    assert lazy.mean_session is None
    x, u = rng.normal(size=(40, S)), rng.normal(size=(40, A))
    for prop in ('expectation', 'tsinf'):
        fast, slow = EnsembleDynamics(rt, propagation=prop), EnsembleDynamics(lazy, propagation=prop)
        fast.begin_rollout(40, np.random.default_rng(3))
        slow.begin_rollout(40, np.random.default_rng(3))
        np.testing.assert_allclose(fast.step(x, u)[0], slow.step(x, u)[0], rtol=1e-6, atol=1e-6)


def test_a_fold_that_changes_the_numbers_falls_back_to_the_plain_cut(tmp_path, monkeypatch):
    from onnx import numpy_helper

    import mbrl_ros.core.runtime.ensemble as ens
    fold = ens._fold_mean_head

    def bad_fold(model):   # a fold that is off by 1 %: must not be served
        done = fold(model)
        for i in model.graph.initializer:
            if i.name == 'w_mean':
                i.CopyFrom(numpy_helper.from_array(1.01 * numpy_helper.to_array(i), 'w_mean'))
        return done

    monkeypatch.setattr(ens, '_fold_mean_head', bad_fold)
    rt = _runtime(tmp_path, make_model(S, A, E=E))
    s, a = np.random.default_rng(1).normal(size=(9, S)).astype(np.float32), np.zeros((9, A), np.float32)
    np.testing.assert_array_equal(rt.predict_mean(s, a), rt.predict(s, a)[0])   # the plain cut's bits


def test_means_agree_up_to_rounding_in_units_of_the_delta_std():
    from mbrl_ros.core.runtime.ensemble import means_agree
    std = np.array([1e-3, 0.5], np.float32)
    want = np.array([[[2e-3, 0.4]]], np.float32)
    assert means_agree(want + np.float32(5e-7) * std, want, std)      # re-associated sums
    assert not means_agree(want + np.float32(2e-3) * std, want, std)  # a different model
    assert not means_agree(want[:, :0], want, std)                     # shapes
    assert not means_agree(np.full_like(want, np.nan), want, std)
