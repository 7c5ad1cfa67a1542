"""The learned world model: the one door to the ensemble's predictions (numpy only; no ROS, no torch).

`WorldModel` wraps the low-level onnxruntime ensemble (`core.runtime.ensemble.EnsembleRuntime`, or
anything with its `predict`) and owns "state(s), action(s) -> next state(s)": the ensemble mean,
per-member (trajectory sampling) steps and the disagreement. The planner (`planning.rollout.
EnsembleDynamics`), the delay compensation (`estimation.DelayCompensator`), the world_model node's
predictions and the safety filter's disagreement (both through `ModelBundle.world_model`) all go
through it. Shapes: E members, B rows, S state dims, A action dims; the model predicts the next-state delta, so next = state + delta.

Propagation (PETS), one name each (`PROPAGATIONS`; 'mean' is accepted for 'expectation'):
- expectation: next = state + mean over members.
- ts1: each particle uses a random member, redrawn at every step.
- tsinf: each particle keeps one member for the whole trajectory.
When the particles split evenly over the members, TS runs through the partitioned graph (each member
evaluates only its own rows: E times less work than evaluating every member on every row). Otherwise
all members are evaluated and the particle's member is picked out.

Epistemic uncertainty (`disagreement`): for each row, the standard deviation over members of the
predicted mean delta, per state dim divided by the training-set std of that delta dim (normalised units,
so joints and velocities weigh alike), then averaged over state dims. 0 when the members agree exactly;
~1 means the members disagree by a typical one-step change.

Also here: what the world_model node computes besides (`PredictionErrorTracker`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

PROPAGATIONS = ('expectation', 'ts1', 'tsinf')
PROPAGATION_ALIASES = {'mean': 'expectation'}


def propagation_name(name: str) -> str:
    """The canonical propagation name ('mean' -> 'expectation'); ValueError for anything else."""
    name = PROPAGATION_ALIASES.get(name, name)
    if name not in PROPAGATIONS:
        raise ValueError(f'propagation must be one of {PROPAGATIONS} (or \'mean\' for \'expectation\'), '
                         f'got {name!r}')
    return name


# --- the math, once -------------------------------------------------------------------------
def ensemble_mean(member_deltas: np.ndarray) -> np.ndarray:
    """(E, ..., S) member deltas -> (..., S) expectation over members."""
    return member_deltas.mean(axis=0)


def predictive_var(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Variance of the moment-matched predictive over members: aleatoric + epistemic, (E,B,S) -> (B,S)."""
    return np.exp(logvar).mean(axis=0) + mean.var(axis=0)


def disagreement(deltas: np.ndarray, delta_std=None, axis: int = 0) -> np.ndarray:
    """Deltas with the members (or particles) on `axis` -> epistemic uncertainty per row (module docstring)."""
    std = deltas.std(axis=axis)
    if delta_std is not None:
        std = std / delta_std
    return std.mean(axis=-1)


