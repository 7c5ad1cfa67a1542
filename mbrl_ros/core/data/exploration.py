"""Exploration commands for collecting world-model data, always within the effort limits.

Two base noises, scaled to `amplitude` x effort_max per joint:
- 'uniform': independent uniform samples each control period (white);
- 'colored': Gaussian noise with power spectrum ~ 1/f^beta along time (as iCEM's action
  noise, Pinneri et al. 2020): beta=0 is white, beta=1 pink, beta=2 brown. Correlated
  commands move the arm through larger parts of the workspace than white noise, which
  mostly cancels itself out.
plus a joint-limit term: inside a margin near a limit the command is pushed back (and motion
towards the limit damped), so the data covers the workspace instead of piling up against the
limit stops, where the dynamics are dominated by contact.
"""
from __future__ import annotations

import numpy as np

KINDS = ('colored', 'uniform')


def colored_noise(beta: float, shape: tuple[int, ...], rng: np.random.Generator,
                  fmin: float = 0.0) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise with PSD ~ 1/f^beta along the last axis.

    Shapes the spectrum of white noise in the frequency domain (numpy FFT), following
    Timmer & Koenig (1995) as the `colorednoise` package and iCEM do.
    """
    n = int(shape[-1])
    if n < 2:
        return rng.standard_normal(shape)
    f = np.fft.rfftfreq(n)
    fmin = max(float(fmin), 1.0 / n)  # the lowest resolvable frequency; also avoids f=0
    s = np.where(f < fmin, fmin, f) ** (-beta / 2.0)
    w = s[1:].copy()
    w[-1] *= (1 + (n % 2)) / 2.0  # the Nyquist bin is real for even n
    sigma = 2 * np.sqrt(np.sum(w ** 2)) / n
    size = tuple(shape[:-1]) + (len(f),)
    sr = rng.standard_normal(size) * s
    si = rng.standard_normal(size) * s
    if n % 2 == 0:
        si[..., -1] = 0.0
        sr[..., -1] *= np.sqrt(2.0)
    si[..., 0] = 0.0  # DC is real
    sr[..., 0] *= np.sqrt(2.0)
    y = np.fft.irfft(sr + 1j * si, n=n, axis=-1) / sigma
    return y


def spectrum_slope(x: np.ndarray) -> float:
    """Fitted log-log slope of the mean power spectrum along the last axis (~ -beta)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    p = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    p = p.reshape(-1, p.shape[-1]).mean(0)
    f = np.fft.rfftfreq(x.shape[-1])
    keep = slice(1, len(f) - 1)  # skip DC and Nyquist
    return float(np.polyfit(np.log(f[keep]), np.log(p[keep]), 1)[0])


class Exploration:
    """Per-episode exploration command generator for one arm.

        expl = Exploration(robot, 'colored', amplitude=0.3, beta=1.0, seed=0)
        expl.reset(episode_len)
        a = expl(q, qd)          # (dof,) effort, |a| <= effort_max
    """

    def __init__(self, robot, kind: str = 'colored', amplitude: float = 0.3, beta: float = 1.0,
                 seed: int | np.random.Generator = 0, limit_margin: float = 0.1,
                 limit_gain: float = 1.0, rng: np.random.Generator | None = None):
        if kind not in KINDS:
            raise ValueError(f'exploration must be one of {list(KINDS)}, got {kind!r}')
        if not 0.0 < amplitude <= 1.0:
            raise ValueError(f'amplitude is a fraction of the effort limit in (0, 1], got {amplitude}')
        if not 0.0 <= beta <= 4.0:
            raise ValueError(f'beta must be in [0, 4], got {beta}')
        if not 0.0 <= limit_margin < 0.5:
            raise ValueError(f'limit_margin is a fraction of the joint range in [0, 0.5), got {limit_margin}')
        self.kind, self.amplitude, self.beta = kind, float(amplitude), float(beta)
        self.limit_margin, self.limit_gain = float(limit_margin), float(limit_gain)
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.effort_max = np.asarray(robot.effort_max, dtype=np.float64)
        self.q_min = np.asarray(robot.q_min, dtype=np.float64)
        self.q_max = np.asarray(robot.q_max, dtype=np.float64)
        self.qd_max = np.asarray(robot.qd_max, dtype=np.float64)
        span = self.q_max - self.q_min
        # Continuous joints (no finite range) get no limit term.
        self._limited = np.isfinite(span) & (span > 0)
        self._margin = np.where(self._limited, limit_margin * np.where(self._limited, span, 0.0), 0.0)
        self._limited &= self._margin > 0  # limit_margin=0 switches the term off
        self._seq = np.zeros((0, len(self.effort_max)))
        self._k = 0

    @property
    def dof(self) -> int:
        return len(self.effort_max)

    @property
    def push_margin(self) -> np.ndarray:
        """(dof,) width (rad) of the band at each limit where `limit_push` acts (0: no push)."""
        return self._margin.copy()

    def base_sequence(self, n: int) -> np.ndarray:
        """(n, dof) base noise in Nm, already within ±amplitude·effort_max."""
        scale = self.amplitude * self.effort_max
        if self.kind == 'uniform':
            return self.rng.uniform(-1.0, 1.0, size=(n, self.dof)) * scale
        x = colored_noise(self.beta, (self.dof, n), self.rng).T
        # Unit variance -> ~95 % within ±scale/... : use 1/2.5 so clipping is rare and the
        # spectrum shape survives it.
        return np.clip(x / 2.5, -1.0, 1.0) * scale

    def reset(self, episode_len: int) -> None:
        self._seq = self.base_sequence(max(int(episode_len), 1))
        self._k = 0

    def limit_push(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """Effort that pushes a joint back out of the margin near its limits."""
        m = np.where(self._limited, self._margin, 1.0)
        low = np.where(self._limited, np.clip((self.q_min + m - q) / m, 0.0, 1.0), 0.0)
        high = np.where(self._limited, np.clip((q - (self.q_max - m)) / m, 0.0, 1.0), 0.0)
        # Damp motion towards the limit in proportion to depth into the margin.
        towards = np.where(low > 0, np.minimum(qd, 0.0), 0.0) + np.where(high > 0, np.maximum(qd, 0.0), 0.0)
        vel_term = (low + high) * np.clip(towards / np.maximum(self.qd_max, 1e-9), -1.0, 1.0)
        return self.limit_gain * self.effort_max * (low - high - vel_term)

    def __call__(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        if self._k >= len(self._seq):
            self.reset(max(len(self._seq), 100))  # ran past the planned episode: keep going
        base = self._seq[self._k]
        self._k += 1
        a = base + self.limit_push(np.asarray(q, np.float64), np.asarray(qd, np.float64))
        # Final clamp: whatever the terms add up to, never outside the actuator limits.
        return np.clip(a, -self.effort_max, self.effort_max)
