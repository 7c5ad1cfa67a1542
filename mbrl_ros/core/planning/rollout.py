"""Trajectory sampling: push a population of action sequences through a dynamics model.

The planner sees dynamics only through the small `Dynamics` protocol: one call per horizon
step with the whole population, so the per-step Python overhead is paid H times per
iteration, not H × samples times.

- `EnsembleDynamics` adapts the learned ensemble, through its one door `core.world_model.WorldModel`,
  with the PETS propagation schemes: `expectation` (mean over members; fastest), `ts1` (each
  particle follows a random member, re-drawn every step) and `tsinf` (each particle keeps its
  member for the whole horizon).
- `DoubleIntegratorDynamics` is a known analytic model (damped double integrator per joint):
  the planner's reference model for tests and the trivial dynamics of the overhead benchmark.
"""
from __future__ import annotations

import time
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from mbrl_ros.core.world_model import (PROPAGATIONS, disagreement, ensemble_mean, particle_members, predictive_var,
                                       propagation_name, rng_integers, with_aleatoric, world_model)


@runtime_checkable
class Dynamics(Protocol):
    """What the planner needs from a model. States s = [q, qd], actions = effort (Nm)."""
    state_dim: int
    action_dim: int
    # Particles per action sequence (PETS); 1 for deterministic / expectation models.
    num_particles: int

    def begin_rollout(self, rows: int, rng: np.random.Generator) -> None:
        """Called once before each population rollout of `rows` = samples × particles rows."""

    def step(self, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """states (R, S), actions (R, A) -> next states (R, S), disagreement (R,) >= 0."""


class DoubleIntegratorDynamics:
    """Per-joint damped double integrator: m·q̈ = u − d·q̇, semi-implicit Euler at `dt`.

    A stand-in for a gravity-compensated arm with a diagonal, configuration-independent
    inertia. Disagreement is zero (one exact model).
    """
    num_particles = 1

    def __init__(self, dof: int, dt: float = 0.02, inertia=1.0, damping=0.5):
        self.dof = int(dof)
        self.state_dim = 2 * self.dof
        self.action_dim = self.dof
        self.dt = float(dt)
        self.inv_m = 1.0 / np.broadcast_to(np.asarray(inertia, float), (self.dof,)).copy()
        self.damping = np.broadcast_to(np.asarray(damping, float), (self.dof,)).copy()
        self._zeros = np.zeros(0)

    @classmethod
    def from_robot(cls, robot, dt: float = 0.02, q=None) -> 'DoubleIntegratorDynamics':
        """Matched to `robot`: inertia = diagonal of its joint-space mass matrix at `q` (default
        home, from the MuJoCo model when the RobotModel has one), damping = its joint damping."""
        inertia = 1.0
        model = getattr(robot, 'model', None)
        if model is not None:
            import mujoco  # only for this constructor; the dynamics itself is numpy
            data = mujoco.MjData(model)
            data.qpos[:] = robot.home_q if q is None else q
            mujoco.mj_forward(model, data)
            full = np.zeros((model.nv, model.nv))
            mujoco.mj_fullM(model, data, full)
            inertia = np.diag(full)[robot.dof_adr] if hasattr(robot, 'dof_adr') else np.diag(full)
        damping = getattr(robot, 'damping', 0.5)
        return cls(robot.dof, dt, inertia=inertia, damping=damping)

    def begin_rollout(self, rows: int, rng: np.random.Generator) -> None:
        if self._zeros.shape[0] != rows:
            self._zeros = np.zeros(rows)

    def step(self, states, actions):
        d = self.dof
        q, qd = states[:, :d], states[:, d:]
        out = np.empty_like(states)
        qd_next = out[:, d:]
        np.multiply(qd, self.damping, out=qd_next)
        np.subtract(actions, qd_next, out=qd_next)
        qd_next *= self.inv_m * self.dt
        qd_next += qd
        np.multiply(qd_next, self.dt, out=out[:, :d])
        out[:, :d] += q
        rows = states.shape[0]
        if self._zeros.shape[0] != rows:
            self._zeros = np.zeros(rows)
        return out, self._zeros


class EnsembleDynamics:
    """PETS trajectory sampling over the learned ensemble, batched for the planner.

    `runtime`: an EnsembleRuntime (or a `core.world_model.WorldModel`, or anything with its
    `predict`); the member math (mean, TS member assignment, disagreement) is `core.world_model`'s.

    - `expectation` ('mean' is accepted too): one row per sample, next = s + mean over members;
      disagreement = the members' spread on that row. The cheapest; the default for the 50 Hz budget.
    - `ts1` / `tsinf` with P particles per sample: rows are particles; each particle follows
      one member (redrawn every step for ts1, fixed for tsinf). Disagreement of a sample =
      the spread of its particles' one-step deltas (same normalisation), so P >= 2 is needed
      for the risk term; P a multiple of E keeps the runtime's partitioned fast path.
    """

    PROPAGATIONS = PROPAGATIONS

    def __init__(self, runtime, state_dim: Optional[int] = None, action_dim: Optional[int] = None,
                 propagation: str = 'expectation', num_particles: int = 1,
                 sample_aleatoric: bool = False, seed: int = 0):
        propagation = propagation_name(propagation)
        if num_particles < 1:
            raise ValueError(f'num_particles must be >= 1, got {num_particles}')
        self.model = model = world_model(runtime)
        self.runtime = model.runtime
        self.state_dim = int(state_dim if state_dim is not None else model.state_dim)
        self.action_dim = int(action_dim if action_dim is not None else model.action_dim)
        self.ensemble_size = model.ensemble_size
        self.propagation = propagation
        self.num_particles = int(num_particles) if propagation != 'expectation' else 1
        self.sample_aleatoric = bool(sample_aleatoric)
        self._rng = np.random.default_rng(seed)
        self._members: Optional[np.ndarray] = None
        self._rotation = 0
        self._in_s = self._in_a = None
        self._slots_key, self._slots = None, None
        self._zeros = np.zeros(0)
        # float64 once, not per step: the particles' deltas are float64
        self._delta_std = None if model.delta_std is None else np.asarray(model.delta_std, float)

    @property
    def row_multiple(self) -> int:
        """Populations that are a multiple of this run without padding (the planner rounds to it)."""
        return self.ensemble_size if self._one_member_per_row else 1

    @property
    def _one_member_per_row(self) -> bool:
        # TS with one particle per sample through the partitioned graph: each row is evaluated
        # by one member only, 1/E of the expectation's work for the same number of samples.
        return (self.propagation != 'expectation' and self.num_particles == 1 and bool(self.ensemble_size)
                and self.model.partitioned)

    def begin_rollout(self, rows: int, rng: np.random.Generator) -> None:
        self._rng = rng
        if self._one_member_per_row:
            self._rotation = int(rng_integers(rng, self.ensemble_size, 1)[0])
        elif self.propagation == 'tsinf':
            self._members = particle_members(rows, self.num_particles, self.ensemble_size, self._rng)

    def _step_one_member(self, states, actions):
        """TS with P=1 through the partitioned graph: row r uses member (r + rotation) mod E.

        Rows are dealt to members round-robin, so the kept elites and the mean at the end of a
        population land on different members; the rotation is drawn per rollout (TS-inf) or per
        step (TS1). The input is gathered member-major in one copy (padded with row 0 to a multiple
        of E) and the output scattered back with one more: no sort, no transposes.
        """
        rows, e = states.shape[0], self.ensemble_size
        if self.propagation == 'ts1':
            self._rotation = int(rng_integers(self._rng, e, 1)[0])
        b = -(-rows // e)
        src, dst = self._slots_for(rows, b, self._rotation)
        if self._in_s is None or self._in_s.shape[0] != b * e:
            self._in_s = np.empty((b * e, self.state_dim), np.float32)
            self._in_a = np.empty((b * e, self.action_dim), np.float32)
        self._in_s[:] = states[src]
        self._in_a[:] = actions[src]
        ins = (self._in_s.reshape(e, b, -1), self._in_a.reshape(e, b, -1))
        if self.sample_aleatoric:
            mean, logvar = self.runtime.predict_partitioned(*ins)
            delta = with_aleatoric(mean.reshape(b * e, -1), logvar.reshape(b * e, -1), self._rng)
        else:
            delta = self.model.partitioned_means(*ins).reshape(b * e, -1)
        out = delta[dst].astype(states.dtype)
        out += states
        if self._zeros.shape[0] != rows:
            self._zeros = np.zeros(rows)
        return out, self._zeros

    def _slots_for(self, rows: int, b: int, rot: int) -> tuple[np.ndarray, np.ndarray]:
        """(src, dst): slot k = e·b + i of the member-major input holds row src[k]; row r's
        prediction is at slot dst[r]. Row r belongs to member (r + rot) mod E, as its i = r // E-th row."""
        key = (rows, b, rot)
        if self._slots_key != key:
            e = self.ensemble_size
            first = (np.arange(e) - rot) % e                        # member m's first row
            src = (first[:, None] + e * np.arange(b)[None, :]).reshape(-1)
            src[src >= rows] = 0                                    # padding: evaluated, ignored
            r = np.arange(rows)
            dst = ((r + rot) % e) * b + r // e
            self._slots_key, self._slots = key, (src, dst)
        return self._slots

    def step(self, states, actions):
        rows = states.shape[0]
        if self._one_member_per_row:
            return self._step_one_member(states, actions)
        if self.propagation == 'expectation':
            if self.sample_aleatoric:
                mean, logvar = self.model.predict(states, actions)
            else:   # no log-variance head: the mean-only graph where there is one
                mean = self.model.member_means(states, actions)
            delta = ensemble_mean(mean)
            if self.sample_aleatoric:
                delta = delta + np.sqrt(predictive_var(mean, logvar)) * self._rng.standard_normal(delta.shape)
            return states + delta, np.asarray(self.model.disagreement_from(mean), float)
        members = self._members if self.propagation == 'tsinf' else particle_members(
            rows, self.num_particles, self.ensemble_size, self._rng)
        nxt = np.asarray(self.model.step(states, actions, members=members, rng=self._rng,
                                         sample_aleatoric=self.sample_aleatoric), float)
        p = self.num_particles
        if p > 1:
            spread = disagreement((nxt - states).reshape(rows // p, p, -1), self._delta_std, axis=-2)
            dis = np.repeat(spread, p)
        else:
            dis = np.zeros(rows)
        return nxt, dis


class RolloutBuffers:
    """Preallocated arrays for one population rollout (reused across iterations and plans)."""

    def __init__(self, rows: int, horizon: int, state_dim: int):
        self.states = np.empty((rows, horizon + 1, state_dim))
        self.disagreement = np.empty((rows, horizon))

    def fits(self, rows: int, horizon: int, state_dim: int) -> bool:
        r, h1, s = self.states.shape
        return rows <= r and h1 == horizon + 1 and s == state_dim


def rollout(dynamics: Dynamics, state: np.ndarray, actions: np.ndarray, buffers: RolloutBuffers,
            rng: np.random.Generator, deadline: Optional[float] = None,
            clock=time.perf_counter, offset: Optional[np.ndarray] = None) -> int:
    """Roll `actions` (N, H, A) out from `state` (S,) with `dynamics.num_particles` particles each.

    Fills buffers.states[:N·P] with (N·P, H+1, S) trajectories (row n·P + p is particle p of
    sample n; index 0 is the start state) and buffers.disagreement[:N·P] with (N·P, H).
    Returns the number of steps rolled out: H, or fewer when a `deadline`
    (in `clock()` seconds) passed; the clock is checked after every step so that a
    plan never overruns its budget by more than one model step.
    `offset` (S,): added to every predicted step (offset-free MPC: the model's estimated bias).
    """
    n, horizon, _ = actions.shape
    p = dynamics.num_particles
    rows = n * p
    states = buffers.states[:rows]
    dis = buffers.disagreement[:rows]
    states[:, 0] = state
    dynamics.begin_rollout(rows, rng)
    for t in range(horizon):
        a_t = actions[:, t] if p == 1 else np.repeat(actions[:, t], p, axis=0)
        nxt, d = dynamics.step(states[:, t], a_t)
        states[:, t + 1] = nxt
        if offset is not None:
            states[:, t + 1] += offset
        dis[:, t] = d
        if deadline is not None and t + 1 < horizon and clock() > deadline:
            return t + 1
    return horizon
