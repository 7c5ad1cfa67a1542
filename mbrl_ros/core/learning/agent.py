"""The MPC as a ROS-free controller for the reaching evaluator and the PETS loop.

`MpcAgent(robot, bundle_or_runtime, planner=PlannerConfig(...))` is a callable
`(q, qd, goal) -> effort` with `reset()`, wrapping `MpcController` exactly as the
`mpc_controller` node does: the goal is set when it changes, `compute(q, qd, now)` plans with
the configured wall-clock `time_budget_ms`, and `now` advances by one control period per call
(the simulated arm waits for the plan, so exactly one period elapses between plans).

When a plan produces no command (budget too small for one iteration) the node sends nothing and
the robot keeps the last command until its timeout; the agent does the same (holds the last
command, zero at the start of an episode) and counts it in `no_command`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from mbrl_ros.core.planning import EnsembleDynamics, MpcController, PlannerConfig
from mbrl_ros.core.planning.config import CostWeights


def planner_config(base: Optional[PlannerConfig] = None, **changes) -> PlannerConfig:
    """`base` (default: the deployment settings, i.e. PlannerConfig() = config/mpc_controller.yaml)
    with `changes` applied (None values ignored), validated."""
    base = base or PlannerConfig()
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None}).validated()


class MpcAgent:
    def __init__(self, robot, model, planner: Optional[PlannerConfig] = None,
                 weights: Optional[CostWeights] = None, propagation: str = 'expectation',
                 num_particles: int = 1, dt: float = 0.02, seed: int = 0):
        """`model`: a ModelBundle (its `.ensemble` is used), an EnsembleRuntime, or any planner
        `Dynamics` (e.g. DoubleIntegratorDynamics)."""
        runtime = getattr(model, 'ensemble', model)
        if hasattr(runtime, 'predict'):
            dynamics = EnsembleDynamics(runtime, propagation=propagation, num_particles=num_particles, seed=seed)
        else:
            dynamics = runtime
        self.robot = robot
        self.dt = float(dt)
        self.mpc = MpcController(robot, dynamics, planner or PlannerConfig(), weights, dt=dt)
        self.iterations: list[int] = []      # planner iterations that ran, per call
        self.no_command = 0
        self._goal: Optional[np.ndarray] = None
        self._last = np.zeros(robot.dof)
        self._now = 0.0

    def reset(self) -> None:
        self.mpc.reset()
        self._goal = None
        self._last = np.zeros(self.robot.dof)
        self._now = 0.0

    def plan(self, q, qd, goal, last_action=None):
        """One control period's MpcResult: a new goal is set first; the clock moves one period."""
        goal = np.asarray(goal, float)
        if self._goal is None or not np.array_equal(goal, self._goal):
            reason = self.mpc.set_goal(goal)
            if reason:
                raise ValueError(reason)
            self._goal = goal.copy()
        res = self.mpc.compute(q, qd, now=self._now, last_action=last_action)
        self._now += self.dt
        self.iterations.append(res.plan.stats.iterations if res.plan is not None else 0)
        return res

    def __call__(self, q, qd, goal) -> np.ndarray:
        res = self.plan(q, qd, goal)
        if res.command is None:
            self.no_command += 1
            return self._last.copy()
        self._last = np.asarray(res.command, float).copy()
        return self._last.copy()
