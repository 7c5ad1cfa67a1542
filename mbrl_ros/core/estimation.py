"""Joint state estimation (no ROS): validate raw joint samples and filter them.

A driver's samples arrive as (names, stamp, position, velocity | None, effort | None) in
whatever joint order the driver uses. `JointStateEstimator.update` puts them in the robot's
joint order, refuses anything it cannot trust (with a reason that names the problem, and a
counter), and runs a constant-velocity Kalman filter per joint, vectorised over joints:

    state x = [p, v] per joint,   x' = F x + w,   F = [[1, dt], [0, 1]]
    w: white acceleration noise of spectral density q  ->  Q = q [[dt^3/3, dt^2/2], [dt^2/2, dt]]
    measurement: p (always) and v (when the driver sends it), noise std r_p, r_v

A Kalman filter rather than a fixed alpha-beta filter because its gains follow the actual dt
of every sample, so jittery or variable-rate drivers are handled without retuning; with a
steady rate it converges to the equivalent alpha-beta gains. When the driver sends no
velocity, the position-only update still estimates v (the filter's v is a smoothed finite
difference).

Time: `stamp` (the sample's own time, e.g. header.stamp) drives the filter's dt; staleness is
judged on the receiver's clock (`received`, e.g. time.monotonic()), so a driver whose clock
differs from ours, or a simulator stamping sim time, is never mistaken for stale input.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from mbrl_ros.core.world_model import world_model


@dataclass
class FilterConfig:
    """Tuning of the per-joint constant-velocity Kalman filter."""
    # White-noise acceleration spectral density (rad^2/s^3): larger tracks faster, smooths less.
    process_noise: float = 10.0
    position_noise_std: float = 1e-4  # rad
    velocity_noise_std: float = 1e-2  # rad/s
    # A dt longer than this means the stream was interrupted: restart from the next sample
    # instead of extrapolating a stale velocity across the hole.
    gap_timeout_s: float = 0.1
    # Initial velocity std when the filter (re)starts without a measured velocity.
    initial_velocity_std: float = 1.0

    def check(self) -> Optional[str]:
        for name in ('process_noise', 'position_noise_std', 'velocity_noise_std',
                     'gap_timeout_s', 'initial_velocity_std'):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                return f'{name} must be a finite number > 0, got {v!r}'
        return None


@dataclass
class Estimate:
    """The filtered state, in the estimator's joint order."""
    stamp: float
    position: np.ndarray
    velocity: np.ndarray
    effort: Optional[np.ndarray]
    velocity_measured: bool  # False: velocity estimated by the filter from positions alone


@dataclass
class UpdateResult:
    estimate: Optional[Estimate]  # None when the sample was not used
    reason: Optional[str] = None  # why not (a rejection or a drop), None when accepted
    kind: Optional[str] = None    # the counter the refusal was counted under

    @property
    def accepted(self) -> bool:
        return self.estimate is not None


# Counter names, so the node's diagnostics and tests agree on them.
REJECT_KINDS = ('missing_joints', 'unknown_joints', 'duplicate_names', 'length_mismatch',
                'non_finite', 'bad_stamp')
DROP_KINDS = ('duplicate_stamp', 'out_of_order')


