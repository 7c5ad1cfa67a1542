"""Typed planner and cost settings: plain data, validated in one place.

Each field carries its range and a one-line description in its metadata so that the
`mpc_controller` node can build its ROS parameter spec from these dataclasses
(`field_specs()`), and a range lives in exactly one place.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional


def setting(default, lo=None, hi=None, help='', choices=None):
    """A dataclass field with its range, choices and one-line help in the metadata."""
    meta = {'help': help}
    if lo is not None or hi is not None:
        meta['range'] = (lo, hi)
    if choices is not None:
        meta['choices'] = tuple(choices)
    return field(default=default, metadata=meta)


class Settings:
    """`errors`, `validated` and `replace` of the frozen settings dataclasses (planner, cost, safety
    filter): ranges and choices from each field's metadata, `_cross_errors` for rules across fields."""
    _what = 'settings'   # (no annotation: a class attribute, not a dataclass field)

    def errors(self) -> list[str]:
        """Why these settings cannot be used (empty when they can)."""
        return range_errors(self) + self._cross_errors()

    def _cross_errors(self) -> list[str]:
        return []

    def validated(self):
        errs = self.errors()
        if errs:
            raise ValueError(f'invalid {self._what}: ' + '; '.join(errs))
        return self

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


PLANNERS = ('cem', 'icem')
EXECUTE = ('best', 'mean')
SHIFT_FILL = ('zero', 'last')


@dataclass(frozen=True)
class PlannerConfig(Settings):
    """Settings of the CEM / iCEM trajectory optimiser.

    `planner='cem'` is the classic cross-entropy method (white noise, fixed population, no
    elite reuse); `planner='icem'` adds coloured noise (`noise_beta`), a population that
    shrinks by `population_decay` per iteration, reuse of a fraction of the elites across
    iterations and time steps, and the mean as a candidate in the last iteration.
    """
    planner: str = setting('icem', help='trajectory optimiser', choices=PLANNERS)
    horizon: int = setting(8, 1, 100, 'planning horizon in control steps')
    num_samples: int = setting(100, 4, 10000, 'action sequences sampled in the first iteration')
    num_iterations: int = setting(3, 1, 50, 'optimiser iterations per plan (fewer if the time budget cuts)')
    num_elites: int = setting(10, 2, 1000, 'best samples that refit the sampling distribution')
    alpha: float = setting(0.1, 0.0, 0.99, 'momentum: weight of the old mean/std when refitting')
    init_std: float = setting(0.25, 0.01, 2.0, 'initial sampling std, as a fraction of the action half-range')
    # 0.005, not 0.02: with the std carried near the goal, a floor of 2 % of the effort range
    # (1.7 Nm on arm7's big joints) kept re-randomising the executed mean by that much.
    min_std: float = setting(0.005, 0.0, 1.0, 'floor of the sampling std (fraction of half-range)')
    noise_beta: float = setting(2.0, 0.0, 4.0, 'iCEM coloured-noise exponent (0 = white)')
    population_decay: float = setting(1.25, 1.0, 4.0, 'iCEM population shrink factor per iteration')
    keep_elites_fraction: float = setting(0.3, 0.0, 1.0, 'iCEM: fraction of elites carried to the next iteration / step')
    shift_fill: str = setting('zero', help='action appended when the warm start is shifted', choices=SHIFT_FILL)
    execute: str = setting('mean', help="plan returned: best sample seen ('best') or the final mean ('mean')",
                      choices=EXECUTE)
    # 14.5, not 15: the plan ends within its budget up to timer jitter; this keeps p99 <= 15 ms
    # (arm7, 100 goals: p99 14.46 ms, 95 %; at 15.0: p99 15.02-15.26 ms)
    time_budget_ms: float = setting(14.5, 0.0, 10000.0, 'anytime budget per plan; 0 = no limit')
    seed: int = setting(0, 0, 2 ** 31 - 1, 'random seed of the sampler')
    # 1.5 near the goal: arm7, 12 chained goals (seed 77, no budget): final distance at 5 s median 5.4 -> 1.2 mm,
    # settled within 5 mm 33 -> 100 % of goals (docs/mpc_controller.md, "Settling at the goal").
    std_carry: float = setting(1.5, 0.0, 10.0, 'near the goal, each plan starts from the last plan\'s final sampling '
                               'std times this (capped at init_std; 0 = always from init_std)')
    # Only near the goal: far from it a narrowed search loses the way (stalled goals when carried everywhere).
    std_carry_radius: float = setting(0.05, 0.0, 10.0, 'std_carry applies while the end effector is within this '
                                      'distance of the goal [m]')
    # Offset-free MPC: the model's one-step residual at the current state, low-pass filtered, is
    # added to every predicted step, so a biased model does not leave a steady-state error.
    # 0.3: with std_carry, median final distance 1.2 -> 0.6 mm on the same goals.
    bias_gain: float = setting(0.3, 0.0, 1.0, 'offset-free MPC: weight of the newest one-step model residual in the '
                               'bias estimate added to every predicted step (0 = off)')

    _what = 'planner config'

    def _cross_errors(self) -> list[str]:
        errs = []
        if self.num_elites > self.num_samples:
            errs.append(f'num_elites ({self.num_elites}) must be <= num_samples ({self.num_samples})')
        if self.min_std > self.init_std:
            errs.append(f'min_std ({self.min_std}) must be <= init_std ({self.init_std})')
        return errs

    def population(self, iteration: int) -> int:
        """Samples drawn in `iteration` (iCEM: N·γ^-i, never below 2·elites)."""
        if self.planner == 'cem':
            return self.num_samples
        n = int(self.num_samples * self.population_decay ** (-iteration))
        return max(n, min(2 * self.num_elites, self.num_samples))


