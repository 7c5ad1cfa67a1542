import numpy as np
from mbrl_ros.core.sim import SimArm
from mbrl_ros.core.data.dataset import TransitionDataset
ds = TransitionDataset.load('runs/world_model_arm7/train20k.npz')
S = ds.states; A = ds.actions
sim = SimArm('arm7')
rng = np.random.default_rng(0)
iu = np.triu_indices(7)
qd_std = S[:, 7:].std(0); a_std = A.std(0)
print('qd std', qd_std.round(3)); print('a std', a_std.round(3))
D = ds.next_states - ds.states
dstd = D.std(0)
res_lin, res_q = [], []
for trial in range(5):
    q0 = S[rng.integers(len(S)), :7]
    X, Y = [], []
    for i in range(400):
        k = rng.integers(len(S))
        qd = S[k, 7:]; a = A[rng.integers(len(S))]
        sim.reset(q0, qd); sim.set_command(a); sim.step(10)
        X.append(np.concatenate([[1], a, qd, qd[iu[0]] * qd[iu[1]]])); Y.append(sim.state - np.concatenate([q0, qd]))
    X, Y = np.array(X), np.array(Y)
    for nf, store in ((15, res_lin), (X.shape[1], res_q)):
        c, *_ = np.linalg.lstsq(X[:, :nf], Y, rcond=None)
        r = Y - X[:, :nf] @ c
        store.append(r.std(0) / dstd)
print('affine [a,qd] resid/std:', np.mean(res_lin, 0).round(3))
print('+qq resid/std          :', np.mean(res_q, 0).round(3))
