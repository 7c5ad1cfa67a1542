"""Inverse kinematics for the planner's joint-space guidance term (numpy, no ROS).

Why the planner needs it: the MPC looks 8-12 control steps (0.16-0.24 s) ahead, so a cost on the
end-effector distance alone is greedy. On the 7-DOF arm it leaves the arm in local minima when the
goal is behind it or when the greedy direction drives a joint into its limit margin (measured: the
misses that end 25-90 cm from the goal with the arm at rest). A joint configuration that reaches the
goal, chosen near the current one, gives the short horizon a direction that leads somewhere: the
straight joint-space path to it stays inside the joint limits (the limit box is convex).

`IkSolver` is damped least squares on many seeds at once (the robot's FK is vectorised; the
Jacobian is a forward difference), projected onto the limits shrunk by a margin. It is *anytime*:
`iterate(k)` runs k iterations, so a controller can spread the work over its first plans after a
new goal instead of one long plan.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class IkSolver:
    """Positions q within [q_min + margin, q_max - margin] with fk(q) ≈ goal, nearest to `q_ref`.

    Seeds: `q_ref` itself (clipped into the box) and `seeds - 1` uniform random configurations.
    """

    def __init__(self, robot, goal, q_ref, seeds: int = 16, margin: float = 0.15, damping: float = 0.05,
                 tol_m: float = 2e-3, max_iterations: int = 80, rng: Optional[np.random.Generator] = None):
        self.robot = robot
        self.goal = np.asarray(goal, float).reshape(3)
        lo = np.asarray(robot.q_min, float) + margin
        hi = np.asarray(robot.q_max, float) - margin
        # A joint whose range is narrower than twice the margin keeps its midpoint.
        mid = 0.5 * (np.asarray(robot.q_min, float) + np.asarray(robot.q_max, float))
        self.lo, self.hi = np.minimum(lo, mid), np.maximum(hi, mid)
        self.q_ref = np.clip(np.asarray(q_ref, float).reshape(-1), self.lo, self.hi)
        rng = rng if rng is not None else np.random.default_rng(0)
        q = rng.uniform(self.lo, self.hi, size=(max(1, int(seeds)), self.q_ref.shape[0]))
        q[0] = self.q_ref
        self.q = q
        self.damping2 = float(damping) ** 2
        self.tol = float(tol_m)
        self.max_iterations = int(max_iterations)
        self.iterations = 0
        self._eye = 1e-4 * np.eye(self.q_ref.shape[0])
        self._err = self._error(self.q)

    def _error(self, q) -> np.ndarray:
        return self.goal - np.asarray(self.robot.fk(q))

    @property
    def done(self) -> bool:
        return self.iterations >= self.max_iterations or bool(np.all(np.linalg.norm(self._err, axis=-1) < self.tol))

    def iterate(self, k: int = 1) -> None:
        """k damped-least-squares steps on every seed (each clipped into the limit box)."""
        for _ in range(int(k)):
            if self.done:
                return
            q, err = self.q, self._err
            x = self.goal - err
            # Forward-difference Jacobian for all seeds in one FK call: (n, dof, 3) -> (n, 3, dof).
            jac = ((np.asarray(self.robot.fk(q[:, None, :] + self._eye)) - x[:, None, :]) / self._eye[0, 0])
            jac = jac.transpose(0, 2, 1)
            jjt = jac @ jac.transpose(0, 2, 1) + self.damping2 * np.eye(3)
            dq = (jac.transpose(0, 2, 1) @ np.linalg.solve(jjt, err[..., None]))[..., 0]
            self.q = np.clip(q + dq, self.lo, self.hi)
            self._err = self._error(self.q)
            self.iterations += 1

    def best(self) -> tuple[np.ndarray, float]:
        """(q, EE error in m): the solution nearest to q_ref among those within tolerance, else
        the most accurate one."""
        dist = np.linalg.norm(self._err, axis=-1)
        ok = dist < self.tol
        if ok.any():
            cand = np.flatnonzero(ok)
            i = cand[np.argmin(np.linalg.norm(self.q[cand] - self.q_ref, axis=-1))]
        else:
            i = int(np.argmin(dist))
        return self.q[i].copy(), float(dist[i])


def solve_ik(robot, goal, q_ref, **kw) -> tuple[np.ndarray, float]:
    """One-shot: run an `IkSolver` to convergence and return (q, EE error in m)."""
    s = IkSolver(robot, goal, q_ref, **kw)
    s.iterate(s.max_iterations)
    return s.best()
