"""What the world_model node computes, without ROS: one-step predictions of the loaded
ensemble for the current state and command, and the live error of those predictions
against the states that were later measured.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Prediction:
    next_state: np.ndarray   # (S,) state + ensemble-mean delta
    uncertainty: float       # ensemble disagreement (EnsembleRuntime.disagreement_from)


def predict_next(bundle, state: np.ndarray, action: np.ndarray) -> Prediction:
    """One state (S,), one action (A,) through the bundle's ensemble."""
    rt = bundle.ensemble
    mean, _ = rt.predict(state[None, :], action[None, :])
    delta = mean[:, 0, :].astype(np.float64).mean(axis=0)
    return Prediction(state + delta, float(rt.disagreement_from(mean)[0]))


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
