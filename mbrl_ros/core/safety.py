"""The safety filter: the last gate before the actuators (ROS-free core of `safety_filter`).

Every control period `SafetyFilter.step()` chooses exactly one command:

1. `mpc`    — the MPC command, if it is fresh and the ensemble is confident about it;
2. `policy` — else the distilled policy's command, under the same conditions;
3. `hold`   — else joint damping u = −Kd·q̇ (gravity compensation is the robot's job).

A source is refused (and the next one tried) when its command is missing, malformed
(wrong length, non-numeric, NaN/Inf), stale (age > command_timeout_s, or stamped in the
future), uncertain (disagreement above the threshold, non-finite, or missing unless
allowed), or when the command that would be sent pushes a joint that is predicted to be
inside its limit margin further out (see `joint_limit_violation`).

An accepted command is clamped to the effort limits, then its change from the last sent
command is limited to `max_effort_step` × effort limit per period.

Design decision — hold bypasses the rate limit: hold is entered because something is
wrong (stale planner, bad state, uncertain model), and continuing to ramp a possibly
harmful command down over several periods is the worse risk. The hold command −Kd·q̇ only
removes kinetic energy, so switching to it at once cannot drive the arm. (It is still
clamped to the effort limits.) Leaving hold is rate-limited like any other change.

If the state itself is missing, stale or non-finite, the filter cannot check limits nor
damp, so it holds with zero effort (the robot's gravity compensation keeps the arm up).

Whatever arrives, the output is finite, within the effort limits and — except on entering
hold — within the rate limit of the previous output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .planning.config import Settings, setting

MODES = ('mpc', 'policy', 'hold')


@dataclass(frozen=True)
class SafetySettings(Settings):
    command_timeout_s: float = setting(0.1, 0.001, 10.0, 'a command older than this is stale')
    state_timeout_s: float = setting(0.1, 0.001, 10.0, 'a state older than this is stale: hold with zero effort')
    future_tolerance_s: float = setting(0.05, 0.0, 1.0, 'a stamp further than this in the future is refused')
    uncertainty_threshold: float = setting(1.0, 0.0, 1e6, 'refuse a command whose ensemble disagreement exceeds this')
    allow_missing_uncertainty: bool = setting(False, help='accept a command that reports no disagreement')
    effort_limit_scale: float = setting(1.0, 0.0, 1.0, 'fraction of the robot effort limits that may be sent')
    max_effort_step: float = setting(0.25, 0.001, 2.0, 'max change per period, as a fraction of the effort limit')
    hold_damping: float = setting(2.0, 0.0, 1000.0, 'hold mode joint damping Kd [Nm·s/rad]')
    joint_limit_margin: float = setting(0.05, 0.0, 1.0, 'margin inside the joint limits [rad]')
    limit_lookahead_s: float = setting(0.1, 0.0, 2.0, 'kinematic look-ahead q + qd·t for the joint-limit check [s]')

    _what = 'safety settings'


@dataclass(frozen=True)
class SafetyLimits:
    """The robot limits the filter enforces: (dof,) arrays."""
    q_min: np.ndarray
    q_max: np.ndarray
    effort_max: np.ndarray

    @classmethod
    def from_robot(cls, robot) -> 'SafetyLimits':
        return cls(np.asarray(robot.q_min, float).copy(), np.asarray(robot.q_max, float).copy(),
                   np.asarray(robot.effort_max, float).copy())

    def __post_init__(self):
        shapes = {np.shape(self.q_min), np.shape(self.q_max), np.shape(self.effort_max)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f'q_min, q_max and effort_max must be (dof,) arrays of one length, got {shapes}')
        if not (np.all(np.isfinite(self.q_min)) and np.all(np.isfinite(self.q_max))
                and np.all(np.isfinite(self.effort_max))):
            raise ValueError('robot limits must be finite')
        if np.any(self.effort_max <= 0) or np.any(self.q_max <= self.q_min):
            raise ValueError('need effort_max > 0 and q_max > q_min for every joint')

    @property
    def dof(self) -> int:
        return int(np.shape(self.q_min)[0])


@dataclass(frozen=True)
class CommandLimits:
    """What the safety filter lets through, for the planners that feed it (one owner: the filter).

    effort: (dof,) |u| <= effort [Nm] (the robot limits times effort_limit_scale). step: (dof,) the
    largest change of the sent command from one filter period to the next [Nm]. joint_margin: (dof,)
    the keep-out band inside each joint range [rad]. A planner that plans within these plans what the
    arm will get: outside them the filter clamps and rate-limits, and a plan that counted on full
    effort stops short (real-arm template: 6-11 cm).
    """
    effort: np.ndarray
    step: np.ndarray
    joint_margin: np.ndarray

    def __post_init__(self):
        for name in ('effort', 'step', 'joint_margin'):
            object.__setattr__(self, name, np.array(getattr(self, name), dtype=np.float64).reshape(-1))
        n = {self.effort.shape, self.step.shape, self.joint_margin.shape}
        if len(n) != 1 or self.effort.size == 0:
            raise ValueError(f'effort, step and joint_margin need one entry per joint each, got sizes '
                             f'{self.effort.size}, {self.step.size}, {self.joint_margin.size}')
        for name in ('effort', 'step', 'joint_margin'):
            v = getattr(self, name)
            if not np.all(np.isfinite(v)) or np.any(v < 0):
                raise ValueError(f'{name} must be finite and >= 0, got {v.tolist()}')
        if np.any(self.step <= 0):
            raise ValueError(f'step must be > 0 (no change could ever be sent), got {self.step.tolist()}')

    @classmethod
    def from_settings(cls, limits: 'SafetyLimits', settings: 'SafetySettings') -> 'CommandLimits':
        return cls(limits.effort_max * settings.effort_limit_scale, limits.effort_max * settings.max_effort_step,
                   np.full(limits.dof, settings.joint_limit_margin))

    @property
    def dof(self) -> int:
        return int(self.effort.shape[0])

    def bound(self, u, last=None) -> np.ndarray:
        """`u` as the filter would send it after `last` (None: unknown, no rate limit): clamped to
        +-effort, its change from `last` cut to +-step. The filter's own order and arithmetic."""
        bounded = np.clip(np.asarray(u, dtype=np.float64), -self.effort, self.effort)
        if last is None:
            return bounded
        last = np.asarray(last, dtype=np.float64)
        change = bounded - last
        sent = np.where(np.abs(change) > self.step, last + np.clip(change, -self.step, self.step), bounded)
        return np.clip(sent, -self.effort, self.effort)

    def same_as(self, other: Optional['CommandLimits']) -> bool:
        return (other is not None and np.array_equal(self.effort, other.effort)
                and np.array_equal(self.step, other.step) and np.array_equal(self.joint_margin, other.joint_margin))

    def describe(self) -> str:
        f = (lambda v: '[' + ' '.join(f'{x:.3g}' for x in v) + ']')
        return f'effort {f(self.effort)} Nm, step {f(self.step)} Nm/period, joint margin {f(self.joint_margin)} rad'


