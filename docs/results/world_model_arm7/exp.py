"""Quick world-model experiments (torch directly, no export)."""
import argparse, time, json, sys
import numpy as np, torch
from types import SimpleNamespace
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.data.dataset import TransitionDataset
from mbrl_ros.core.dynamics.ensemble import EnsembleConfig
from mbrl_ros.core.dynamics.train import TrainConfig, train_ensemble
from mbrl_ros.core.runtime.evaluate import open_loop_ee_error
from score import TorchRuntime, metrics

p = argparse.ArgumentParser()
p.add_argument('--data', default='runs/world_model_arm7/train20k.npz')
p.add_argument('--eval', default='runs/world_model_arm7/eval4k.npz')
p.add_argument('--n', type=int, default=0)
p.add_argument('--E', type=int, default=5)
p.add_argument('--hidden', default='128,128,128')
p.add_argument('--epochs', type=int, default=150)
p.add_argument('--beta', type=float, default=0.5)
p.add_argument('--lr', type=float, default=3e-3)
p.add_argument('--bs', type=int, default=256)
p.add_argument('--wd', type=float, default=1e-5)
p.add_argument('--no-affine', action='store_true')
p.add_argument('--no-boot', action='store_true')
p.add_argument('--maxtime', type=float, default=None)
p.add_argument('--extra', default='{}', help='json of extra EnsembleConfig fields')
p.add_argument('--textra', default='{}', help='json of extra TrainConfig fields')
a = p.parse_args()
torch.set_num_threads(1)
r = RobotModel.load('arm7')
ds = TransitionDataset.load(a.data)
if a.n:
    ds = ds.subset(np.arange(a.n))
ev = TransitionDataset.load(a.eval)
tr, ho = ds.split_by_episode(0.1, seed=0)
mc = EnsembleConfig(state_dim=14, action_dim=7, ensemble_size=a.E, hidden_sizes=[int(h) for h in a.hidden.split(',')],
                    control_affine=not a.no_affine, angle_features=7, **json.loads(a.extra))
tc = TrainConfig(max_epochs=a.epochs, lr=a.lr, batch_size=a.bs, weight_decay=a.wd, nll_beta=a.beta,
                 bootstrap=not a.no_boot, max_time_s=a.maxtime, patience=1000, **json.loads(a.textra))
res = train_ensemble(tr, ho, mc, tc, progress=False)
m = res.model

rt = TorchRuntime(m)
metr = lambda d: metrics(rt, d)
out = {'args': vars(a), 'wall': round(res.wall_time_s, 1), 'epochs': res.epochs_run, 'best_epoch': res.best_epoch}
for name, d in (('train', tr), ('hold', ho), ('eval', ev)):
    nr, cal = metr(d)
    out[name] = {'nrmse': round(float(nr.mean()), 4), 'cal': round(float(cal), 3),
                 'per_dim': [round(float(v), 3) for v in nr]}
ol = open_loop_ee_error(rt, ev, r, 15)
out['eval']['ol_med_cm'] = round(100 * ol['open_loop_ee_error_median_m'], 2)
print(json.dumps(out))
