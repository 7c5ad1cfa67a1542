"""Training the probabilistic ensemble: bootstrapped Gaussian NLL, holdout early stopping.

Works on any object with `states`, `actions`, `next_states` arrays (a `TransitionDataset`, or a
namespace in tests). Targets are next-state deltas.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from .ensemble import EnsembleConfig, ProbabilisticEnsemble


@dataclass
class TrainConfig:
    max_epochs: int = 150
    batch_size: int = 256
    lr: float = 3e-3
    # Cosine decay to lr * lr_final_frac over max_epochs: the late, small steps are what brings the
    # one-step error down once the fit is close.
    lr_schedule: str = 'cosine'
    lr_final_frac: float = 0.02
    weight_decay: float = 1e-5
    patience: int = 20          # epochs without any member improving on the holdout
    logvar_reg: float = 0.01
    nll_beta: float = 0.5       # beta-NLL weighting (0: plain Gaussian NLL); 0.5 fit arm3 far better
    # Per-dim variance scaling fitted on the holdout so that this fraction of true deltas falls
    # inside the 2-sigma band of the ensemble's predictive distribution (None: no calibration).
    calibrate_coverage: float | None = 0.954
    bootstrap: bool = True
    seed: int = 0
    max_time_s: float | None = None   # wall-clock cap (the best weights so far are kept)
    threads: int | None = None
    # Gradient-norm clipping: a sample far outside a member's (small) predicted variance makes a huge
    # NLL gradient; without clipping, members blew up mid-training at lr 3e-3.
    grad_clip: float | None = 10.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: ProbabilisticEnsemble
    history: dict           # per-epoch lists: train_loss, holdout_mse (E lists), holdout_nll
    best_epoch: list        # per member
    epochs_run: int
    wall_time_s: float
    stopped: str            # 'patience' | 'max_epochs' | 'max_time'


def arrays(data) -> tuple[np.ndarray, np.ndarray]:
    """(inputs [s, a], targets s' - s) as float32."""
    s = np.asarray(data.states, dtype=np.float64)
    a = np.asarray(data.actions, dtype=np.float64)
    ns = np.asarray(data.next_states, dtype=np.float64)
    if not (len(s) == len(a) == len(ns)) or s.shape != ns.shape:
        raise ValueError(f'inconsistent transition arrays: states {s.shape}, actions {a.shape}, '
                         f'next_states {ns.shape}')
    if not (np.isfinite(s).all() and np.isfinite(a).all() and np.isfinite(ns).all()):
        raise ValueError('transition data contains non-finite values')
    return np.concatenate([s, a], 1).astype(np.float32), (ns - s).astype(np.float32)


def _member_slices(model: ProbabilisticEnsemble):
    """Parameters with a leading ensemble axis: best weights are tracked per member."""
    return [p for p in model.parameters() if p.shape[0] == model.ensemble_size]


@torch.no_grad()
def holdout_metrics(model: ProbabilisticEnsemble, x: torch.Tensor, y: torch.Tensor,
                    chunk: int = 8192) -> tuple[np.ndarray, float]:
    """Per-member MSE of the normalised delta, and the NLL of the ensemble mixture (moment-matched)."""
    se, nll, n = 0.0, 0.0, 0
    for i in range(0, len(x), chunk):
        mean, logvar = model.forward_normalised(x[i:i + chunk])
        yy = y[i:i + chunk]
        se = se + ((mean - yy) ** 2).sum(dim=(1, 2))
        m = mean.mean(0)
        var = torch.exp(logvar).mean(0) + mean.var(0, unbiased=False)
        nll += float((((m - yy) ** 2) / var + torch.log(var)).sum())
        n += len(yy)
    S = y.shape[-1]
    return (se / (n * S)).cpu().numpy(), nll / (n * S)


def train_ensemble(train, holdout, model_config: EnsembleConfig, config: TrainConfig = TrainConfig(),
                   progress: bool = True, calibration=None) -> TrainResult:
    """`calibration`: the transitions the 2-sigma coverage is calibrated on (default: `holdout`); a
    part of the holdout drawn like the data the model will be judged on."""
    t0 = time.monotonic()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x_np, y_np = arrays(train)
    hx_np, hy_np = arrays(holdout)
    if len(x_np) < 2 or len(hx_np) < 1:
        raise ValueError(f'need training and holdout data (got {len(x_np)} and {len(hx_np)} transitions)')

    model = ProbabilisticEnsemble(model_config)
    S = model_config.state_dim
    x_np = model.features(x_np[:, :S], x_np[:, S:]).astype(np.float32)
    hx_np = model.features(hx_np[:, :S], hx_np[:, S:]).astype(np.float32)
    model.fit_normaliser(x_np, y_np)
    with torch.no_grad():
        x = (torch.from_numpy(x_np) - model.in_mean) / model.in_std * model.in_mask
        y = model.normalise_targets(torch.from_numpy(y_np))
        hx = (torch.from_numpy(hx_np) - model.in_mean) / model.in_std * model.in_mask
        hy = model.normalise_targets(torch.from_numpy(hy_np))

    E, N, bs = model.ensemble_size, len(x), min(config.batch_size, len(x))
    # Per-member bootstrap resample of the training set (PETS): same size, with replacement.
    boot = rng.integers(0, N, size=(E, N)) if config.bootstrap else np.tile(np.arange(N), (E, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.lr_schedule not in ('cosine', 'constant'):
        raise ValueError(f'lr_schedule must be cosine or constant, got {config.lr_schedule!r}')
    sched = None
    if config.lr_schedule == 'cosine':
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(config.max_epochs, 1),
                                                           eta_min=config.lr * config.lr_final_frac)

    params = _member_slices(model)
    best_state = [p.detach().clone() for p in params]
    best_mse, _ = holdout_metrics(model, hx, hy)
    best_epoch = [0] * E
    history = {'epoch': [], 'train_loss': [], 'holdout_mse': [], 'holdout_nll': []}
    stopped, since_improved, epoch = 'max_epochs', 0, 0
    bar = tqdm(range(1, config.max_epochs + 1), desc='train ensemble', unit='epoch',
               disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        perm = np.stack([rng.permutation(row) for row in boot])    # (E, N): each member its own order
        perm = torch.from_numpy(perm)
        losses, norms = [], []
        for i in range(0, N, bs):
            idx = perm[:, i:i + bs]                                  # (E, b)
            loss = model.nll_loss(x[idx], y[idx], config.logvar_reg, config.nll_beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)))
            opt.step()
            losses.append(loss.item())
        if sched is not None:
            sched.step()
        model.eval()
        mse, nll = holdout_metrics(model, hx, hy)
        improved = mse < best_mse
        mask = torch.from_numpy(improved)
        with torch.no_grad():
            for p, b in zip(params, best_state):
                b[mask] = p[mask]
        best_mse = np.where(improved, mse, best_mse)
        best_epoch = [epoch if imp else be for imp, be in zip(improved, best_epoch)]
        since_improved = 0 if improved.any() else since_improved + 1
        history['epoch'].append(epoch)
        history['train_loss'].append(float(np.mean(losses)) / E)
        history['holdout_mse'].append(mse.tolist())
        history['holdout_nll'].append(nll)
        history.setdefault('grad_norm_median', []).append(float(np.median(norms)) if norms else None)
        bar.set_postfix(loss=f'{history["train_loss"][-1]:.3f}', mse=f'{mse.mean():.4f}',
                        best=f'{best_mse.mean():.4f}')
        if since_improved >= config.patience:
            stopped = 'patience'
            break
        if config.max_time_s is not None and time.monotonic() - t0 > config.max_time_s:
            stopped = 'max_time'
            break
    bar.close()
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
    model.eval()
    if config.calibrate_coverage:
        if calibration is not None:
            cx, cy = (torch.from_numpy(v) for v in arrays(calibration))
            with torch.no_grad():
                hx, hy = model.normalise_inputs(cx[:, :S], cx[:, S:]), model.normalise_targets(cy)
        model.logvar_offset.copy_(calibrate_variance(model, hx, hy, config.calibrate_coverage))
        history['logvar_offset'] = model.logvar_offset.tolist()
    return TrainResult(model, history, best_epoch, epoch, time.monotonic() - t0, stopped)


@torch.no_grad()
def calibrate_variance(model: ProbabilisticEnsemble, x: torch.Tensor, y: torch.Tensor,
                       coverage: float = 0.954, iters: int = 40) -> torch.Tensor:
    """Per-dim log-variance offsets so that `coverage` of holdout deltas lie within 2 sigma of the
    moment-matched ensemble prediction (aleatoric variance scaled, epistemic kept); bisection in
    log-space per dim. Variance scaling on held-out data (Levi et al. 2019; Kuleshov et al. 2018)."""
    offset0 = model.logvar_offset.clone()
    model.logvar_offset.zero_()
    mean, logvar = model.forward_normalised(x)
    model.logvar_offset.copy_(offset0)
    m, alea, epi = mean.mean(0), torch.exp(logvar).mean(0), mean.var(0, unbiased=False)
    err = (y - m).abs()
    lo = torch.full((y.shape[-1],), -12.0)
    hi = torch.full((y.shape[-1],), 12.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = (err <= 2.0 * torch.sqrt(torch.exp(mid) * alea + epi)).float().mean(0)
        too_wide = inside > coverage
        hi = torch.where(too_wide, mid, hi)
        lo = torch.where(too_wide, lo, mid)
    return 0.5 * (lo + hi)
