# onnxruntime cost of candidate architectures, partitioned graph (the planner's), interleaved: ratios matter
import numpy as np, tempfile, time, sys
import onnxruntime as ort
from mbrl_ros.core.dynamics.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.dynamics.export import export_ensemble
cands = {'av3 (shipped)': ([128]*3, 'action_velocity'), 'av4': ([128]*4, 'action_velocity'),
         'rb3': ([128]*3, 'rigid_body'), 'rb4': ([128]*4, 'rigid_body')}
sess = {}
for k, (h, ai) in cands.items():
    m = ProbabilisticEnsemble(EnsembleConfig(14, 7, hidden_sizes=h, angle_features=7, affine_inputs=ai))
    m.fit_normaliser(np.random.randn(100, 35), np.random.randn(100, 14))
    d = tempfile.mkdtemp(); export_ensemble(m, d, partitioned=True)
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    sess[k] = ort.InferenceSession(d + '/ensemble_partitioned.onnx', o, providers=['CPUExecutionProvider'])
rng = np.random.default_rng(0)
for b in (60, 200):
    s, a = rng.normal(size=(5, b, 14)).astype(np.float32), rng.normal(size=(5, b, 7)).astype(np.float32)
    t = {k: [] for k in sess}
    for _ in range(200):
        for k, ss in sess.items():
            t0 = time.perf_counter(); ss.run(None, {'state': s, 'action': a}); t[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * np.median(v) for k, v in t.items()}
    base = med['av3 (shipped)']
    print(f'5 x {b} rows: ' + ', '.join(f'{k} {v:.3f} ms ({v / base:.2f}x)' for k, v in med.items()))
