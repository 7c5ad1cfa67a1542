"""The reaching benchmark: one evaluator for every controller (MPC, distilled policy, baseline).

Goals are chained by default, as users drive an arm: goal i+1 is sent when goal i's window ends
and the arm starts from wherever it stopped (`start='chained'`). The goals are the FK of random
joint configurations in the middle `range_fraction` (70 %) of each joint range, at least
`min_height_m` (5 cm) above the floor (z = 0) and at least `min_separation_m` (10 cm) from the
previous goal (the first: from the start pose's end effector), so every goal is reachable and
every goal is a real move (`sample_goal_chain`). `start='home'` resets the arm to its home pose
before each goal, `start='random'` to a random configuration (the PETS loop's data episodes).

Each goal's window lasts `goal_s` (5 s) on the MuJoCo `SimArm` at the control rate (dt = 0.02 s:
the effort is held for 10 physics steps at 500 Hz). Per goal:
  * success: the end effector is within `tolerance_m` (2 cm) `settle_s` (3 s) after the goal was sent;
  * final distance: at the end of the window (5 s);
  * settle time: the first time after which the end effector stays within `settle_radius_m` (5 mm)
    to the end of the window (NaN when it is not within it at the end);
  * stalled: at some time more than `stall_far_m` (10 cm) away, it made less than `stall_progress_m`
    (5 cm) of progress in the next `stall_window_s` (1 s).

A controller is any callable `(q, qd, goal) -> effort` (Nm on top of gravity compensation).
It may also have `reset()` (called once at the start, and before each goal unless chained:
warm starts belong to one run of the arm). Its compute time is measured per call (perf_counter
around the call only). An invalid effort (wrong shape, non-finite) ends that goal as a failure:
it never reaches the simulated actuators; a chained run then continues from the home pose.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.sim import SimArm, SimError

Controller = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
STARTS = ('chained', 'home', 'random')


@dataclass(frozen=True)
class GoalSpec:
    """Where benchmark goals come from (the same for the ROS-free and the ROS benches)."""
    range_fraction: float = 0.7     # middle fraction of each joint range the goal configuration is drawn from
    min_height_m: float = 0.05      # goal at least this far above the floor (z = 0)
    min_separation_m: float = 0.10  # goal at least this far from the previous one


@dataclass(frozen=True)
class ReachMetrics:
    """How each goal is judged."""
    settle_s: float = 3.0           # success judged this long after the goal was sent
    tolerance_m: float = 0.02       # success radius
    goal_s: float = 5.0             # window per goal; the final distance is taken at its end
    settle_radius_m: float = 0.005  # settle time: first time after which the EE stays this close
    stall_far_m: float = 0.10       # a goal stalls when, further than this,
    stall_progress_m: float = 0.05  # the distance shrinks by less than this
    stall_window_s: float = 1.0     # within this long


@dataclass
class ReachingResult:
    success_rate: float
    final_distance_m: np.ndarray          # (N,) EE distance to the goal at the end of each window
    successes: np.ndarray                 # (N,) bool: within tolerance at settle_s
    step_ms: np.ndarray                   # compute time of every controller call [ms]
    failures: list = field(default_factory=list)   # (goal, reason) for invalid commands / sim errors
    distance_at_settle_m: Optional[np.ndarray] = None   # (N,) at settle_s
    settle_time_s: Optional[np.ndarray] = None          # (N,) NaN where it did not settle
    stalled: Optional[np.ndarray] = None                # (N,) bool
    start: str = 'chained'
    goal_s: float = 5.0                                 # window per goal

    def summary(self) -> dict:
        d, t = self.final_distance_m, self.step_ms
        pct = (lambda a, p: float(np.percentile(a, p)) if len(a) else float('nan'))
        out = {
            'episodes': int(len(d)), 'start': self.start, 'success_rate': float(self.success_rate),
            'final_distance_m': {'median': pct(d, 50), 'p90': pct(d, 90), 'max': float(d.max()) if len(d) else
                                 float('nan'), 'mean': float(d.mean()) if len(d) else float('nan')},
            'step_ms': {'p50': pct(t, 50), 'p99': pct(t, 99), 'mean': float(t.mean()) if len(t) else float('nan')},
            'failures': len(self.failures),
        }
        if self.settle_time_s is not None:
            st = self.settle_time_s
            settled = np.isfinite(st)
            out['settled_fraction'] = float(settled.mean()) if len(st) else float('nan')
            # Goals that never settled count as the whole window: the median is then honest.
            window = np.where(settled, st, self.goal_s)
            out['settle_time_s'] = {'median': pct(window, 50)}
            out['stalled'] = int(np.sum(self.stalled))
            out['distance_at_settle_m'] = {'median': pct(self.distance_at_settle_m, 50),
                                           'p90': pct(self.distance_at_settle_m, 90)}
        return out


def sample_goals(robot: RobotModel, n: int, seed: int = 0, margin: float = 0.1):
    """(starts (n,dof), goal_q (n,dof), goals (n,3)): random start configurations and reachable EE
    goals (the FK of the random configurations goal_q). The PETS loop's episode starts and goals."""
    rng = np.random.default_rng(seed)
    starts = robot.sample_configurations(rng, n, margin=margin)
    goal_q = robot.sample_configurations(rng, n, margin=margin)
    return starts, goal_q, robot.fk(goal_q)


