"""Structured-head experiment: gains conditioned on configuration only, affine in [a, qd, qd*qd]."""
import argparse, json, sys, time
import numpy as np, torch
import mbrl_ros.core.dynamics.train as T
from mbrl_ros.core.dynamics.ensemble import ProbabilisticEnsemble, EnsembleConfig, EnsembleLinear
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.data.dataset import TransitionDataset
from mbrl_ros.core.runtime.evaluate import open_loop_ee_error
from score import TorchRuntime, metrics

p = argparse.ArgumentParser()
p.add_argument('--data', default='runs/world_model_arm7/train20k.npz')
p.add_argument('--eval', default='runs/world_model_arm7/eval4k.npz')
p.add_argument('--E', type=int, default=1)
p.add_argument('--hidden', default='128,128,128')
p.add_argument('--epochs', type=int, default=30)
p.add_argument('--lr', type=float, default=3e-3)
p.add_argument('--wd', type=float, default=1e-5)
p.add_argument('--boot', action='store_true')
p.add_argument('--mlp', default='config', help='config|all|config_raw')
p.add_argument('--z', default='a,qd,qq', help='affine vector parts')
p.add_argument('--beta', type=float, default=0.5)
p.add_argument('--dump', default='')
p.add_argument('--extra', default='{}')
p.add_argument('--bs', type=int, default=256)
a = p.parse_args()
torch.set_num_threads(2)
S, A, K = 14, 7, 7
iu = np.triu_indices(7)

class RB(ProbabilisticEnsemble):
    def __init__(self, cfg):
        parts = a.z.split(',')
        self.zdim = sum({'a': 7, 'qd': 7, 'qq': len(iu[0])}[p_] for p_ in parts)
        cfg.control_affine = False
        super().__init__(cfg)
        E = cfg.ensemble_size
        sizes = [cfg.input_dim] + cfg.hidden_sizes
        self.out = EnsembleLinear(E, sizes[-1], 2 * S + S * self.zdim)
        m = torch.ones(cfg.input_dim)
        if a.mlp.startswith('config'):
            m[:] = 0
            m[S + A:] = 1            # sin, cos
            if a.mlp == 'config_raw':
                m[:K] = 1
        self.register_buffer('mlp_mask', m)
    def forward_normalised(self, x):
        E = self.ensemble_size
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(E, -1, -1)
        h = x * self.mlp_mask
        for layer in self.hidden:
            h = self.act(layer(h))
        out = self.out(h)
        mean, logvar = out[..., :S], out[..., S:2 * S]
        zs = []
        qd = x[..., K:S]
        for p_ in a.z.split(','):
            if p_ == 'a': zs.append(x[..., S:S + A])
            if p_ == 'qd': zs.append(qd)
            if p_ == 'qq': zs.append((qd[..., iu[0]] * qd[..., iu[1]]))
        z = torch.cat(zs, -1)
        gain = out[..., 2 * S:].reshape(out.shape[:-1] + (S, self.zdim))
        mean = mean + (gain * z.unsqueeze(-2)).sum(-1)
        F = torch.nn.functional
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar + self.logvar_offset

T.ProbabilisticEnsemble = RB
r = RobotModel.load('arm7')
ds = TransitionDataset.load(a.data)
ev = TransitionDataset.load(a.eval)
tr, ho = ds.split_by_episode(0.1, seed=0)
mc = EnsembleConfig(state_dim=S, action_dim=A, ensemble_size=a.E, hidden_sizes=[int(h) for h in a.hidden.split(',')],
                    angle_features=K, **json.loads(a.extra))
tc = T.TrainConfig(max_epochs=a.epochs, lr=a.lr, weight_decay=a.wd, nll_beta=a.beta, bootstrap=a.boot, patience=1000, batch_size=a.bs)
res = T.train_ensemble(tr, ho, mc, tc, progress=False)
m = res.model
rt = TorchRuntime(m)
metr = lambda d: metrics(rt, d)
out = {'args': vars(a), 'wall': round(res.wall_time_s, 1)}
for name, d in (('train', tr), ('hold', ho), ('eval', ev)):
    nr, cal = metr(d)
    out[name] = {'nrmse': round(float(nr.mean()), 4), 'cal': round(float(cal), 3), 'per_dim': [round(float(v), 3) for v in nr]}
ol = open_loop_ee_error(rt, ev, r, 15)
out['eval']['ol_med_cm'] = round(100 * ol['open_loop_ee_error_median_m'], 2)
print(json.dumps(out))
if a.dump:
    mu,_=rt.predict(ev.states, ev.actions); np.savez(a.dump, pred=mu.mean(0), true=ev.next_states-ev.states, s=ev.states, act=ev.actions)