@dataclass(frozen=True)
class CostWeights(Settings):
    """Weights of the task cost terms (0 disables a term: it is then not computed at all)."""
    ee_distance: float = setting(1.0, 0.0, 1e6, 'running end-effector distance to the goal [1/m]')
    effort: float = setting(0.01, 0.0, 1e6, 'running squared effort, normalised by effort limits')
    joint_velocity: float = setting(0.01, 0.0, 1e6, 'running squared joint velocity, normalised by qd limits')
    terminal_distance: float = setting(5.0, 0.0, 1e6, 'end-effector distance at the end of the horizon')
    terminal_velocity: float = setting(1.0, 0.0, 1e6, 'squared normalised joint velocity at the end of the horizon')
    joint_limit: float = setting(10.0, 0.0, 1e6, 'penalty for entering the joint-limit margin')
    joint_limit_margin: float = setting(0.1, 0.0, 1.0, 'joint-limit margin [rad]')
    # 1, not 0: at 0 the planner picks actions the safety filter's disagreement gate then refuses
    # (mode flicker mpc/hold on the ROS stack), although the ROS-free loop succeeds more often.
    uncertainty: float = setting(1.0, 0.0, 1e6, 'risk weight on ensemble disagreement, summed over the horizon')
    # 2.0, was 0.3: on chained goals the arm stalled with the base pinned at a joint limit where the
    # goal lay the long way round (arm7, 2 seeds x 30, no budget: 93 -> 100 % within 2 cm at 3 s,
    # arm3 100 %; docs/mpc_controller.md, "Stalls at joint limits"). 0.3 had won from home (30/30).
    joint_goal: float = setting(2.0, 0.0, 1e6, 'running squared joint distance [rad^2] to an IK solution of the goal '
                                '(guides the short horizon out of local minima; 0 = no IK)')
    # A 7-DOF arm reaches the goal in many configurations: once the end effector is there, pulling
    # it on to the one IK solution moves it away again (seen: reached 1.4 cm, then drifted to 41 cm).
    joint_goal_release: float = setting(0.05, 0.0, 10.0, 'the joint_goal pull ends for the current goal once the '
                                        'end effector is within this distance of it [m] (0 = never)')

    _what = 'cost weights'


def field_specs(cls) -> list[dict[str, Any]]:
    """name, default, type, range, choices and help of each field: input for a node's Param spec."""
    out = []
    for f in dataclasses.fields(cls):
        out.append({'name': f.name, 'default': f.default, 'type': f.type,
                    'range': f.metadata.get('range'), 'choices': f.metadata.get('choices'),
                    'help': f.metadata.get('help', '')})
    return out


def from_mapping(cls, values: dict[str, Any], base: Optional[Any] = None):
    """Build `cls` from a mapping (e.g. ROS parameters), ignoring keys it does not have."""
    names = {f.name for f in dataclasses.fields(cls)}
    base = base if base is not None else cls()
    return dataclasses.replace(base, **{k: v for k, v in values.items() if k in names})


def range_errors(obj) -> list[str]:
    """Type, choice and range violations of a dataclass built with `setting` fields."""
    errs = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        choices = f.metadata.get('choices')
        if choices is not None:
            if v not in choices:
                errs.append(f'{f.name} = {v!r} is not one of {list(choices)}')
            continue
        if f.type in ('bool', bool):
            if not isinstance(v, bool):
                errs.append(f'{f.name} must be true or false, got {v!r}')
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errs.append(f'{f.name} must be a number, got {type(v).__name__}')
            continue
        if f.type in ('int', int) and not isinstance(v, int):
            errs.append(f'{f.name} must be an integer, got {v!r}')
            continue
        if not math.isfinite(v):
            errs.append(f'{f.name} must be finite, got {v}')
            continue
        lo, hi = f.metadata.get('range', (None, None))
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            errs.append(f'{f.name} = {v} is out of range [{lo}, {hi}]')
    return errs
