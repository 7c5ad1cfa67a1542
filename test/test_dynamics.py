"""The torch ensemble: shapes, batched members, learning, export parity."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from _model_helpers import make_model, toy_data
from mbrl_ros.core.dynamics.ensemble import EnsembleConfig, EnsembleLinear, ProbabilisticEnsemble
from mbrl_ros.core.dynamics.export import (ExportError, build_graph, export_ensemble, verify_parity)
from mbrl_ros.core.dynamics.plots import plot_training_curve
from mbrl_ros.core.dynamics.train import TrainConfig, train_ensemble


def test_parameters_are_batched_over_members():
    m = ProbabilisticEnsemble(EnsembleConfig(6, 3, ensemble_size=5, hidden_sizes=[32, 24]))
    # Every layer holds all members in one (E, in, out) tensor: no per-member modules to loop over.
    assert [tuple(l.weight.shape) for l in m.hidden] == [(5, 9, 32), (5, 32, 24)]
    assert tuple(m.out.weight.shape) == (5, 24, 12 + 6 * 3)   # mean, logvar, control-affine gain
    assert all(isinstance(l, EnsembleLinear) for l in m.hidden)
    assert all(p.shape[0] == 5 for p in m.parameters())
    mean, logvar = m(torch.randn(7, 6), torch.randn(7, 3))
    assert mean.shape == logvar.shape == (5, 7, 6)
    # Members have independent weights, so their predictions differ.
    assert (mean[0] - mean[1]).abs().max() > 1e-4


def test_per_member_batches_match_shared_batch():
    m = make_model(4, 2, E=3)
    x = torch.randn(3, 5, 6)
    mean_sep, _ = m.forward_normalised(x)
    for e in range(3):
        mean_shared, _ = m.forward_normalised(x[e])
        torch.testing.assert_close(mean_sep[e], mean_shared[e])


def test_logvar_stays_within_soft_bounds():
    m = make_model(4, 2, E=2)
    with torch.no_grad():
        m.out.bias[..., 4:8] = 100.0    # wild raw log-variance
    _, lv = m.forward_normalised(torch.randn(10, 6))
    assert (lv <= m.max_logvar + 1e-4).all()   # softplus tail: within exp(-(max-min))
    with torch.no_grad():
        m.out.bias[..., 4:8] = -100.0
    _, lv = m.forward_normalised(torch.randn(10, 6))
    assert (lv >= m.min_logvar - 1e-5).all()


def test_training_learns_a_toy_system(tmp_path):
    train, hold = toy_data(3000, seed=0), toy_data(600, seed=1)
    cfg = EnsembleConfig(4, 2, ensemble_size=3, hidden_sizes=[48, 48])
    res = train_ensemble(train, hold, cfg, TrainConfig(max_epochs=25, patience=25, seed=0), progress=False)
    h = res.history
    assert h['train_loss'][-1] < h['train_loss'][0] - 1.0       # NLL falls a lot
    mse = np.asarray(h['holdout_mse'])
    assert mse[-1].mean() < 0.2 * mse[0].mean()
    assert all(1 <= b <= res.epochs_run for b in res.best_epoch)
    # One-step prediction of the toy delta in physical units (noise std 0.01).
    with torch.no_grad():
        mean, _ = res.model(torch.tensor(hold.states, dtype=torch.float32),
                            torch.tensor(hold.actions, dtype=torch.float32))
    err = mean.mean(0).numpy() - (hold.next_states - hold.states)
    assert np.sqrt((err ** 2).mean()) < 0.03
    plot_training_curve(h, tmp_path / 'curve.png')
    assert (tmp_path / 'curve.png').stat().st_size > 1000


def test_early_stopping_restores_best_member_weights():
    train, hold = toy_data(400, seed=2), toy_data(200, seed=3)
    cfg = EnsembleConfig(4, 2, ensemble_size=2, hidden_sizes=[16])
    res = train_ensemble(train, hold, cfg, TrainConfig(max_epochs=6, patience=2, lr=3e-2, seed=1),
                         progress=False)
    from mbrl_ros.core.dynamics.train import arrays, holdout_metrics
    hx, hy = arrays(hold)
    m = res.model
    with torch.no_grad():
        x = (torch.from_numpy(hx) - m.in_mean) / m.in_std
        mse, _ = holdout_metrics(m, x, m.normalise_targets(torch.from_numpy(hy)))
    best = np.min(np.asarray(res.history['holdout_mse']), axis=0)
    np.testing.assert_allclose(mse, best, rtol=1e-4)


def test_training_rejects_nonfinite_data():
    bad = toy_data(50)
    bad.next_states[3, 1] = np.nan
    with pytest.raises(ValueError, match='non-finite'):
        train_ensemble(bad, toy_data(20), EnsembleConfig(4, 2, hidden_sizes=[8]), TrainConfig(max_epochs=1),
                       progress=False)


@pytest.mark.parametrize('partitioned', [False, True])
@pytest.mark.parametrize('affine,angles', [(True, 3), (False, 0)])
def test_export_parity(tmp_path, partitioned, affine, angles):
    m = make_model(6, 3, E=4, hidden=(32, 32, 32), control_affine=affine, angle_features=angles)
    files = export_ensemble(m, tmp_path, partitioned=True)
    name = 'ensemble_partitioned.onnx' if partitioned else 'ensemble.onnx'
    assert files[name]['parity_max_error'] <= 1e-5
    sess = ort.InferenceSession(str(tmp_path / name), providers=['CPUExecutionProvider'])
    # Raw (unnormalised) inputs: normalisation is inside the graph. Dynamic batch axis.
    for b in (1, 33):
        lead = (4, b) if partitioned else (b,)
        s = (np.random.default_rng(b).normal(0, 2, lead + (6,))).astype(np.float32)
        a = (np.random.default_rng(b + 1).normal(0, 2, lead + (3,))).astype(np.float32)
        mean, logvar = sess.run(['mean', 'logvar'], {'state': s, 'action': a})
        assert mean.shape == logvar.shape == (4, b, 6)
        with torch.no_grad():
            if partitioned:
                tm, tl = m.forward_normalised(m.normalise_inputs(torch.from_numpy(s), torch.from_numpy(a)))
                tm, tl = tm * m.out_std + m.out_mean, tl + 2 * torch.log(m.out_std)
            else:
                tm, tl = m(torch.from_numpy(s), torch.from_numpy(a))
        np.testing.assert_allclose(mean, tm.numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(logvar, tl.numpy(), atol=1e-5, rtol=1e-5)


def test_parity_check_fails_loudly_on_a_mismatch(tmp_path):
    import onnx
    m, other = make_model(4, 2, seed=0), make_model(4, 2, seed=1)
    onnx.save_model(build_graph(other), str(tmp_path / 'x.onnx'))
    with pytest.raises(ExportError, match='parity'):
        verify_parity(m, tmp_path / 'x.onnx')


def test_model_round_trips_through_onnx(tmp_path):
    from mbrl_ros.core.dynamics.export import model_from_onnx
    m = make_model(6, 3, E=2, hidden=(8, 8))
    export_ensemble(m, tmp_path, partitioned=False)
    back = model_from_onnx(tmp_path / 'ensemble.onnx')
    s, a = torch.randn(5, 6), torch.randn(5, 3)
    with torch.no_grad():
        for x, y in zip(m(s, a), back(s, a)):
            torch.testing.assert_close(x, y)


def test_variance_calibration_hits_the_coverage_and_survives_export(tmp_path):
    from mbrl_ros.core.dynamics.export import model_from_onnx
    from mbrl_ros.core.dynamics.train import arrays, calibrate_variance
    train, hold = toy_data(1500, seed=4), toy_data(800, seed=5, noise=0.05)   # noisier holdout
    res = train_ensemble(train, hold, EnsembleConfig(4, 2, ensemble_size=3, hidden_sizes=[32]),
                         TrainConfig(max_epochs=8, seed=0, calibrate_coverage=0.954), progress=False)
    m = res.model
    assert m.logvar_offset.abs().max() > 0.05           # it did move (holdout noisier than training)
    hx, hy = arrays(hold)
    with torch.no_grad():
        x = m.normalise_inputs(torch.from_numpy(hx[:, :4]), torch.from_numpy(hx[:, 4:]))
        y = m.normalise_targets(torch.from_numpy(hy))
        mean, logvar = m.forward_normalised(x)
        sd = torch.sqrt(torch.exp(logvar).mean(0) + mean.var(0, unbiased=False))
        cover = ((y - mean.mean(0)).abs() <= 2 * sd).float().mean(0)
        assert torch.allclose(cover, torch.full_like(cover, 0.954), atol=0.01)
        # Calibrating again is a fixed point.
        torch.testing.assert_close(calibrate_variance(m, x, y), m.logvar_offset, atol=0.02, rtol=0)
    export_ensemble(m, tmp_path, partitioned=False)
    torch.testing.assert_close(model_from_onnx(tmp_path / 'ensemble.onnx').logvar_offset, m.logvar_offset)


def test_beta_nll_weights_by_predicted_variance():
    m = make_model(4, 2, E=2)
    x, y = torch.randn(32, 6), torch.randn(2, 32, 4)
    plain, beta0 = m.nll_loss(x, y, beta=0.0), m.nll_loss(x, y, beta=0.0)
    assert torch.equal(plain, beta0)
    assert not torch.allclose(m.nll_loss(x, y, beta=0.5), plain)