@dataclass
class CommandSample:
    """The latest command of one source, as received (anything may be wrong with it).

    values: efforts (dof,). stamp: seconds (the state it was planned from). disagreement:
    the ensemble's uncertainty about it (None: not reported). predicted_q: optional one-step
    prediction of q under this command (e.g. from the world model), used by the limit check.
    """
    values: Any
    stamp: Any
    disagreement: Any = None
    predicted_q: Any = None


@dataclass
class StateSample:
    q: Any
    qd: Any
    stamp: Any


@dataclass
class SafetyOutput:
    command: np.ndarray                 # (dof,) finite, within limits: send this
    mode: str                           # 'mpc' | 'policy' | 'hold'
    reasons: dict = field(default_factory=dict)   # source -> why it was refused this period
    clamped: bool = False               # the chosen command exceeded the effort limits
    rate_limited: bool = False          # its change was cut to the rate limit


class SafetyFilter:
    """Chooses, bounds and rate-limits one effort command per control period."""

    def __init__(self, limits: SafetyLimits, settings: Optional[SafetySettings] = None):
        self.limits = limits
        self.dof = limits.dof
        self.configure(settings or SafetySettings())
        self.last_command = np.zeros(self.dof)
        self.mode_counts = {m: 0 for m in MODES}
        self.last_output: Optional[SafetyOutput] = None

    @classmethod
    def for_robot(cls, robot, settings: Optional[SafetySettings] = None) -> 'SafetyFilter':
        return cls(SafetyLimits.from_robot(robot), settings)

    def configure(self, settings: SafetySettings) -> None:
        """Apply new settings (takes effect at the next step)."""
        self.settings = settings.validated()
        # What it enforces, in the form the planners are told (the limits topic): one computation.
        self.command_limits = CommandLimits.from_settings(self.limits, self.settings)
        self.effort_limit = self.command_limits.effort
        self.max_step = self.command_limits.step
        self._lo = self.limits.q_min + self.settings.joint_limit_margin
        self._hi = self.limits.q_max - self.settings.joint_limit_margin

    def reset(self) -> None:
        """Forget the last sent command (e.g. the robot was restarted and applies zero effort)."""
        self.last_command = np.zeros(self.dof)

    # ---- one control period -------------------------------------------------------------------
    def step(self, now: float, state: Optional[StateSample], mpc: Optional[CommandSample] = None,
             policy: Optional[CommandSample] = None) -> SafetyOutput:
        reasons = {}
        out = None
        q_qd, why = self._check_state(now, state)
        if q_qd is None:
            reasons['state'] = why
            out = SafetyOutput(np.zeros(self.dof), 'hold', reasons)
        else:
            q, qd = q_qd
            for name, sample in (('mpc', mpc), ('policy', policy)):
                out, why = self._try_source(name, now, sample, q, qd)
                if out is not None:
                    break
                reasons[name] = why
            if out is None:
                # Hold: dissipative by construction, so it skips the rate limit (module docstring).
                hold = -self.settings.hold_damping * qd
                bounded = np.clip(hold, -self.effort_limit, self.effort_limit)
                out = SafetyOutput(bounded, 'hold', reasons, clamped=bool(np.any(bounded != hold)))
            out.reasons = reasons
        # Last line of defence: nothing non-finite or out of bounds leaves this function.
        cmd = np.where(np.isfinite(out.command), out.command, 0.0)
        out.command = np.clip(cmd, -self.effort_limit, self.effort_limit)
        self.last_command = out.command.copy()
        self.mode_counts[out.mode] += 1
        self.last_output = out
        return out

    # ---- checks -------------------------------------------------------------------------------
    def _check_state(self, now, state):
        if state is None:
            return None, 'no state received'
        age, why = self._age(now, getattr(state, 'stamp', None), self.settings.state_timeout_s)
        if why:
            return None, 'state ' + why
        q = as_vector(getattr(state, 'q', None), self.dof)
        qd = as_vector(getattr(state, 'qd', None), self.dof)
        if q is None or qd is None:
            return None, f'state is not {self.dof} finite positions and velocities'
        return (q, qd), None

    def _try_source(self, name, now, sample, q, qd):
        """(output, None) when `sample` may be sent, else (None, reason)."""
        if sample is None:
            return None, 'no command received'
        _, why = self._age(now, getattr(sample, 'stamp', None), self.settings.command_timeout_s)
        if why:
            return None, 'command ' + why
        u = as_vector(getattr(sample, 'values', None), self.dof)
        if u is None:
            return None, f'command is not {self.dof} finite efforts'
        why = self._uncertainty_problem(getattr(sample, 'disagreement', None))
        if why:
            return None, why
        bounded = np.clip(u, -self.effort_limit, self.effort_limit)
        # Compared on the change, not on last + step == bounded, which float rounding breaks
        # (it counted ~90 % of unlimited periods as rate-limited).
        limited = np.abs(bounded - self.last_command) > self.max_step
        sent = self.command_limits.bound(u, self.last_command)
        predicted = as_vector(getattr(sample, 'predicted_q', None), self.dof)
        why = joint_limit_violation(q, qd, sent, self._lo, self._hi, self.settings.limit_lookahead_s,
                                    predicted)
        if why:
            return None, why
        return SafetyOutput(sent, name, clamped=bool(np.any(bounded != u)),
                            rate_limited=bool(np.any(limited))), None

    def _age(self, now, stamp, timeout):
        try:
            age = float(now) - float(stamp)
        except (TypeError, ValueError, OverflowError):
            return None, 'has no valid time stamp'
        if not math.isfinite(age):
            return None, 'has no valid time stamp'
        if age > timeout:
            return age, f'is stale ({age * 1e3:.0f} ms old > {timeout * 1e3:.0f} ms)'
        if age < -self.settings.future_tolerance_s:
            return age, f'is stamped {-age * 1e3:.0f} ms in the future'
        return age, None

    def _uncertainty_problem(self, disagreement) -> Optional[str]:
        if disagreement is None:
            return None if self.settings.allow_missing_uncertainty else 'no ensemble disagreement reported'
        try:
            d = float(disagreement)
        except (TypeError, ValueError, OverflowError):
            return 'disagreement is not a number'
        if not math.isfinite(d) or d < 0:
            return f'disagreement {d} is not a finite non-negative number'
        if d > self.settings.uncertainty_threshold:
            return f'uncertain: disagreement {d:.3g} > {self.settings.uncertainty_threshold:.3g}'
        return None


