"""The planning benchmarks run in their short modes and print their tables (smoke runs, no timing assertions)."""
from __future__ import annotations

import json

import pytest

from mbrl_ros.cli import main

ARM3 = 'arm3'   # the shipped bundle, found through find_resource


def _run(capsys, *argv):
    rc = main(['bench', *argv])
    out = capsys.readouterr().out
    assert rc == 0, out
    return out


def test_plan_latency_short(capsys):
    out = _run(capsys, 'plan-latency', '--short', '--model', ARM3)
    assert 'roofline' in out and 'matmul reference' in out
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0] in ('5', '10')]
    assert [(r[0], r[1]) for r in rows] == [('5', '50'), ('5', '100'), ('10', '50'), ('10', '100')]
    data = json.loads(_run(capsys, 'plan-latency', '--short', '--model', ARM3, '--json'))
    for r in data['rows']:
        # iCEM x3: at least the first population through every step; the roofline is a fraction.
        assert r['evals_per_plan'] >= r['samples'] * r['horizon']
        assert 0 < r['roofline_fraction'] and r['plan_p99_ms'] >= r['plan_p50_ms'] > 0


def test_closed_loop_short(capsys):
    data = json.loads(_run(capsys, 'closed-loop', '--short', '--model', ARM3, '--json'))
    assert data['start'] == 'chained' and data['goals'] == 2
    assert [r['controller'] for r in data['rows'] if r['controller'] == 'mpc'] == ['mpc']
    for r in data['rows']:
        assert r['episodes'] == 2 and 0.0 <= r['success_rate'] <= 1.0 and r['final_distance_m']['median'] >= 0


def test_mppi_compare_short(capsys):
    pytest.importorskip('pytorch_mppi')
    out = _run(capsys, 'mppi-compare', '--short', '--model', ARM3, '--ours', 'cem', '--timing-plans', '4')
    assert 'pytorch-mppi' in out and 'ours cem x1' in out and 'faster per plan' in out
    assert 'interleaved timing' in out


def test_bad_model_is_a_clear_error(capsys):
    assert main(['bench', 'closed-loop', '--model', '/nonexistent/bundle', '--short']) == 2
    assert 'not found' in capsys.readouterr().out


def test_mppi_compare_short_with_one_member_per_sample(capsys):
    pytest.importorskip('pytorch_mppi')
    data = json.loads(_run(capsys, 'mppi-compare', '--short', '--model', ARM3, '--ours', 'icem',
                           '--propagation', 'tsinf', '--weights', 'uncertainty=0', '--json'))
    assert data['propagation'] == 'tsinf'
    assert set(data['results']) == {'ours icem x1', 'pytorch-mppi'}
    for s in data['results'].values():
        assert s['episodes'] == 2 and s['failures'] == 0


def test_closed_loop_propagation_is_reported(capsys):
    data = json.loads(_run(capsys, 'closed-loop', '--short', '--model', ARM3, '--budgets', '15',
                           '--propagation', 'tsinf', '--json'))
    assert data['propagation'] == 'tsinf'
    from mbrl_ros.bench.closed_loop import deployment_propagation
    assert deployment_propagation() in ('expectation', 'ts1', 'tsinf')


def test_mppi_torch_dynamics_match_the_onnx_adapter():
    """--mppi-model torch gives pytorch-mppi the same model in torch eager: same next states and
    disagreement as our onnxruntime adapter, so only the runtime differs."""
    pytest.importorskip('pytorch_mppi')
    import numpy as np
    import torch

    from mbrl_ros.bench.mppi_compare import _RecordingDynamics, _TorchEnsembleDynamics
    from mbrl_ros.core.bundle import load_bundle
    from mbrl_ros.resources import find_resource
    bundle = load_bundle(find_resource('models', ARM3), intra_op_threads=1)
    rng = np.random.default_rng(0)
    s = torch.from_numpy(rng.standard_normal((16, bundle.ensemble.state_dim)).astype(np.float32) * 0.3)
    u = torch.from_numpy(rng.standard_normal((16, bundle.ensemble.action_dim)).astype(np.float32))
    ref, tor = _RecordingDynamics(bundle.ensemble, horizon=2), _TorchEnsembleDynamics(bundle.path, horizon=2)
    np.testing.assert_allclose(tor(s, u, 0).numpy(), ref(s, u, 0).numpy(), atol=1e-4)
    np.testing.assert_allclose(tor.dis[:, 0], ref.dis[:, 0], rtol=1e-3, atol=1e-6)
    assert np.all(tor.dis[:, 0] > 0)
    ts = _TorchEnsembleDynamics(bundle.path, horizon=2, propagation='tsinf')
    nxt = ts(s, u, 0).numpy()
    mean, _ = bundle.ensemble.predict(s.numpy(), u.numpy())          # (E, B, S)
    members = ts.members.numpy()
    np.testing.assert_allclose(nxt, s.numpy() + mean[members, np.arange(16)], atol=1e-4)
    np.testing.assert_allclose(ts(s, u, 1).numpy() - s.numpy(), mean[members, np.arange(16)], atol=1e-4)


def test_mppi_compare_short_with_the_torch_model(capsys):
    pytest.importorskip('pytorch_mppi')
    data = json.loads(_run(capsys, 'mppi-compare', '--short', '--model', ARM3, '--ours', 'cem',
                           '--mppi-model', 'torch', '--json'))
    assert data['mppi_model'] == 'torch'
    for s in data['results'].values():
        assert s['episodes'] == 2 and s['failures'] == 0