class JointStateEstimator:
    def __init__(self, joint_names: Sequence[str], config: FilterConfig | None = None,
                 stale_timeout_s: float = 0.1, ignore_unknown_joints: bool = False):
        names = [str(n) for n in joint_names]
        if not names:
            raise ValueError('joint_names is empty')
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f'joint_names has duplicates: {dup}')
        self.joint_names = names
        self._index = {n: i for i, n in enumerate(names)}
        self.config = config or FilterConfig()
        reason = self.config.check()
        if reason:
            raise ValueError(reason)
        if not stale_timeout_s > 0:
            raise ValueError(f'stale_timeout_s must be > 0, got {stale_timeout_s}')
        self.stale_timeout_s = float(stale_timeout_s)
        self.ignore_unknown_joints = bool(ignore_unknown_joints)
        self.counters: Counter = Counter({k: 0 for k in
                                          ('accepted', 'reinitialised', 'clock_jumps',
                                           'effort_dropped', *REJECT_KINDS, *DROP_KINDS)})
        self._order_cache: tuple[tuple, np.ndarray] | None = None
        n = len(names)
        self._x = np.zeros((n, 2))       # [p, v] per joint
        self._P = np.zeros((n, 2, 2))    # covariance per joint
        self._stamp: Optional[float] = None
        self._received: Optional[float] = None
        self.last: Optional[Estimate] = None

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    # ---- public -------------------------------------------------------------------------
    def update(self, names: Sequence[str], stamp: float, position, velocity=None, effort=None,
               received: Optional[float] = None) -> UpdateResult:
        """Validate one raw sample and, if it is usable, advance the filter with it.

        `velocity`/`effort` may be None or empty (not sent). `received` is the receiver's
        clock at arrival (for staleness); it defaults to `stamp`.
        """
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            return self._refuse('bad_stamp', f'stamp {stamp!r} is not a number')
        if not math.isfinite(stamp) or stamp < 0:
            return self._refuse('bad_stamp', f'stamp {stamp} is not a finite time >= 0')

        order = self._order(names)
        if isinstance(order, UpdateResult):
            return order
        count = len(names)

        p = _vector(position)
        if p is None or p.size != count:
            return self._refuse('length_mismatch',
                                f'{count} names but {0 if p is None else p.size} positions')
        v = _vector(velocity)
        if v is not None and v.size != count:
            return self._refuse('length_mismatch', f'{count} names but {v.size} velocities')
        e = _vector(effort)
        if e is not None and e.size != count:
            return self._refuse('length_mismatch', f'{count} names but {e.size} efforts')
        # Only the robot's joints matter (ignored extra joints may carry anything).
        pos = p[order]
        vel = v[order] if v is not None else None
        bad = ~np.isfinite(pos) if vel is None else ~(np.isfinite(pos) & np.isfinite(vel))
        if bad.any():
            which = [self.joint_names[i] for i in np.flatnonzero(bad)]
            return self._refuse('non_finite', f'non-finite position/velocity for {which}')

        if self._stamp is not None:
            if stamp == self._stamp:
                return self._refuse('duplicate_stamp', f'duplicate stamp {stamp:.9f}')
            if stamp < self._stamp:
                if self._stamp - stamp <= self.config.gap_timeout_s:
                    return self._refuse('out_of_order',
                                        f'stamp {stamp:.9f} older than last {self._stamp:.9f}')
                # Far into the past: the source's clock restarted (sim reset, bag loop).
                # Dropping forever would wedge the estimator, so start over from here.
                self.counters['clock_jumps'] += 1
                self._stamp = None

        eff = e[order] if e is not None else None
        if eff is not None and not np.isfinite(eff).all():
            # Effort is only passed through; some drivers send NaN when they cannot measure it.
            self.counters['effort_dropped'] += 1
            eff = None

        if self._stamp is None or stamp - self._stamp > self.config.gap_timeout_s:
            if self._stamp is not None:
                self.counters['reinitialised'] += 1
            self._initialise(pos, vel)
        else:
            self._predict(stamp - self._stamp)
            self._correct(pos, vel)
        self._stamp = stamp
        self._received = stamp if received is None else float(received)
        self.counters['accepted'] += 1
        self.last = Estimate(stamp=stamp, position=self._x[:, 0].copy(),
                             velocity=self._x[:, 1].copy(), effort=eff,
                             velocity_measured=vel is not None)
        return UpdateResult(self.last)

    def is_stale(self, now: float) -> bool:
        """True when no sample was accepted within stale_timeout_s before `now` (receiver clock)."""
        return self._received is None or now - self._received > self.stale_timeout_s

    def age(self, now: float) -> Optional[float]:
        """Seconds since the last accepted sample (receiver clock), None before the first."""
        return None if self._received is None else now - self._received

    def reset(self) -> None:
        """Forget the filter state; the next sample initialises it."""
        self._stamp = None
        self._received = None
        self.last = None

    @property
    def rejected_total(self) -> int:
        return sum(self.counters[k] for k in REJECT_KINDS)

    @property
    def dropped_total(self) -> int:
        return sum(self.counters[k] for k in DROP_KINDS)

    # ---- internals ----------------------------------------------------------------------
    def _refuse(self, kind: str, reason: str) -> UpdateResult:
        self.counters[kind] += 1
        return UpdateResult(None, reason, kind)

    def _order(self, names) -> np.ndarray | UpdateResult:
        """Index array taking message order to robot order, or the refusal."""
        try:
            key = tuple(names)
            hash(key)
        except TypeError:
            return self._refuse('missing_joints', 'names is not a sequence of strings')
        # Drivers send the same order every time: one dict lookup per message after the first.
        cached = self._order_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        if len(set(key)) != len(key):
            dup = sorted({str(n) for n in key if key.count(n) > 1})
            return self._refuse('duplicate_names', f'joint names repeated in message: {dup}')
        where = {n: i for i, n in enumerate(key)}
        missing = [n for n in self.joint_names if n not in where]
        if missing:
            return self._refuse('missing_joints', f'missing joints {missing}')
        unknown = [str(n) for n in key if n not in self._index]
        if unknown and not self.ignore_unknown_joints:
            return self._refuse('unknown_joints', f'unknown joints {unknown} '
                                f'(expected exactly {self.joint_names})')
        order = np.array([where[n] for n in self.joint_names], dtype=np.intp)
        self._order_cache = (key, order)
        return order

    def _initialise(self, pos: np.ndarray, vel: Optional[np.ndarray]) -> None:
        c = self.config
        self._x[:, 0] = pos
        self._P[:] = 0.0
        self._P[:, 0, 0] = c.position_noise_std ** 2
        if vel is None:
            # Unknown velocity: start at rest but uncertain, so the first position updates
            # pull it to the true rate within a few samples.
            self._x[:, 1] = 0.0
            self._P[:, 1, 1] = c.initial_velocity_std ** 2
        else:
            self._x[:, 1] = vel
            self._P[:, 1, 1] = c.velocity_noise_std ** 2

    def _predict(self, dt: float) -> None:
        q = self.config.process_noise
        x, P = self._x, self._P
        x[:, 0] += dt * x[:, 1]
        # P <- F P F^T + Q, written out for F = [[1, dt], [0, 1]] (all joints at once).
        p00, p01, p11 = P[:, 0, 0], P[:, 0, 1], P[:, 1, 1]
        n00 = p00 + 2 * dt * p01 + dt * dt * p11 + q * dt ** 3 / 3
        n01 = p01 + dt * p11 + q * dt ** 2 / 2
        n11 = p11 + q * dt
        P[:, 0, 0], P[:, 0, 1], P[:, 1, 0], P[:, 1, 1] = n00, n01, n01, n11

    def _correct(self, pos: np.ndarray, vel: Optional[np.ndarray]) -> None:
        c = self.config
        x, P = self._x, self._P
        rp = c.position_noise_std ** 2
        if vel is None:
            # Scalar position measurement per joint: H = [1, 0].
            s = P[:, 0, 0] + rp
            k0, k1 = P[:, 0, 0] / s, P[:, 1, 0] / s
            y = pos - x[:, 0]
            x[:, 0] += k0 * y
            x[:, 1] += k1 * y
            p00, p01, p11 = P[:, 0, 0].copy(), P[:, 0, 1].copy(), P[:, 1, 1].copy()
            P[:, 0, 0] = (1 - k0) * p00
            P[:, 0, 1] = P[:, 1, 0] = (1 - k0) * p01
            P[:, 1, 1] = p11 - k1 * p01
            return
        # Full state measured: H = I, R = diag(rp, rv); K = P (P + R)^-1 per joint.
        R = np.zeros_like(P)
        R[:, 0, 0] = rp
        R[:, 1, 1] = c.velocity_noise_std ** 2
        S = P + R
        K = np.linalg.solve(S, P).transpose(0, 2, 1)  # P symmetric, S symmetric: (S^-1 P)^T = P S^-1
        y = np.stack([pos, vel], axis=1) - x
        x += np.einsum('nij,nj->ni', K, y)
        P[:] = P - K @ P
        P[:] = 0.5 * (P + P.transpose(0, 2, 1))  # keep it symmetric against round-off


