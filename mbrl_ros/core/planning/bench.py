"""Planner micro-benchmark: how much of the 50 Hz budget the planner itself uses.

`benchmark_planner()` runs the planner in closed loop (the plant is the same model) on a
reaching task and times every plan. With the default trivial dynamics (a damped double
integrator: a few numpy ops per step) the time is the planner's own overhead — sampling,
coloured noise, clipping, rollout bookkeeping, FK and costs, elite refits — and the rest
of the budget is what is left for the world model. Pass `dynamics=` (e.g. an
EnsembleDynamics over an onnxruntime ensemble) to time the whole plan; the time spent
inside the dynamics is reported separately either way.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from .config import CostWeights, PlannerConfig
from .costs import make_task_cost
from .optimizers import Planner
from .rollout import DoubleIntegratorDynamics


class MeteredDynamics:
    """Wraps a Dynamics; counts the rows x steps through it (model evaluations) and the seconds
    spent in its step()."""

    def __init__(self, inner):
        self.inner = inner
        self.state_dim, self.action_dim = inner.state_dim, inner.action_dim
        self.num_particles = inner.num_particles
        self.evaluations = 0
        self.seconds = 0.0

    def begin_rollout(self, rows, rng):
        self.inner.begin_rollout(rows, rng)

    def step(self, states, actions):
        t = time.perf_counter()
        out = self.inner.step(states, actions)
        self.seconds += time.perf_counter() - t
        self.evaluations += states.shape[0]
        return out


def benchmark_planner(robot='arm7', config: Optional[PlannerConfig] = None, dynamics=None,
                      weights: Optional[CostWeights] = None, plans: int = 200, warmup: int = 10,
                      seed: int = 0) -> dict:
    """Time `plans` consecutive plans (closed loop, warm-started). Returns a dict of figures (ms)."""
    from mbrl_ros.core.robot import RobotModel  # MuJoCo import only when benchmarking
    if isinstance(robot, str):
        robot = RobotModel.load(robot)
    config = config or PlannerConfig(time_budget_ms=0.0)
    plant = DoubleIntegratorDynamics.from_robot(robot)
    model = MeteredDynamics(dynamics if dynamics is not None else plant)
    planner = Planner(config, model, make_task_cost(robot, weights), -robot.effort_max, robot.effort_max)
    rng = np.random.default_rng(seed)
    q_goal = np.clip(robot.home_q + rng.uniform(-0.6, 0.6, robot.dof), robot.q_min + 0.2, robot.q_max - 0.2)
    goal = robot.fk(q_goal)
    s = np.concatenate([robot.home_q, np.zeros(robot.dof)])
    total, in_model, iters, cut = [], [], [], 0
    for k in range(warmup + plans):
        model.seconds = 0.0
        t = time.perf_counter()
        plan = planner.plan(s, goal)
        dt = time.perf_counter() - t
        if k >= warmup:
            total.append(dt * 1e3)
            in_model.append(model.seconds * 1e3)
            iters.append(plan.stats.iterations)
            cut += plan.stats.budget_cut
        s = plant.step(s[None], plan.action[None])[0][0]
    total, in_model = np.asarray(total), np.asarray(in_model)
    overhead = total - in_model
    return {
        'robot': robot.name, 'planner': config.planner, 'horizon': config.horizon,
        'num_samples': config.num_samples, 'num_iterations': config.num_iterations,
        'num_elites': config.num_elites, 'time_budget_ms': config.time_budget_ms, 'plans': plans,
        'plan_p50_ms': float(np.percentile(total, 50)), 'plan_p99_ms': float(np.percentile(total, 99)),
        'plan_max_ms': float(total.max()),
        'dynamics_p50_ms': float(np.percentile(in_model, 50)),
        'overhead_p50_ms': float(np.percentile(overhead, 50)),
        'overhead_p99_ms': float(np.percentile(overhead, 99)),
        'iterations_mean': float(np.mean(iters)), 'budget_cut_fraction': cut / plans,
        'final_ee_error_m': float(np.linalg.norm(robot.fk(s[:robot.dof]) - goal)),
    }
