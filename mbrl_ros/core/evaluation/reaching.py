"""The reaching benchmark: one evaluator for every controller (MPC, distilled policy, ...).

N random reachable goals (the FK of random joint configurations, so every goal is reachable),
each from a random start configuration at rest, on the MuJoCo `SimArm` at the control rate
(dt = 0.02 s: the effort is held for 10 physics steps at 500 Hz). Success: the end effector is
within `tolerance_m` (2 cm) of the goal `settle_s` (3 s) after the goal was sent.

A controller is any callable `(q, qd, goal) -> effort` (Nm on top of gravity compensation).
It may also have `reset()` (called before each episode: warm starts belong to one episode).
Its compute time is measured per call (perf_counter around the call only).
An invalid effort (wrong shape, non-finite) ends that episode as a failure: it never reaches
the simulated actuators.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.sim import SimArm, SimError

Controller = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class ReachingResult:
    success_rate: float
    final_distance_m: np.ndarray          # (N,) EE distance to the goal at settle_s
    successes: np.ndarray                 # (N,) bool
    step_ms: np.ndarray                   # compute time of every controller call [ms]
    failures: list = field(default_factory=list)   # (episode, reason) for invalid commands / sim errors

    def summary(self) -> dict:
        d, t = self.final_distance_m, self.step_ms
        pct = (lambda a, p: float(np.percentile(a, p)) if len(a) else float('nan'))
        return {
            'episodes': int(len(d)), 'success_rate': float(self.success_rate),
            'final_distance_m': {'median': pct(d, 50), 'p90': pct(d, 90), 'max': float(d.max()) if len(d) else
                                 float('nan'), 'mean': float(d.mean()) if len(d) else float('nan')},
            'step_ms': {'p50': pct(t, 50), 'p99': pct(t, 99), 'mean': float(t.mean()) if len(t) else float('nan')},
            'failures': len(self.failures),
        }


def sample_goals(robot: RobotModel, n: int, seed: int = 0, margin: float = 0.1):
    """(starts (n,dof), goal_q (n,dof), goals (n,3)): random start configurations and reachable EE
    goals (the FK of the random configurations goal_q)."""
    rng = np.random.default_rng(seed)
    starts = robot.sample_configurations(rng, n, margin=margin)
    goal_q = robot.sample_configurations(rng, n, margin=margin)
    return starts, goal_q, robot.fk(goal_q)


def evaluate_reaching(controller: Controller, robot='arm7', n_goals: int = 100, seed: int = 0,
                      settle_s: float = 3.0, tolerance_m: float = 0.02, dt: float = 0.02,
                      physics_rate_hz: float = 500.0, progress: bool = False,
                      on_step: Optional[Callable] = None) -> ReachingResult:
    """Run the benchmark. `on_step(episode, q, qd, goal, effort)` sees every step (e.g. to record)."""
    robot = robot if isinstance(robot, RobotModel) else RobotModel.load(robot)
    sim = SimArm(robot, physics_rate_hz=physics_rate_hz)
    substeps = max(1, int(round(dt * physics_rate_hz)))
    steps = int(round(settle_s / dt))
    starts, _, goals = sample_goals(robot, n_goals, seed)
    dist = np.full(n_goals, np.inf)
    times: list[float] = []
    failures = []
    episodes = range(n_goals)
    if progress:
        from tqdm import tqdm
        episodes = tqdm(episodes, desc='reaching', unit='goal')
    for i in episodes:
        sim.reset(q=starts[i])
        if hasattr(controller, 'reset'):
            controller.reset()
        goal = goals[i]
        try:
            for _ in range(steps):
                q, qd, _ = sim.observe()
                t0 = time.perf_counter()
                u = controller(q, qd, goal)
                times.append(1e3 * (time.perf_counter() - t0))
                u = np.asarray(u, dtype=np.float64).reshape(-1) if u is not None else None
                if u is None or u.shape != (robot.dof,) or not np.all(np.isfinite(u)):
                    raise ValueError(f'invalid command {None if u is None else u.tolist()}')
                if on_step is not None:
                    on_step(i, q, qd, goal, u)
                sim.set_command(u)
                sim.step(substeps)
            dist[i] = float(np.linalg.norm(sim.ee_position() - goal))
        except (ValueError, SimError) as exc:
            failures.append((i, str(exc)))
    ok = dist <= tolerance_m
    return ReachingResult(float(ok.mean()) if n_goals else 0.0, dist, ok, np.asarray(times), failures)