def _vector(values) -> Optional[np.ndarray]:
    """A 1-D float array, or None for an absent/empty field; raises nothing."""
    if values is None:
        return None
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return np.full(1, np.nan)  # unparseable: the caller's length/finite checks refuse it
    return a if a.size else None


class DelayCompensator:
    """The state at the time a command will act, predicted with the world model.

    A command planned from the state stamped t reaches the actuator at t + d (the state's own
    age when the plan starts, the plan itself, transport, the robot picking it up): about one
    control period in the ROS stack. Planning from the state at t and applying the first action
    at t + d is planning for a state the arm has already left; at 50 Hz with d ~ 1-1.5 periods
    that made the reach oscillate around the goal (docs/demo.md, "Latency"). So the planner
    starts from the prediction of the state at t + d, under the command acting meanwhile (the
    previous one), with the ensemble mean (`core.world_model.WorldModel.mean_delta`): whole steps
    of the model's dt, then the fraction of one more step (linear in the predicted delta).

    `predict(x, u, delay_s)`: x (S,) state [q, qd], u (A,) the command acting during the delay.
    Returns x unchanged for delay_s <= 0 and anything non-finite out of the model (it never
    makes the state worse than the measurement).
    """

    def __init__(self, ensemble, dt: float, max_delay_s: float = 0.1):
        if not dt > 0:
            raise ValueError(f'dt must be > 0, got {dt}')
        self.model = world_model(ensemble)   # an EnsembleRuntime or a WorldModel
        self.dt = float(dt)
        self.max_delay_s = float(max_delay_s)

    def predict(self, x, u, delay_s: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        u = np.asarray(u, dtype=np.float64).reshape(1, -1)
        delay = min(float(delay_s), self.max_delay_s)
        if not delay > 0 or not math.isfinite(delay):
            return x
        steps = delay / self.dt
        whole, frac = int(steps), steps - int(steps)
        out = x.copy()
        for k in range(whole + (1 if frac > 1e-6 else 0)):
            delta = self.model.mean_delta(out[None], u)[0][0]
            out = out + (delta if k < whole else frac * delta)
        return out if np.all(np.isfinite(out)) else x
