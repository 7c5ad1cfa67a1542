"""Small ensembles and bundles for the dynamics/runtime/bundle tests (no simulator needed)."""
from __future__ import annotations

import types

import numpy as np


def toy_data(n, S=4, A=2, seed=0, noise=0.01):
    """A smooth learnable system: the delta depends nonlinearly on state and action."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1, 1, (n, S))
    a = rng.uniform(-1, 1, (n, A))
    d = np.zeros((n, S))
    d[:, : S // 2] = 0.1 * (np.sin(2 * s[:, : S // 2]) + a.sum(1, keepdims=True))
    d[:, S // 2:] = 0.1 * s[:, S // 2:] * a[:, :1] + 0.05
    return types.SimpleNamespace(states=s, actions=a, next_states=s + d + noise * rng.standard_normal((n, S)))


def make_model(S, A, E=3, hidden=(16, 16), seed=0, **config):
    import torch

    from mbrl_ros.core.dynamics.ensemble import EnsembleConfig, ProbabilisticEnsemble
    torch.manual_seed(seed)
    model = ProbabilisticEnsemble(EnsembleConfig(S, A, ensemble_size=E, hidden_sizes=list(hidden), **config))
    rng = np.random.default_rng(seed)
    s, a = rng.normal(0, 2, (256, S)), rng.normal(0, 2, (256, A))
    model.fit_normaliser(model.features(s, a), rng.normal(0.1, 0.3, (256, S)))
    return model.eval()


def write_bundle(out_dir, robot, model=None, E=3, partitioned=True):
    """A valid (untrained) bundle for `robot` in out_dir."""
    from mbrl_ros.core.bundle import write_bundle_meta
    from mbrl_ros.core.dynamics.export import export_ensemble
    from mbrl_ros.core.dynamics.pipeline import bundle_meta
    from mbrl_ros.core.dynamics.train import TrainConfig
    model = model if model is not None else make_model(2 * robot.dof, robot.dof, E=E)
    files = export_ensemble(model, out_dir, partitioned=partitioned)
    meta = bundle_meta(robot, model.config, TrainConfig(), 0.02, files,
                       {'transitions': 0, 'episodes': 0, 'source': 'test'}, {}, 'test', 0)
    write_bundle_meta(out_dir, meta)
    return out_dir