def joint_limit_violation(q, qd, u, lo, hi, lookahead_s, predicted_q=None) -> Optional[str]:
    """Why command `u` must be refused near the joint limits, or None.

    A joint is "at risk" when its predicted position (the caller's one-step prediction if
    given, else q + qd·lookahead; and the current q itself) is outside [lo, hi] (the limits
    with their margin). Refused: a command whose effort at an at-risk joint pushes further
    out. Efforts pushing back in, or zero, are allowed, so the arm can always be brought back.
    """
    q_pred = predicted_q if predicted_q is not None else q + qd * lookahead_s
    low = (np.minimum(q, q_pred) < lo) & (u < 0.0)
    high = (np.maximum(q, q_pred) > hi) & (u > 0.0)
    if np.any(low) or np.any(high):
        j = int(np.flatnonzero(low | high)[0])
        side = 'lower' if low[j] else 'upper'
        return f'joint {j} predicted past its {side} limit margin and the command pushes it further'
    return None


def as_vector(x, n: int) -> Optional[np.ndarray]:
    """`x` as a finite float (n,) array, or None if it is not exactly that."""
    if x is None or isinstance(x, (str, bytes)):
        return None
    try:
        v = np.array(x, dtype=float)
    except (TypeError, ValueError, OverflowError):
        return None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        return None
    return v
