"""Task cost over predicted trajectories: one class per term, each with its own weight.

All terms are vectorised over the population: a `TrajectoryBatch` holds N action sequences
with P particles each, and every term returns an unweighted (N,) cost (averaged over
particles, summed over the horizon). `TrajectoryCost` sums the weighted terms that are
enabled (weight > 0) and maps non-finite totals (a model that blew up) to a huge cost so
that such a sample can never become an elite.

Conventions: state s = [q, qd]; t = 1..H are the predicted states (index 0 is the measured
start state, which no action can change, so it is not scored).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from .config import CostWeights

# Cost given to a sample whose cost is NaN/Inf: worse than any finite plan.
INVALID_COST = 1e18


class TrajectoryBatch:
    """Predicted trajectories of a population, with lazily computed, shared derived values.

    states (N, P, H+1, S), actions (N, H, A), disagreement (N, P, H), goal (3,) or None.
    """

    def __init__(self, states: np.ndarray, actions: np.ndarray, disagreement: np.ndarray,
                 goal: Optional[np.ndarray], dof: int, fk: Optional[Callable] = None):
        self.states = states
        self.actions = actions
        self.disagreement = disagreement
        self.goal = None if goal is None else np.asarray(goal, float).reshape(3)
        self.dof = dof
        self._fk = fk
        self._ee = None

    @property
    def q(self) -> np.ndarray:
        """Predicted joint positions, t = 1..H: (N, P, H, dof)."""
        return self.states[:, :, 1:, :self.dof]

    @property
    def qd(self) -> np.ndarray:
        """Predicted joint velocities, t = 1..H: (N, P, H, dof)."""
        return self.states[:, :, 1:, self.dof:2 * self.dof]

    @property
    def ee(self) -> np.ndarray:
        """End-effector positions via forward kinematics, t = 1..H: (N, P, H, 3). Computed once."""
        if self._ee is None:
            if self._fk is None:
                raise ValueError('end-effector cost terms need a forward-kinematics function')
            self._ee = np.asarray(self._fk(self.q))
        return self._ee


class CostTerm:
    """One weighted cost term. Subclasses implement `evaluate(batch) -> (N,)` unweighted."""
    name = 'term'
    needs_goal = False

    def __init__(self, weight: float):
        self.weight = float(weight)

    @property
    def enabled(self) -> bool:
        return self.weight > 0.0

    def active(self, goal) -> bool:
        """Scored this plan: weighted, and its goal (if it needs one) is set."""
        return self.enabled and (goal is not None or not self.needs_goal)

    def evaluate(self, batch: TrajectoryBatch) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        return f'{type(self).__name__}(weight={self.weight})'


class EndEffectorDistanceCost(CostTerm):
    """Σ_t ‖fk(q_t) − goal‖ (metres), averaged over particles."""
    name = 'ee_distance'
    needs_goal = True

    def evaluate(self, batch):
        d = np.linalg.norm(batch.ee - batch.goal, axis=-1)  # (N, P, H)
        return d.sum(axis=-1).mean(axis=-1)


class TerminalDistanceCost(CostTerm):
    """‖fk(q_H) − goal‖ at the end of the horizon."""
    name = 'terminal_distance'
    needs_goal = True

    def evaluate(self, batch):
        return np.linalg.norm(batch.ee[:, :, -1] - batch.goal, axis=-1).mean(axis=-1)


class EffortCost(CostTerm):
    """Σ_t mean_j (u_tj / effort_max_j)²."""
    name = 'effort'

    def __init__(self, weight, effort_max: Sequence[float]):
        super().__init__(weight)
        self.inv = 1.0 / np.asarray(effort_max, float)

    def evaluate(self, batch):
        u = batch.actions * self.inv
        return np.einsum('nhj,nhj->n', u, u) / u.shape[-1]


class JointVelocityCost(CostTerm):
    """Σ_t mean_j (qd_tj / qd_max_j)², averaged over particles."""
    name = 'joint_velocity'

    def __init__(self, weight, qd_max: Sequence[float]):
        super().__init__(weight)
        self.inv = 1.0 / np.asarray(qd_max, float)

    def evaluate(self, batch):
        v = batch.qd * self.inv
        return np.einsum('nphj,nphj->np', v, v).mean(axis=-1) / v.shape[-1]


class TerminalVelocityCost(CostTerm):
    """mean_j (qd_Hj / qd_max_j)² at the end of the horizon: arrive at rest."""
    name = 'terminal_velocity'

    def __init__(self, weight, qd_max: Sequence[float]):
        super().__init__(weight)
        self.inv = 1.0 / np.asarray(qd_max, float)

    def evaluate(self, batch):
        v = batch.qd[:, :, -1] * self.inv
        return np.einsum('npj,npj->np', v, v).mean(axis=-1) / v.shape[-1]


class JointLimitCost(CostTerm):
    """Σ_t Σ_j (depth into the margin / margin)²: zero away from the limits, growing
    quadratically inside the margin and on past the limit."""
    name = 'joint_limit'

    def __init__(self, weight, q_min: Sequence[float], q_max: Sequence[float], margin: float = 0.1):
        super().__init__(weight)
        self.q_min = np.asarray(q_min, float)
        self.q_max = np.asarray(q_max, float)
        self.set_margin(margin)

    def set_margin(self, margin: float) -> None:
        self.margin = float(margin)
        self.lo = self.q_min + self.margin
        self.hi = self.q_max - self.margin
        # Without a margin the term is a hinge on the limits themselves, scaled per 10 mrad.
        self.inv_margin = 1.0 / max(self.margin, 1e-2)

    def evaluate(self, batch):
        q = batch.q
        # Depth outside [lo, hi] = |q - clip(q)|: one pass instead of two maxima and a sum.
        depth = np.clip(q, self.lo, self.hi)
        depth -= q
        depth *= self.inv_margin
        return np.einsum('nphj,nphj->np', depth, depth).mean(axis=-1)


class JointGoalCost(CostTerm):
    """Σ_t mean_j (q_tj − q*_j)² [rad²] to a joint configuration q* that reaches the goal (an IK
    solution near the arm's configuration, set by the controller per goal; no target = not scored).

    Quadratic on purpose: far from the goal it dominates and points the short horizon along the
    joint-space path to q* (which stays inside the limits); within a few cm it is orders of
    magnitude below the end-effector terms, which then set the final approach.
    """
    name = 'joint_goal'
    needs_goal = True

    def __init__(self, weight):
        super().__init__(weight)
        self.target: Optional[np.ndarray] = None

    def active(self, goal) -> bool:
        return self.target is not None and super().active(goal)

    def evaluate(self, batch):
        d = batch.q - self.target
        return np.einsum('nphj,nphj->np', d, d).mean(axis=-1) / d.shape[-1]


class UncertaintyCost(CostTerm):
    """Risk term: Σ_t ensemble disagreement (weight = β, the uncertainty penalty)."""
    name = 'uncertainty'

    def evaluate(self, batch):
        return batch.disagreement.sum(axis=-1).mean(axis=-1)


class TrajectoryCost:
    """Weighted sum of cost terms over a `TrajectoryBatch`; also the robot's FK for the batch."""

    def __init__(self, terms: Sequence[CostTerm], dof: int, fk: Optional[Callable] = None):
        self.terms = list(terms)
        self.dof = int(dof)
        self.fk = fk
        for t in self.terms:
            if t.needs_goal and t.enabled and fk is None:
                raise ValueError(f'cost term {t.name} needs a forward-kinematics function')

    def batch(self, states, actions, disagreement, goal) -> TrajectoryBatch:
        return TrajectoryBatch(states, actions, disagreement, goal, self.dof, self.fk)

    def active_terms(self, goal) -> list[CostTerm]:
        # Goal terms are skipped while there is no goal: the plan then only settles the arm.
        return [t for t in self.terms if t.active(goal)]

    def term(self, name: str) -> Optional[CostTerm]:
        return next((t for t in self.terms if t.name == name), None)

    def __call__(self, batch: TrajectoryBatch, out: Optional[np.ndarray] = None) -> np.ndarray:
        n = batch.actions.shape[0]
        total = np.zeros(n) if out is None else out
        total[...] = 0.0
        for term in self.active_terms(batch.goal):
            total += term.weight * term.evaluate(batch)
        total[~np.isfinite(total)] = INVALID_COST
        return total

    def breakdown(self, batch: TrajectoryBatch) -> dict[str, np.ndarray]:
        """Weighted cost of each active term: name -> (N,). For diagnostics and tests."""
        return {t.name: t.weight * t.evaluate(batch) for t in self.active_terms(batch.goal)}

    def set_weights(self, weights: CostWeights) -> None:
        """Apply new weights live (the terms and their order stay)."""
        for t in self.terms:
            if hasattr(weights, t.name):
                t.weight = float(getattr(weights, t.name))
            if isinstance(t, JointLimitCost):
                t.set_margin(weights.joint_limit_margin)


def make_task_cost(robot, weights: Optional[CostWeights] = None) -> TrajectoryCost:
    """The standard reaching cost for `robot` (a RobotModel: fk, limits) with `weights`."""
    w = (weights or CostWeights()).validated()
    terms = [
        EndEffectorDistanceCost(w.ee_distance),
        EffortCost(w.effort, robot.effort_max),
        JointVelocityCost(w.joint_velocity, robot.qd_max),
        TerminalDistanceCost(w.terminal_distance),
        TerminalVelocityCost(w.terminal_velocity, robot.qd_max),
        JointLimitCost(w.joint_limit, robot.q_min, robot.q_max, w.joint_limit_margin),
        UncertaintyCost(w.uncertainty),
        JointGoalCost(w.joint_goal),
    ]
    return TrajectoryCost(terms, dof=robot.dof, fk=robot.fk)
