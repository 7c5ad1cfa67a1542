"""CEM and iCEM model-predictive planning over bounded effort sequences.

`Planner.plan(state, goal)` is the whole algorithm in one function (iCEM, Pinneri et al.
2020, Alg. 1; CEM is its special case β=0, no decay, no elite reuse):

    mean ← shift(previous mean), std ← init_std
    for i in 0..I-1 (while the time budget lasts):
        N_i ← max(N·γ^-i, 2K)
        samples ← clip(mean + std · coloured_noise(β), ±u_max)
        add kept elites (previous iteration, or shifted from the previous plan), and in the
        last iteration the mean itself
        costs ← cost(rollout(model, state, samples))
        elites ← the K cheapest; remember the best sample seen
        mean, std ← α·(mean, std) + (1-α)·(mean, std of elites)
    return the best sample seen (or the mean)

Anytime: the planner learns its speed (seconds per sample and horizon step) as it runs.
Before each iteration it shrinks the population to what fits in the time left (the first
iteration always runs, with at least num_elites samples, so there is a plan; a later one is
skipped when fewer fit), and the clock is checked after each rollout step (an overrunning
iteration is abandoned), so a plan ends within one model step of `time_budget_ms` and
returns the best plan found so far.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .config import PlannerConfig
from .costs import INVALID_COST, TrajectoryCost
from .noise import ColoredNoise
from .rollout import Dynamics, RolloutBuffers, rollout


@dataclass
class PlanStats:
    iterations: int = 0                  # completed optimiser iterations
    samples_evaluated: int = 0           # action sequences rolled out (all iterations)
    best_cost: float = float('inf')
    elapsed_ms: float = 0.0
    budget_cut: bool = False             # the time budget stopped the optimiser early
    population_capped: bool = False      # the time budget shrank a population
    populations: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {'iterations': self.iterations, 'samples_evaluated': self.samples_evaluated,
                'best_cost': self.best_cost, 'elapsed_ms': self.elapsed_ms,
                'budget_cut': self.budget_cut, 'population_capped': self.population_capped}


class Plan:
    """Result of one planning call.

    action: (A,) the command to send now. actions: (H, A) the whole sequence. states:
    (H+1, S) its predicted state sequence from the start state (first particle), or None
    when not a single iteration finished within the budget (the actions are then the
    warm-started previous plan). ee_path: (H+1, 3) end-effector positions of `states`.
    disagreement: (H,) the model's disagreement along the plan (None with `states`);
    disagreement[0] is the uncertainty about `action`, what the safety filter checks.

    With execute='mean' the executed sequence was never rolled out during the search: its states,
    path and disagreement come from one more rollout, run when first asked for (`predict`), so a
    caller that only sends the action does not pay for it (the node draws the path every
    `plan_publish_every` plans, after the command is out).
    """

    def __init__(self, action, actions, cost: float, stats: 'PlanStats', states=None, disagreement=None,
                 predict: Optional[Callable[[], tuple]] = None, fk: Optional[Callable] = None, fk_dof: int = 0):
        self.action, self.actions, self.cost, self.stats = action, actions, cost, stats
        self._states, self._disagreement = states, disagreement
        self._predict, self._fk, self._fk_dof, self._ee = predict, fk, fk_dof, None

    def _rolled_out(self) -> None:
        if self._predict is not None:
            self._states, self._disagreement = self._predict()
            self._predict = None

    @property
    def states(self) -> Optional[np.ndarray]:
        self._rolled_out()
        return self._states

    @property
    def disagreement(self) -> Optional[np.ndarray]:
        self._rolled_out()
        return self._disagreement

    @property
    def ee_path(self) -> Optional[np.ndarray]:
        if self._ee is None and self._fk is not None and self.states is not None:
            self._ee = np.asarray(self._fk(self.states[:, :self._fk_dof]))
        return self._ee


class Planner:
    """CEM / iCEM over a `Dynamics` model and a `TrajectoryCost`, with a warm start across calls.

    action_low / action_high: (A,) bounds of every action (effort limits). All buffers are
    allocated once per configuration; `configure()` applies a new config live (a changed
    horizon pads/truncates the warm start).
    """

    def __init__(self, config: PlannerConfig, dynamics: Dynamics, cost: TrajectoryCost,
                 action_low, action_high, clock: Callable[[], float] = time.perf_counter):
        self.dynamics = dynamics
        self.cost = cost
        self.low = np.asarray(action_low, float).reshape(-1)
        self.high = np.asarray(action_high, float).reshape(-1)
        if self.low.shape != (dynamics.action_dim,) or self.high.shape != (dynamics.action_dim,):
            raise ValueError(f'action bounds must have {dynamics.action_dim} entries, '
                             f'got {self.low.shape[0]} and {self.high.shape[0]}')
        if not np.all(self.high > self.low):
            raise ValueError('every action upper bound must exceed its lower bound')
        self._mid = 0.5 * (self.low + self.high)
        self._half = 0.5 * (self.high - self.low)
        self.max_step: Optional[np.ndarray] = None    # (A,) largest change between consecutive actions
        self._last_action: Optional[np.ndarray] = None  # the action in force before this plan's first
        self.clock = clock
        self.config: Optional[PlannerConfig] = None
        self._mean: Optional[np.ndarray] = None       # warm start (H, A)
        self._elites: Optional[np.ndarray] = None     # elites of the last iteration (K', H, A)
        self._std: Optional[np.ndarray] = None        # final sampling std of the last plan (H, A)
        self._speed = StepTimeModel()
        # Offset-free MPC: the model's bias per step (S,), added to every predicted step (None: off).
        self.model_offset: Optional[np.ndarray] = None
        self.configure(config)

    # ---- setup --------------------------------------------------------------------------------
    def configure(self, config: PlannerConfig) -> None:
        c = config.validated()
        old = self.config
        self.config = c
        self.rng = np.random.default_rng(c.seed) if old is None or old.seed != c.seed else self.rng
        h, a = c.horizon, self.dynamics.action_dim
        beta = c.noise_beta if c.planner == 'icem' else 0.0
        self.noise = ColoredNoise(beta, h)
        self._keep = int(round(c.keep_elites_fraction * c.num_elites)) if c.planner == 'icem' else 0
        # Populations are rounded up to the model's preferred row multiple (e.g. E for one member
        # per row through the partitioned ensemble) so that no row is padding.
        self._row_multiple = max(1, int(getattr(self.dynamics, 'row_multiple', 1)))
        self._max_rows = c.num_samples + self._keep + 1 + self._row_multiple - 1
        self._samples = np.empty((self._max_rows, h, a))
        self._costs = np.empty(self._max_rows)
        p = self.dynamics.num_particles
        self._buffers = RolloutBuffers(self._max_rows * p, h, self.dynamics.state_dim)
        if self._mean is not None and self._mean.shape[0] != h:
            m = np.repeat(self._mean[-1:], h, axis=0) if c.shift_fill == 'last' else np.zeros((h, a))
            k = min(h, self._mean.shape[0])
            m[:k] = self._mean[:k]
            self._mean = m
            self._elites = None
        self._std = None
        if self._mean is None:
            self._mean = np.broadcast_to(self._mid, (h, a)).copy()
        if self._elites is not None:
            # Carried elites must fit the new buffers (fewer kept, or none for CEM).
            self._elites = self._elites[:self._keep] if self._keep else None

    def set_dynamics(self, dynamics: Dynamics) -> None:
        """Swap the model (e.g. a new bundle): buffers, warm start and speed estimate start afresh."""
        if dynamics.action_dim != self.low.shape[0]:
            raise ValueError(f'model action dim {dynamics.action_dim} != {self.low.shape[0]} action bounds')
        self.dynamics = dynamics
        self._speed = StepTimeModel()
        self._mean = None
        self.configure(self.config)
        self._elites = None

    def widen(self) -> None:
        """The next plan searches from init_std again (e.g. a new goal moved the optimum)."""
        self._std = None
    def set_action_bounds(self, action_low, action_high, max_step=None) -> None:
        """New bounds of every action (e.g. the scaled limits a safety filter enforces downstream) and,
        with `max_step` (A,), the largest change between consecutive actions (its rate limit; the first
        action is limited from `plan(last_action=...)`). The sampling spread (init_std, min_std are
        fractions of the half range) follows the bounds; the warm start is clipped into them."""
        low = np.asarray(action_low, float).reshape(-1)
        high = np.asarray(action_high, float).reshape(-1)
        if low.shape != self.low.shape or high.shape != self.high.shape or not np.all(high > low):
            raise ValueError(f'action bounds must be {self.low.shape[0]} pairs with high > low')
        step = None if max_step is None else np.asarray(max_step, float).reshape(-1)
        if step is not None and (step.shape != self.low.shape or not np.all(step > 0)):
            raise ValueError(f'max_step must be {self.low.shape[0]} positive numbers')
        self.low, self.high, self.max_step = low, high, step
        self._mid = 0.5 * (low + high)
        self._half = 0.5 * (high - low)
        if self._mean is not None:
            self._mean = np.clip(self._mean, low, high)
        if self._elites is not None:
            self._elites = np.clip(self._elites, low, high)

    def _rate_limit(self, seqs: np.ndarray) -> np.ndarray:
        """Each sequence (..., H, A) cut, step by step, to at most max_step from the action before it
        (the first from the last action in force), in place: what a rate-limiting filter would send."""
        if self.max_step is None:
            return seqs
        prev = self._last_action
        for t in range(seqs.shape[-2]):
            if prev is not None:
                np.clip(seqs[..., t, :], prev - self.max_step, prev + self.max_step, out=seqs[..., t, :])
            prev = seqs[..., t, :]
        return seqs

    def reset(self) -> None:
        """Forget the warm start (e.g. after the robot was reset or a new model was loaded)."""
        self._mean = np.broadcast_to(self._mid, (self.config.horizon, self.dynamics.action_dim)).copy()
        self._elites = None
        self._std = None

    @property
    def warm_start(self) -> np.ndarray:
        """The mean the next plan starts from, before its shift: (H, A)."""
        return self._mean.copy()

    # ---- the algorithm ------------------------------------------------------------------------
    def plan(self, state, goal=None, shift: int = 1, budget_ms: Optional[float] = None,
             last_action=None) -> Plan:
        """Optimise an action sequence from `state` (S,) towards `goal` (3,) within the budget.

        shift: control steps elapsed since the previous plan (the warm start moves by this).
        budget_ms: this plan's budget when the caller already spent part of the configured one
        (None: `time_budget_ms`; ignored when that is 0 = no limit).
        last_action: (A,) the action in force now; with `max_step` set, every sampled sequence starts
        within max_step of it (None: the first action is not rate-limited).
        """
        c = self.config
        self._last_action = None if last_action is None else np.clip(
            np.asarray(last_action, float).reshape(self.low.shape), self.low, self.high)
        t0 = self.clock()
        budget = c.time_budget_ms if budget_ms is None or c.time_budget_ms <= 0 else max(float(budget_ms), 0.0)
        end = t0 + budget * 1e-3 if c.time_budget_ms > 0 else None
        state = np.asarray(state, float).reshape(self.dynamics.state_dim)
        goal = None if goal is None else np.asarray(goal, float).reshape(3)
        if not np.all(np.isfinite(state)) or (goal is not None and not np.all(np.isfinite(goal))):
            raise ValueError('cannot plan from a non-finite state or towards a non-finite goal')
        stats = PlanStats()

        mean = self._shifted(self._mean, shift)
        min_std = c.min_std * self._half
        std = np.broadcast_to(c.init_std * self._half, mean.shape).copy()
        if c.std_carry > 0 and self._std is not None:
            # Start from the last plan's (shifted) spread, widened by std_carry: near a converged
            # plan the search stays narrow, so the executed mean is not re-randomised every period.
            std = np.clip(c.std_carry * self._shifted_std(self._std, shift), min_std, std)
        kept = self._shifted_elites(shift)
        best_actions, best_states, best_dis, best_cost = mean.copy(), None, None, INVALID_COST

        for i in range(c.num_iterations):
            last = i == c.num_iterations - 1
            extra = (0 if kept is None else kept.shape[0]) + (1 if last and c.planner == 'icem' else 0)
            n = self._fit_population(c.population(i), extra, end, first=(i == 0))
            if n == 0:
                stats.budget_cut = True
                break
            stats.population_capped |= n < c.population(i)
            n += -(n + extra) % self._row_multiple
            t_iter = self.clock()
            samples = self._sample(mean, std, n, kept, last)
            costs, steps = self._evaluate(samples, state, goal, end)
            self._learn_speed(self.clock() - t_iter, samples.shape[0] * self.dynamics.num_particles, steps)
            if costs is None:
                stats.budget_cut = True
                break
            rows = samples.shape[0]
            stats.iterations += 1
            stats.samples_evaluated += rows
            stats.populations.append(rows)

            k = min(c.num_elites, rows)
            elite_idx = np.argpartition(costs, k - 1)[:k]
            elites = samples[elite_idx]
            b = elite_idx[np.argmin(costs[elite_idx])]
            if costs[b] < best_cost or best_states is None:
                best_cost = float(costs[b])
                best_actions = samples[b].copy()
                p = self.dynamics.num_particles
                best_states = self._buffers.states[b * p].copy()
                best_dis = self._buffers.disagreement[b * p:(b + 1) * p].mean(axis=0)
            mean = c.alpha * mean + (1.0 - c.alpha) * elites.mean(axis=0)
            std = np.maximum(c.alpha * std + (1.0 - c.alpha) * elites.std(axis=0), min_std)
            if self._keep:
                kept = elites[np.argsort(costs[elite_idx])[:self._keep]].copy()

        self._mean = mean
        self._std = std
        self._elites = kept if self._keep else None
        stats.best_cost = best_cost if best_states is not None else float('inf')
        predict = None
        if c.execute == 'mean' and best_states is not None:
            actions = self._clip(mean.copy())
            best_states = best_dis = None
            dynamics, rng, offset = self.dynamics, self.rng, self.model_offset

            def predict():
                return self._predict(actions, state, dynamics, rng, offset)
        else:
            actions = best_actions
        stats.elapsed_ms = (self.clock() - t0) * 1e3
        return Plan(action=actions[0].copy(), actions=actions, cost=stats.best_cost, stats=stats,
                    states=best_states, disagreement=best_dis, predict=predict, fk=self.cost.fk, fk_dof=self.cost.dof)

    # ---- steps of the algorithm ---------------------------------------------------------------
    def _shifted(self, seq: np.ndarray, shift: int) -> np.ndarray:
        """seq advanced by `shift` steps; the freed tail is filled with zero effort or the last action."""
        h = seq.shape[0]
        s = max(0, min(int(shift), h))
        out = np.empty_like(seq)
        out[:h - s] = seq[s:]
        fill = seq[-1] if self.config.shift_fill == 'last' else np.clip(0.0, self.low, self.high)
        out[h - s:] = fill
        return out

    def _shifted_std(self, std: np.ndarray, shift: int) -> np.ndarray:
        """std advanced by `shift` steps; the freed tail starts wide (init_std)."""
        h = std.shape[0]
        s = max(0, min(int(shift), h))
        out = np.empty_like(std)
        out[:h - s] = std[s:]
        out[h - s:] = self.config.init_std * self._half
        return out

    def _shifted_elites(self, shift: int) -> Optional[np.ndarray]:
        if self._elites is None or not self._keep:
            return None
        return np.stack([self._shifted(e, shift) for e in self._elites])

    def _sample(self, mean, std, n, kept, last) -> np.ndarray:
        rows = n
        out = self._samples
        noise = self.noise.sample(self.rng, (n, self.dynamics.action_dim))  # (n, A, H)
        np.multiply(noise.transpose(0, 2, 1), std, out=out[:n])
        out[:n] += mean
        if kept is not None:
            out[rows:rows + kept.shape[0]] = kept
            rows += kept.shape[0]
        if last and self.config.planner == 'icem':
            out[rows] = mean
            rows += 1
        samples = out[:rows]
        np.clip(samples, self.low, self.high, out=samples)
        return self._rate_limit(samples)

    def _evaluate(self, samples, state, goal, deadline):
        """(costs (N,), steps rolled out); costs is None when the deadline passed mid-rollout."""
        n, h, _ = samples.shape
        steps = rollout(self.dynamics, state, samples, self._buffers, self.rng, deadline, self.clock,
                        offset=self.model_offset)
        if steps < h:
            return None, steps
        p = self.dynamics.num_particles
        states = self._buffers.states[:n * p].reshape(n, p, h + 1, -1)
        dis = self._buffers.disagreement[:n * p].reshape(n, p, h)
        costs = self.cost(self.cost.batch(states, samples, dis, goal), out=self._costs[:n])
        return costs, h

    # Anytime sizing: share of the time left that an iteration may be planned to use. The
    # first iteration is sized to half of it: it is the one that must finish for a plan to
    # exist at all, and step times jitter by 2x on a loaded machine.
    _SAFETY = 0.85
    _FIRST_SAFETY = 0.5

    def _learn_speed(self, seconds: float, rows: int, steps: int) -> None:
        self._speed.observe(rows, seconds / max(steps, 1))

    def _fit_population(self, n: int, extra: int, deadline, first: bool) -> int:
        """Samples to draw so the iteration ends before the deadline (0: do not start it).

        The first iteration always runs, shrunk if need be (down to num_elites), so a plan
        exists; a later one runs only if at least num_elites samples fit.
        """
        if deadline is None or not self._speed.ready:
            return n
        share = self._FIRST_SAFETY if first else self._SAFETY
        per_step = (deadline - self.clock()) * share / self.config.horizon
        fit = self._speed.rows_within(per_step) // self.dynamics.num_particles - extra
        floor = min(self.config.num_elites, n)
        if fit >= n:
            return n
        if fit >= floor:
            return fit
        return floor if first else 0

    def _clip(self, actions):
        return self._rate_limit(np.clip(actions, self.low, self.high, out=actions))

    def _predict(self, actions, state, dynamics=None, rng=None, offset=None) -> tuple[np.ndarray, np.ndarray]:
        """Predicted states (H+1, S) (first particle) and disagreement (H,) of one sequence (by the
        planner's model, or the one the plan was made with)."""
        dynamics, rng = dynamics or self.dynamics, rng or self.rng
        buf = RolloutBuffers(dynamics.num_particles, actions.shape[0], dynamics.state_dim)
        rollout(dynamics, state, actions[None], buf, rng, offset=offset)
        return buf.states[0].copy(), buf.disagreement.mean(axis=0)

    def predict_step(self, state, action) -> np.ndarray:
        """The model's next state (S,) after `action` from `state`, without the offset (mean over particles)."""
        p = self.dynamics.num_particles
        buf = RolloutBuffers(p, 1, self.dynamics.state_dim)
        rollout(self.dynamics, np.asarray(state, float), np.asarray(action, float).reshape(1, 1, -1), buf, self.rng)
        return buf.states[:p, 1].mean(axis=0)


class StepTimeModel:
    """Seconds per horizon step (model call + planner bookkeeping, with the iteration's cost
    evaluation spread over its steps) as an affine function a + b·rows of the batch size,
    fitted to the recent iterations. The fixed part a matters: a model call has a per-call
    overhead, so a halved population takes more than half the time."""

    def __init__(self, memory: int = 12):
        self._obs = deque(maxlen=memory)
        self._a, self._b = 0.0, None

    @property
    def ready(self) -> bool:
        return self._b is not None

    def observe(self, rows: int, seconds_per_step: float) -> None:
        self._obs.append((float(rows), float(seconds_per_step)))
        r, t = np.array(self._obs).T
        if np.ptp(r) > 0.1 * r.max():
            # Least-squares line in closed form (np.polyfit's lstsq cost more than the rest of
            # this bookkeeping together; it runs after every iteration).
            rc = r - r.mean()
            b = float(rc @ (t - t.mean()) / (rc @ rc))
            a = float(t.mean() - b * r.mean())
            if b > 0 and a >= 0:
                self._a, self._b = a, b
                return
        # One batch size seen (or a fit without physical meaning): proportional to rows.
        self._a, self._b = 0.0, float(np.mean(t / r))

    def predict(self, rows: int) -> float:
        return self._a + self._b * rows

    def rows_within(self, seconds_per_step: float) -> int:
        """Most rows whose step takes at most `seconds_per_step` (negative when none fit)."""
        return int(np.floor((seconds_per_step - self._a) / self._b)) if self._b else 0
