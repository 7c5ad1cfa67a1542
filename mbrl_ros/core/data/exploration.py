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
        amp = np.asarray(amplitude, dtype=np.float64)  # one fraction, or one per joint (calibrated)
        if amp.ndim > 1 or (amp.ndim == 1 and amp.shape != (len(robot.effort_max),)) or \
                not np.all((amp > 0.0) & (amp <= 1.0)):
            raise ValueError(f'amplitude is a fraction of the effort limit in (0, 1] (one, or one per '
                             f'joint), got {amplitude}')
        if not 0.0 <= beta <= 4.0:
            raise ValueError(f'beta must be in [0, 4], got {beta}')
        if not 0.0 <= limit_margin < 0.5:
            raise ValueError(f'limit_margin is a fraction of the joint range in [0, 0.5), got {limit_margin}')
        self.kind, self.beta = kind, float(beta)
        self.amplitude = float(amp) if amp.ndim == 0 else amp.copy()
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


VELOCITY_FRACTION = 0.6    # calibration target: random commands reach this fraction of qd_max ...
VELOCITY_PERCENTILE = 95   # ... at this percentile of |qd| (arm7 at the old fixed 0.1: 0.5-0.9)


def calibrate_amplitude(robot, fraction: float = VELOCITY_FRACTION, percentile: float = VELOCITY_PERCENTILE,
                        seed: int = 0, transitions: int = 2000, iterations: int = 14, log=None,
                        **collect_kw) -> dict:
    """Per-joint exploration amplitudes (fractions of effort_max) from the arm's own dynamics.

    A fixed fraction of the effort limit means different motion on different arms: 0.1 x 87 Nm
    moves arm7 through its range, 0.1 x 2 Nm barely moves a light arm, 0.1 x 300 Nm (pybullet's
    iiwa lists 300 Nm on every joint) spins its 0.3 kg wrist until the simulation diverges. So
    short exploration runs in the simulator are scaled, joint by joint, until each joint's
    `percentile` of |qd| reaches `fraction` of its velocity limit (multiplicative steps,
    damped: the response is not linear once joints hit their limits). A joint that cannot get
    there at the full effort limit stays at 1.0 and its reached fraction says so.
    Returns {'amplitude': [...], 'reached_fraction': [...], 'target': ..., ...} (for bundle.yaml).
    """
    from mbrl_ros.core.data.collect import collect_sim
    from mbrl_ros.core.sim import SimError
    dof = len(robot.effort_max)
    amp = np.full(dof, 0.02)  # start low: a high start can make light links diverge at once
    reached = np.zeros(dof)
    best = (np.inf, amp, reached)  # coupled arms need not converge: keep the closest run
    for it in range(int(iterations)):
        try:
            # the same seed every run: the change in motion is the amplitude's, not the noise draw's
            ds = collect_sim(robot, transitions, amplitude=amp, seed=seed, progress=False, **collect_kw)
        except SimError:
            amp = np.maximum(amp / 4.0, 1e-4)  # too violent for the integrator: back off
            continue
        qd = np.abs(ds.states[:, dof:]) / np.asarray(robot.qd_max, dtype=np.float64)
        reached = np.percentile(qd, percentile, axis=0)
        ratio = fraction / np.maximum(reached, 1e-6)
        if log is not None:
            log(f'  amplitude calibration {it}: reached {np.round(reached, 2).tolist()} of qd_max')
        done = (np.abs(np.log(ratio)) < np.log(1.15)) | ((ratio > 1.0) & (amp >= 1.0))  # within 15 %, or at the limit
        miss = float(np.max(np.where(done, 0.0, np.abs(np.log(ratio)))))
        if miss < best[0]:
            best = (miss, amp.copy(), reached.copy())
        if np.all(done):
            break
        amp = np.clip(amp * np.clip(ratio, 0.25, 4.0) ** 0.8, 1e-4, 1.0)
    _, amp, reached = best
    return {'amplitude': [float(f'{a:.4g}') for a in amp], 'reached_fraction': [round(float(r), 3) for r in reached],
            'target': f'{percentile}th percentile of |qd| = {fraction} x qd_max per joint (random colored exploration)',
            'effort_nm': [float(f'{a * e:.4g}') for a, e in zip(amp, robot.effort_max)]}
