"""World-model quality on held-out transitions (numpy + onnxruntime; no torch).

Metrics (all on data the model was not trained on):
- one-step nRMSE: for each state dim, RMSE of the ensemble-mean predicted delta divided by the std
  of the true delta in that dim; then averaged over dims. 0 is perfect, 1 is no better than
  predicting the mean delta.
- open-loop end-effector error: from real states, propagate the ensemble mean `horizon` steps under
  the recorded actions (no correction from measurements), FK both the predicted and the real joint
  positions and take the distance at the last step (median and p90 over windows, metres).
- calibration: fraction of true delta components inside 2 sigma of the ensemble's predictive
  distribution (moment-matched mixture: mean over members; variance = mean aleatoric variance +
  variance of the member means). A calibrated Gaussian gives 95.4%.
"""
from __future__ import annotations

import numpy as np

from mbrl_ros.core.world_model import disagreement, ensemble_mean, predictive_var

from .ensemble import EnsembleRuntime


def _batched(rt: EnsembleRuntime, states, actions, chunk: int = 4096):
    for i in range(0, len(states), chunk):
        yield i, rt.predict(states[i:i + chunk], actions[i:i + chunk])


def one_step_metrics(rt: EnsembleRuntime, states, actions, next_states) -> dict:
    delta = (np.asarray(next_states, np.float64) - np.asarray(states, np.float64))
    pred = np.empty_like(delta)
    inside = np.empty(delta.shape, dtype=bool)
    dis = np.empty(len(delta))
    for i, (mean, logvar) in _batched(rt, states, actions):
        m = ensemble_mean(mean).astype(np.float64)
        var = predictive_var(mean.astype(np.float64), logvar.astype(np.float64))
        d = delta[i:i + len(m)]
        pred[i:i + len(m)] = m
        inside[i:i + len(m)] = np.abs(d - m) <= 2.0 * np.sqrt(var)
        dis[i:i + len(m)] = disagreement(mean, rt.delta_std)
    std = delta.std(0)
    std = np.where(std < 1e-12, 1.0, std)
    nrmse = np.sqrt(((pred - delta) ** 2).mean(0)) / std
    return {
        'one_step_nrmse': float(nrmse.mean()),
        'one_step_nrmse_per_dim': [float(v) for v in nrmse],
        'calibration_2sigma': float(inside.mean()),
        'disagreement_median': float(np.median(dis)),
    }


def open_loop_windows(data, horizon: int, max_windows: int | None = 2000, seed: int = 0) -> np.ndarray:
    """Start indices t where transitions t..t+horizon-1 are one contiguous run of one episode."""
    s, ns, ep = np.asarray(data.states), np.asarray(data.next_states), np.asarray(data.episode)
    if len(s) < horizon:
        return np.zeros(0, dtype=np.int64)
    cont = (ep[1:] == ep[:-1]) & np.all(np.isclose(s[1:], ns[:-1], rtol=0, atol=1e-9), axis=1)
    # window t is valid if cont[t .. t+horizon-2] all hold
    bad = np.concatenate([[0], np.cumsum(~cont)])
    t = np.arange(len(s) - horizon + 1)
    starts = t[bad[t + horizon - 1] - bad[t] == 0]
    if max_windows is not None and len(starts) > max_windows:
        starts = np.sort(np.random.default_rng(seed).choice(starts, max_windows, replace=False))
    return starts


def open_loop_ee_error(rt: EnsembleRuntime, data, robot, horizon: int = 15,
                       max_windows: int | None = 2000) -> dict:
    starts = open_loop_windows(data, horizon, max_windows)
    if len(starts) == 0:
        return {'open_loop_horizon': horizon, 'open_loop_windows': 0}
    dof = len(data.joint_names)
    s = np.asarray(data.states, np.float32)[starts]
    actions = np.asarray(data.actions, np.float32)
    err = np.empty((len(starts), horizon))
    for k in range(horizon):
        mean, _ = rt.predict(s, actions[starts + k])
        s = s + ensemble_mean(mean)
        real_q = np.asarray(data.next_states)[starts + k, :dof]
        err[:, k] = np.linalg.norm(robot.fk(s[:, :dof].astype(np.float64)) - robot.fk(real_q), axis=-1)
    last = err[:, -1]
    return {
        'open_loop_horizon': horizon,
        'open_loop_windows': int(len(starts)),
        'open_loop_ee_error_median_m': float(np.median(last)),
        'open_loop_ee_error_p90_m': float(np.percentile(last, 90)),
        'open_loop_ee_error_mean_over_horizon_m': float(err.mean()),
    }


def evaluate(rt: EnsembleRuntime, data, robot, horizon: int = 15) -> dict:
    out = {'transitions': int(len(data.states)),
           'episodes': int(len(np.unique(data.episode)))}
    out.update(one_step_metrics(rt, data.states, data.actions, data.next_states))
    out.update(open_loop_ee_error(rt, data, robot, horizon))
    return out


def targets_met(m: dict) -> dict:
    """The project's quality targets (7-DOF arm, ~20k training transitions)."""
    return {
        'one_step_nrmse < 0.05': m.get('one_step_nrmse', 1.0) < 0.05,
        'open_loop_ee_error_median < 0.02 m': m.get('open_loop_ee_error_median_m', 1.0) < 0.02,
        'calibration_2sigma in [0.90, 0.98]': 0.90 <= m.get('calibration_2sigma', 0.0) <= 0.98,
    }


def format_metrics(m: dict) -> str:
    lines = [f'held-out data: {m.get("transitions")} transitions, {m.get("episodes")} episodes']
    lines.append(f'one-step nRMSE (per-dim RMSE / std of true delta, averaged): {m["one_step_nrmse"]:.4f}')
    if m.get('open_loop_windows'):
        lines.append(f'{m["open_loop_horizon"]}-step open-loop EE error over {m["open_loop_windows"]} windows: '
                     f'median {100 * m["open_loop_ee_error_median_m"]:.2f} cm, '
                     f'p90 {100 * m["open_loop_ee_error_p90_m"]:.2f} cm')
    else:
        lines.append('open-loop EE error: no contiguous windows long enough in this data')
    lines.append(f'calibration: {100 * m["calibration_2sigma"]:.1f}% of true deltas inside the predicted 2 sigma '
                 '(ideal 95.4%)')
    lines.append(f'median disagreement (normalised std over members): {m["disagreement_median"]:.4f}')
    for name, ok in targets_met(m).items():
        lines.append(f'  [{"ok" if ok else "MISS"}] {name}')
    return '\n'.join(lines)
