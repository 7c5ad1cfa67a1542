"""Scoring shared by exp.py and exp_rb.py: a trained torch ensemble as the evaluator's runtime."""
import numpy as np
import torch


class TorchRuntime:
    """`predict(s, a) -> (mean, logvar)` like EnsembleRuntime, on the torch module."""

    def __init__(self, model):
        self.model = model

    def predict(self, s, act):
        with torch.no_grad():
            mu, lv = self.model(torch.as_tensor(np.asarray(s, np.float32)),
                                torch.as_tensor(np.asarray(act, np.float32)))
        return mu.numpy(), lv.numpy()


def metrics(rt, d, nmax=4000):
    """(per-dim nRMSE of the ensemble-mean delta, fraction of deltas inside 2 sigma) on the first nmax rows."""
    s, act, ns = d.states[:nmax], d.actions[:nmax], d.next_states[:nmax]
    D = ns - s
    mu, lv = rt.predict(s, act)
    pm = mu.mean(0); var = np.exp(lv).mean(0) + mu.var(0)
    nr = np.sqrt(((pm - D) ** 2).mean(0)) / D.std(0)
    return nr, (np.abs(D - pm) <= 2 * np.sqrt(var)).mean()