def with_aleatoric(delta: np.ndarray, logvar: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A draw from each chosen member's own Gaussian (TS with aleatoric noise)."""
    return delta + np.exp(0.5 * logvar) * rng.standard_normal(delta.shape, dtype=np.float32)


def rng_integers(rng: np.random.Generator, high: int, size: int) -> np.ndarray:
    return rng.integers(0, high, size=size) if high > 1 else np.zeros(size, int)


def balanced_members(n: int, ensemble_size: int, rng=None) -> np.ndarray:
    """A member per particle, balanced when n is a multiple of E (a random permutation of
    arange(n) % E, as mbrl-lib does), so the partitioned graph applies."""
    rng, e = _rng(rng), ensemble_size
    if n % e == 0:
        return rng.permutation(np.arange(n) % e)
    return rng.integers(0, e, size=n)


def particle_members(rows: int, particles: int, ensemble_size: int, rng: np.random.Generator) -> np.ndarray:
    """Members of `rows` = samples x `particles` rows: particle p of every sample follows member
    p mod E plus a random offset per sample, so each sequence is judged by as many different members
    as it has particles, balanced (partitioned graph) when P is a multiple of E."""
    e, p = ensemble_size or 1, particles
    offset = np.repeat(rng_integers(rng, e, rows // p), p)
    return (np.tile(np.arange(p), rows // p) + offset) % e


# --- the door -------------------------------------------------------------------------------
@dataclass
class Prediction:
    next_state: np.ndarray   # (S,) state + ensemble-mean delta
    uncertainty: float       # ensemble disagreement


class WorldModel:
    """Next states of the learned ensemble `runtime` (an EnsembleRuntime, or anything with its
    `predict(states (B,S), actions (B,A)) -> (mean, logvar)`, each (E,B,S) deltas; its
    `predict_mean`, `predict_partitioned` and `predict_partitioned_mean` are used where present)."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.state_dim = getattr(runtime, 'state_dim', None)
        self.action_dim = getattr(runtime, 'action_dim', None)
        self.ensemble_size = int(getattr(runtime, 'ensemble_size', 0) or 0) or None
        self.delta_std = getattr(runtime, 'delta_std', None)
        self.predict = runtime.predict                 # (mean, logvar) of every member, full graph

    @property
    def partitioned(self) -> bool:
        """Whether the runtime has a partitioned graph (one member per row block)."""
        return getattr(self.runtime, 'partitioned', None) is not None

    def member_means(self, states, actions) -> np.ndarray:
        """(E,B,S) member mean deltas; the mean-only graph where the runtime has one (no log-variance head)."""
        rt = self.runtime
        if hasattr(rt, 'predict_mean'):
            return rt.predict_mean(states, actions)
        return rt.predict(states, actions)[0]

    def partitioned_means(self, states, actions) -> np.ndarray:
        """states (E,b,S), actions (E,b,A): member e on row block e only -> (E,b,S) mean deltas."""
        rt = self.runtime
        if hasattr(rt, 'predict_partitioned_mean'):
            return rt.predict_partitioned_mean(states, actions)
        return rt.predict_partitioned(states, actions)[0]

    def disagreement_from(self, member_deltas: np.ndarray) -> np.ndarray:
        """(E,B,S) member means -> (B,) epistemic uncertainty."""
        return disagreement(member_deltas, self.delta_std)

    def disagreement(self, states, actions) -> np.ndarray:
        return self.disagreement_from(self.member_means(states, actions))

    def mean_delta(self, states, actions) -> tuple[np.ndarray, np.ndarray]:
        """(expectation delta (B,S) in float64, member means (E,B,S)) from the full graph."""
        mean, _ = self.predict(states, actions)
        return ensemble_mean(np.asarray(mean, dtype=np.float64)), mean

    def predict_next(self, state: np.ndarray, action: np.ndarray) -> Prediction:
        """One state (S,), one action (A,): state + expectation delta, and its disagreement."""
        delta, mean = self.mean_delta(state[None, :], action[None, :])
        return Prediction(state + delta[0], float(self.disagreement_from(mean)[0]))

    def step(self, states, actions, members=None, rng=None, sample_aleatoric: bool = False) -> np.ndarray:
        """Next states (B,S), float32, with particle i using member `members[i]`; members=None: the
        expectation. The partitioned graph is used when the members split the rows evenly."""
        states = _f32(states)
        B, E = len(states), self.ensemble_size
        if members is None:
            if not sample_aleatoric:
                return states + ensemble_mean(self.member_means(states, actions))
            mean, logvar = self.predict(states, actions)
            var = predictive_var(mean, logvar)
            return states + ensemble_mean(mean) + np.sqrt(var) * _rng(rng).standard_normal(var.shape,
                                                                                          dtype=np.float32)
        members = np.asarray(members)
        counts = np.bincount(members, minlength=E)
        if hasattr(self.runtime, 'predict_partitioned') and B % E == 0 and (counts == B // E).all():
            order = np.argsort(members, kind='stable')           # rows grouped by member
            b = B // E
            mean, logvar = self.runtime.predict_partitioned(states[order].reshape(E, b, -1),
                                                            _f32(actions)[order].reshape(E, b, -1))
            d_mean, d_lv = np.empty_like(states), np.empty_like(states)
            d_mean[order], d_lv[order] = mean.reshape(B, -1), logvar.reshape(B, -1)
        else:
            mean, logvar = self.predict(states, actions)
            d_mean, d_lv = mean[members, np.arange(B)], logvar[members, np.arange(B)]
        if sample_aleatoric:
            d_mean = with_aleatoric(d_mean, d_lv, _rng(rng))
        return states + d_mean

    def rollout(self, states, actions, mode: str = 'ts1', rng=None, sample_aleatoric: bool = False,
                members=None) -> np.ndarray:
        """Propagate particles open loop: states (B,S) or (S,) (broadcast), actions (B,H,A) ->
        (B,H+1,S) including the start state. `mode` a propagation ('mean' = 'expectation');
        tsinf keeps `members` if given, else balanced random ones."""
        mode = propagation_name(mode)
        rng = _rng(rng)
        actions = _f32(actions)
        B, H = actions.shape[:2]
        s = np.broadcast_to(_f32(states), (B, self.state_dim)).copy()
        out = np.empty((B, H + 1, self.state_dim), dtype=np.float32)
        out[:, 0] = s
        if mode == 'tsinf' and members is None:
            members = balanced_members(B, self.ensemble_size, rng)
        for t in range(H):
            m = None if mode == 'expectation' else (
                balanced_members(B, self.ensemble_size, rng) if mode == 'ts1' else members)
            s = self.step(s, actions[:, t], members=m, rng=rng, sample_aleatoric=sample_aleatoric)
            out[:, t + 1] = s
        return out


def world_model(model) -> WorldModel:
    """`model` if it is a WorldModel, else one over the runtime `model`."""
    return model if isinstance(model, WorldModel) else WorldModel(model)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class PredictionErrorTracker:
    """Running RMSE of one-step predictions against the measured state at the predicted time.

    Predictions are (target time, predicted state); each measured state (t, x) settles every
    pending prediction whose target lies between the previous measurement and t, comparing with
    the measurement linearly interpolated at the target time (states usually arrive faster than
    the control period, so a sample exactly at the target is rare). Errors over the last
    `window` settled predictions, position and velocity separately.
    """

    def __init__(self, dof: int, window: int = 200, max_gap_s: float = 0.1, max_pending: int = 1000):
        self.dof = int(dof)
        self.max_gap_s = float(max_gap_s)
        self._pending: deque = deque(maxlen=max_pending)
        self._sq_q: deque = deque(maxlen=window)
        self._sq_qd: deque = deque(maxlen=window)
        self._prev: Optional[tuple[float, np.ndarray]] = None
        self.settled = 0
        self.missed = 0

    def reset(self) -> None:
        """Forget everything (e.g. after a model swap: errors belong to one model)."""
        self._pending.clear()
        self._sq_q.clear()
        self._sq_qd.clear()
        self._prev = None
        self.settled = self.missed = 0

    def add_prediction(self, target_t: float, next_state: np.ndarray) -> None:
        self._pending.append((float(target_t), np.asarray(next_state, dtype=np.float64)))

    def observe(self, t: float, state: np.ndarray) -> int:
        """A measured state; returns how many predictions it settled."""
        state = np.asarray(state, dtype=np.float64)
        prev, self._prev = self._prev, (float(t), state)
        if prev is not None and t <= prev[0]:
            self._prev = prev  # out of order or repeated: ignore
            return 0
        n = 0
        while self._pending and self._pending[0][0] <= t:
            target, predicted = self._pending.popleft()
            if prev is None or target < prev[0] or t - prev[0] > self.max_gap_s:
                self.missed += 1  # no measurement brackets it closely enough
                continue
            w = (target - prev[0]) / (t - prev[0])
            measured = prev[1] + w * (state - prev[1])
            err = predicted - measured
            self._sq_q.append(float(np.mean(err[:self.dof] ** 2)))
            self._sq_qd.append(float(np.mean(err[self.dof:] ** 2)))
            self.settled += 1
            n += 1
        return n

    def rmse(self) -> tuple[Optional[float], Optional[float]]:
        if not self._sq_q:
            return None, None
        return float(np.sqrt(np.mean(self._sq_q))), float(np.sqrt(np.mean(self._sq_qd)))
