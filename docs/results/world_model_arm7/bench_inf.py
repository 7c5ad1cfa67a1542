# onnxruntime cost of the two heads, same process, interleaved (ratio is what matters under load)
import numpy as np, tempfile, time, torch
from mbrl_ros.core.dynamics.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.dynamics.export import export_ensemble
from mbrl_ros.core.runtime.ensemble import EnsembleRuntime
rts = {}
for ai in ('action', 'action_velocity'):
    m = ProbabilisticEnsemble(EnsembleConfig(14, 7, hidden_sizes=[128]*3, angle_features=7, affine_inputs=ai))
    m.fit_normaliser(np.random.randn(100, 35), np.random.randn(100, 14))
    d = tempfile.mkdtemp(); export_ensemble(m, d, partitioned=False)
    rts[ai] = EnsembleRuntime(d + '/ensemble.onnx', intra_op_threads=1)
rng = np.random.default_rng(0)
for B in (100, 1000):
    s, a = rng.normal(size=(B, 14)).astype(np.float32), rng.normal(size=(B, 7)).astype(np.float32)
    t = {k: [] for k in rts}
    for _ in range(60):
        for k, rt in rts.items():
            t0 = time.perf_counter(); rt.predict(s, a); t[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * np.min(v) for k, v in t.items()}
    print(f'batch {B}: min ms ' + ', '.join(f'{k} {v:.3f}' for k, v in med.items()),
          f'ratio {med["action_velocity"] / med["action"]:.2f}')