def sample_goal_chain(robot: RobotModel, n: int, seed: int = 0, spec: GoalSpec = GoalSpec(),
                      start_q=None) -> tuple[np.ndarray, np.ndarray]:
    """(goal_q (n,dof), goals (n,3)) drawn as `GoalSpec` says, each at least min_separation_m from the
    one before (the first from the EE at `start_q`, default home). Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    span = robot.q_max - robot.q_min
    lo = robot.q_min + 0.5 * (1.0 - spec.range_fraction) * span
    hi = robot.q_max - 0.5 * (1.0 - spec.range_fraction) * span
    prev = robot.fk(robot.home_q if start_q is None else np.asarray(start_q, float))
    goal_q, goals = [], []
    while len(goals) < n:
        cand_q = rng.uniform(lo, hi, size=(64, robot.dof))
        cand = robot.fk(cand_q)
        for q, g in zip(cand_q, cand):
            if g[2] >= spec.min_height_m and np.linalg.norm(g - prev) >= spec.min_separation_m:
                goal_q.append(q)
                goals.append(g)
                prev = g
                if len(goals) == n:
                    break
    return np.asarray(goal_q), np.asarray(goals)


def judge_distances(d: np.ndarray, dt: float, m: ReachMetrics = ReachMetrics()) -> tuple[float, float, float, bool]:
    """From the EE distance after each control step of one goal window (d[k] at (k+1)·dt):
    (distance at settle_s, final distance, settle time or NaN, stalled)."""
    d = np.asarray(d, float)
    if len(d) == 0:
        return float('nan'), float('nan'), float('nan'), False
    k_settle = min(len(d), int(round(m.settle_s / dt))) - 1
    outside = np.nonzero(d > m.settle_radius_m)[0]
    last_out = int(outside[-1]) if len(outside) else -1
    # d[k] is at (k+1)·dt: within the radius from sample last_out + 1 on, at (last_out + 2)·dt.
    settle = float('nan') if last_out == len(d) - 1 else float((last_out + 2) * dt)
    w = int(round(m.stall_window_s / dt))
    stalled = False
    if len(d) > w:
        far = d[:-w] > m.stall_far_m
        progress = d[:-w] - d[w:]
        stalled = bool(np.any(far & (progress < m.stall_progress_m)))
    return float(d[k_settle]), float(d[-1]), settle, stalled


def evaluate_reaching(controller: Controller, robot='arm7', n_goals: int = 100, seed: int = 0,
                      settle_s: float = 3.0, tolerance_m: float = 0.02, dt: float = 0.02,
                      physics_rate_hz: float = 500.0, progress: bool = False,
                      on_step: Optional[Callable] = None, start: str = 'chained',
                      goal_s: Optional[float] = None, goals: Optional[np.ndarray] = None,
                      sim: Optional[SimArm] = None) -> ReachingResult:
    """Run the benchmark. `on_step(goal_index, q, qd, goal, effort)` sees every step (e.g. to record).
    `goal_s` (default max(settle_s, 5 s)) is each goal's window; `goals` overrides the sampled goals
    (chained/home starts); `sim` runs on a SimArm the caller built (e.g. with a payload)."""
    if start not in STARTS:
        raise ValueError(f'start must be one of {STARTS}, got {start!r}')
    robot = robot if isinstance(robot, RobotModel) else RobotModel.load(robot)
    metrics = ReachMetrics(settle_s=settle_s, tolerance_m=tolerance_m,
                           goal_s=max(settle_s, 5.0) if goal_s is None else float(goal_s))
    sim = sim or SimArm(robot, physics_rate_hz=physics_rate_hz)
    substeps = max(1, int(round(dt * sim.physics_rate_hz)))
    steps = int(round(metrics.goal_s / dt))
    if start == 'random':
        starts, _, sampled = sample_goals(robot, n_goals, seed)
    else:
        starts = np.repeat(robot.home_q[None], n_goals, axis=0)
        sampled = sample_goal_chain(robot, n_goals, seed)[1] if goals is None else None
    goals = np.asarray(sampled if goals is None else goals, float).reshape(-1, 3)
    n_goals = len(goals)
    at_settle = np.full(n_goals, np.inf)
    final = np.full(n_goals, np.inf)
    settle_t = np.full(n_goals, np.nan)
    stalled = np.zeros(n_goals, bool)
    times: list[float] = []
    failures = []
    episodes = range(n_goals)
    if progress:
        from tqdm import tqdm
        episodes = tqdm(episodes, desc=f'reaching ({start})', unit='goal')
    broken = True   # the arm must be (re)placed before the first goal and after a failure
    for i in episodes:
        if start != 'chained' or broken:
            sim.reset(q=starts[i])
            if hasattr(controller, 'reset'):
                controller.reset()
            broken = False
        goal = goals[i]
        dist = np.empty(steps)
        try:
            for k in range(steps):
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
                dist[k] = np.linalg.norm(sim.ee_position() - goal)
            at_settle[i], final[i], settle_t[i], stalled[i] = judge_distances(dist, dt, metrics)
        except (ValueError, SimError) as exc:
            failures.append((i, str(exc)))
            broken = True
    ok = at_settle <= tolerance_m
    return ReachingResult(float(ok.mean()) if n_goals else 0.0, final, ok, np.asarray(times), failures,
                          at_settle, settle_t, stalled, start, metrics.goal_s)
