import numpy as np, mujoco
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.sim import SimArm
from mbrl_ros.core.data.dataset import TransitionDataset
r = RobotModel.load('arm7'); sim = SimArm(r); dof = 7
tr = TransitionDataset.load('runs/world_model_arm7/train20k.npz')
rng = np.random.default_rng(0)
D = np.diag(r.damping) if np.ndim(r.damping) else None
print('damping', r.damping)
# eigenvalues of M^-1 D dt over configurations
lam = []
for i in rng.choice(len(tr), 200):
    sim.reset(q=tr.states[i, :dof], qd=np.zeros(dof))
    mujoco.mj_forward(sim.model, sim.data)
    M = np.zeros((sim.model.nv, sim.model.nv)); mujoco.mj_fullM(sim.model, sim.data, M)
    lam.append(np.linalg.eigvals(np.linalg.solve(M, np.diag(r.damping))).real.max())
print('max eig M^-1 D * dt: median %.3f max %.3f' % (0.02*np.median(lam), 0.02*np.max(lam)))
# per-configuration linear fit in (qd, tau): how much is nonlinear?
std = (tr.next_states - tr.states).std(0)[dof:]
res = []
for i in rng.choice(len(tr), 20):
    q = tr.states[i, :dof]
    X, Y = [], []
    for k in range(200):
        j = rng.integers(len(tr))
        qd, a = tr.states[j, dof:], tr.actions[j]
        sim.reset(q=q, qd=qd); sim.set_command(a); sim.step(10)
        X.append(np.concatenate([qd, a, [1]])); Y.append(sim.qd - qd)
    X, Y = np.array(X), np.array(Y)
    W = np.linalg.lstsq(X, Y, rcond=None)[0]
    res.append(np.sqrt(((X @ W - Y) ** 2).mean(0)) / std)
print('nonlinear (in qd,tau at fixed q) residual / std of delta, per joint:', np.round(np.mean(res, 0), 4))
# single Euler step with M(q): how good a physics predictor is dt*M^-1(tau - bias - D qd)?
errs = []; Yt=[]
for i in rng.choice(len(tr), 1000):
    s, a = tr.states[i], tr.actions[i]
    sim.reset(q=s[:dof], qd=s[dof:]); mujoco.mj_forward(sim.model, sim.data)
    M = np.zeros((7, 7)); mujoco.mj_fullM(sim.model, sim.data, M)
    g = sim.gravity_torque()
    bias = sim.data.qfrc_bias.copy() - g
    pred = 0.02 * np.linalg.solve(M, a - bias - r.damping * s[dof:])
    errs.append(pred - (tr.next_states[i, dof:] - s[dof:]))
print('euler physics nrmse per joint', np.round(np.sqrt((np.array(errs) ** 2).mean(0)) / std, 3))
