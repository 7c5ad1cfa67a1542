import numpy as np, time
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.data.collect import collect_sim
from mbrl_ros.core.sim import SimArm
r = RobotModel.load('arm7')
t=time.time()
tr = collect_sim(r, 20000, amplitude=0.1, seed=0, progress=False)
ev = collect_sim(r, 4000, amplitude=0.1, seed=1234, progress=False)
print('collect s', time.time()-t)
tr.save('runs/world_model_arm7/train20k.npz'); ev.save('runs/world_model_arm7/eval4k.npz')
dof=7
for name, d in (('train', tr), ('eval', ev)):
    D = d.next_states - d.states
    print(name, 'std delta', np.round(D.std(0), 5))
    print(name, 'qd absmax p99', np.round(np.percentile(np.abs(d.states[:, dof:]), 99, 0), 2))
    print(name, 'frac qd>qd_max', np.round((np.abs(d.states[:, dof:]) > r.qd_max).mean(0), 3))
    m = 0.1*(r.q_max-r.q_min)
    near = (d.states[:, :dof] < r.q_min + m) | (d.states[:, :dof] > r.q_max - m)
    print(name, 'frac in limit margin', np.round(near.mean(0), 3))
    at = (d.states[:, :dof] < r.q_min + 0.01) | (d.states[:, :dof] > r.q_max - 0.01)
    print(name, 'frac within 0.01 of limit', np.round(at.mean(0), 4))
    print(name, 'frac |a| > 0.1 effmax (push)', np.round((np.abs(d.actions) > 0.1*r.effort_max+1e-9).mean(0), 3))
# saturation: replay a subset and compare applied effort
sim = SimArm(r)
sat = np.zeros(dof); n=0
idx = np.random.default_rng(0).choice(len(tr), 2000, replace=False)
for i in idx:
    s, a = tr.states[i], tr.actions[i]
    sim.reset(q=s[:dof], qd=s[dof:])
    g = sim.gravity_torque()
    sim.set_command(a)
    sim.step(10)
    ns = sim.state
    assert np.allclose(ns, tr.next_states[i], atol=1e-6) or True
    sat += np.abs(g + a) > r.effort_max - 1e-6
    n += 1
print('frac saturated (|g+a|>=effort_max) at start', np.round(sat/n, 4))
# determinism / replay error
errs=[]
for i in idx[:300]:
    s, a = tr.states[i], tr.actions[i]
    sim.reset(q=s[:dof], qd=s[dof:]); sim.set_command(a); sim.step(10)
    errs.append(np.abs(sim.state - tr.next_states[i]).max())
print('replay max err', np.max(errs))
# linear regression baseline
def feats(d):
    s,a=d.states,d.actions
    return np.concatenate([s,a,np.sin(s[:,:dof]),np.cos(s[:,:dof]), np.ones((len(s),1))],1)
X, Y = feats(tr), tr.next_states-tr.states
W = np.linalg.lstsq(X, Y, rcond=None)[0]
Xe, Ye = feats(ev), ev.next_states-ev.states
P = Xe@W
nr = np.sqrt(((P-Ye)**2).mean(0))/Ye.std(0)
print('linear nrmse', nr.mean().round(4), np.round(nr,3))
