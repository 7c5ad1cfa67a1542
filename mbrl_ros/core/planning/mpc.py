"""Receding-horizon controller: what the `mpc_controller` node wires to ROS.

Holds the planner, the task cost and the goal; validates inputs (a malformed state or goal
is refused with a reason, never planned from); maps the node's parameters onto the typed
settings and refuses an invalid live change as a whole; swaps the dynamics model when the
world model changes; and moves the warm start by the number of control periods that really
elapsed since the previous plan.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from .config import CostWeights, PlannerConfig
from .costs import make_task_cost
from .ik import IkSolver
from .optimizers import Plan, Planner

# Parameter names of the node (docs/architecture.md) that differ from the settings' field names.
ALIASES = {'uncertainty_penalty': 'uncertainty'}


@dataclass
class MpcResult:
    command: Optional[np.ndarray]       # (dof,) effort to publish, None when refused
    plan: Optional[Plan]
    reason: Optional[str] = None        # why no command was produced


class MpcController:
    def __init__(self, robot, dynamics, config: Optional[PlannerConfig] = None,
                 weights: Optional[CostWeights] = None, dt: float = 0.02):
        self.robot = robot
        self.dt = float(dt)
        self.weights = (weights or CostWeights()).validated()
        self.cost = make_task_cost(robot, self.weights)
        self.planner = Planner((config or PlannerConfig()).validated(), dynamics, self.cost,
                               -np.asarray(robot.effort_max, float), np.asarray(robot.effort_max, float))
        self.command_limits = None        # what the safety filter lets through (None: the robot's limits)
        self.goal: Optional[np.ndarray] = None
        self._last_time: Optional[float] = None
        self._ik: Optional[IkSolver] = None
        self._ik_released = False         # the pull ended for this goal (the arm got there)
        self._ik_rng = np.random.default_rng(self.config.seed)
        self._bias = np.zeros(2 * robot.dof)          # offset-free MPC: the model's bias per step
        self._previous: Optional[tuple] = None        # (state, command) of the last plan

    @property
    def config(self) -> PlannerConfig:
        return self.planner.config

    # ---- inputs -------------------------------------------------------------------------------
    def set_goal(self, goal) -> Optional[str]:
        """Set the end-effector goal (3,); returns why it was refused, or None."""
        g = _finite(goal, 3)
        if g is None:
            return f'goal must be 3 finite numbers, got {goal!r}'
        if self.goal is None or not np.array_equal(g, self.goal):
            self._set_joint_goal(None)    # solved from the arm's configuration at the next plan
            self._ik = None
            self._ik_released = False
            self.planner.widen()
        self.goal = g
        return None

    # ---- joint-space guidance (IK of the goal, anytime) ---------------------------------------
    # IK iterations run per plan until the solver converges (a few plans after a new goal), so
    # no plan carries the whole solve; their time is taken out of that plan's budget.
    IK_ITERATIONS_PER_PLAN = 10
    # The IK target stays this far [rad] inside the joint-limit cost's band: a target on the band's edge
    # balanced the pull against the limit penalty short of it (arm7, seed 2000 goal 25: stuck 7.8 cm
    # away with two joints at the edge).
    IK_LIMIT_CLEARANCE = 0.1

    @property
    def joint_goal(self) -> Optional[np.ndarray]:
        """The IK solution the joint_goal cost term pulls towards (None: not (yet) used)."""
        term = self.cost.term('joint_goal')
        return None if term is None or term.target is None else term.target.copy()

    def _set_joint_goal(self, q) -> None:
        term = self.cost.term('joint_goal')
        if term is not None:
            term.target = None if q is None else np.asarray(q, float)

    def _advance_ik(self, q, ee_distance: float) -> None:
        term = self.cost.term('joint_goal')
        if self.goal is None or term is None or not term.enabled or self._ik_released:
            return
        release = self.weights.joint_goal_release
        if release > 0 and ee_distance < release:
            self._ik_released = True
            self._ik = None
            self._set_joint_goal(None)
            return
        if term.target is not None:
            return
        if self._ik is None:
            self._ik = IkSolver(self.robot, self.goal, q, rng=self._ik_rng,
                                margin=max(self.joint_limit_margin, 0.05) + self.IK_LIMIT_CLEARANCE)
        self._ik.iterate(self.IK_ITERATIONS_PER_PLAN)
        if self._ik.done:
            q_star, err = self._ik.best()
            # An unreachable goal (no solution within 2 cm) gets no joint guidance.
            if err < 0.02:
                self._set_joint_goal(q_star)

    # ---- what the arm will get ----------------------------------------------------------------
    def set_command_limits(self, limits) -> None:
        """Plan within what the safety filter sends (`mbrl_ros.core.safety.CommandLimits`; None: the
        robot's full effort range): action bounds = its scaled effort limits, every sequence rate-limited
        from the last command sent (`compute(last_action=...)`), the joint-limit margin at least its
        margin. A plan that counted on more effort than the filter passes stops short of the goal."""
        full = np.asarray(self.robot.effort_max, float)
        if limits is None:
            self.planner.set_action_bounds(-full, full, None)
        else:
            if limits.dof != self.robot.dof:
                raise ValueError(f'command limits for {limits.dof} joints, robot {self.robot.name} has {self.robot.dof}')
            # effort_limit_scale 0 still needs a non-empty box: a billionth of the limit is zero effort.
            hi = np.maximum(np.minimum(limits.effort, full), 1e-9 * full)
            self.planner.set_action_bounds(-hi, hi, limits.step)
        self.command_limits = limits
        self.cost.set_weights(self._planned_weights())

    @property
    def joint_limit_margin(self) -> float:
        """The margin planned with: the configured one, or the filter's if larger (it refuses commands
        that push a joint into its margin, so a plan counting on that band would be cut)."""
        m = self.weights.joint_limit_margin
        if self.command_limits is not None:
            m = max(m, float(np.max(self.command_limits.joint_margin)))
        return m

    def _planned_weights(self) -> CostWeights:
        return dataclasses.replace(self.weights, joint_limit_margin=min(self.joint_limit_margin, 1.0))

    def set_dynamics(self, dynamics) -> None:
        """Swap the model (a new bundle): the old warm start belongs to the old model."""
        if dynamics.state_dim != 2 * self.robot.dof or dynamics.action_dim != self.robot.dof:
            raise ValueError(f'model has state/action dims {dynamics.state_dim}/{dynamics.action_dim}, '
                             f'robot {self.robot.name} needs {2 * self.robot.dof}/{self.robot.dof}')
        self.planner.set_dynamics(dynamics)
        self._last_time = None
        self._forget_bias()

    def reset(self) -> None:
        self.planner.reset()
        self._last_time = None
        self._ik = None               # the arm may be anywhere now: solve again from there
        self._ik_released = False
        self._set_joint_goal(None)
        self._forget_bias()

    # ---- offset-free MPC ------------------------------------------------------------------------
    @property
    def model_bias(self) -> np.ndarray:
        """The estimated model bias per control step (S,), added to every predicted step."""
        return self._bias.copy()

    def _forget_bias(self) -> None:
        self._bias[:] = 0.0
        self._previous = None
        self.planner.model_offset = None

    def _update_bias(self, state: np.ndarray, shift: int, applied: Optional[np.ndarray] = None) -> None:
        """Fold the residual of the last period's prediction into the bias. `applied`: the command
        that was really in force (e.g. what the safety filter sent), else this controller's own."""
        gain = self.config.bias_gain
        if gain <= 0.0:
            self.planner.model_offset = None
            return
        if self._previous is not None and shift == 1:
            prev_state, own = self._previous
            residual = state - self.planner.predict_step(prev_state, own if applied is None else applied)
            if np.all(np.isfinite(residual)):
                self._bias += gain * (residual - self._bias)
        self.planner.model_offset = self._bias

    def check_parameters(self, values: Mapping[str, Any]) -> tuple[Optional[str], PlannerConfig, CostWeights]:
        """(reason or None, new config, new weights) for a batch of parameter changes."""
        values = {ALIASES.get(k, k): v for k, v in values.items()}
        cfg_fields = {f.name for f in dataclasses.fields(PlannerConfig)}
        w_fields = {f.name for f in dataclasses.fields(CostWeights)}
        try:
            cfg = dataclasses.replace(self.config, **{k: v for k, v in values.items() if k in cfg_fields})
            w = dataclasses.replace(self.weights, **{k: v for k, v in values.items() if k in w_fields})
        except TypeError as e:
            return str(e), self.config, self.weights
        errs = cfg.errors() + w.errors()
        return ('; '.join(errs) if errs else None), cfg, w

    def apply_parameters(self, values: Mapping[str, Any]) -> Optional[str]:
        """Apply live parameter changes (all or nothing); returns why they were refused, or None."""
        reason, cfg, w = self.check_parameters(values)
        if reason:
            return reason
        self.planner.configure(cfg)
        self.weights = w
        self.cost.set_weights(self._planned_weights())
        return None

    # ---- one control period -------------------------------------------------------------------
    def compute(self, q, qd, now: Optional[float] = None, spent_ms: float = 0.0, last_action=None) -> MpcResult:
        """Plan from the measured state; `now` (s) moves the warm start by the periods elapsed;
        `spent_ms`: time the caller already used of this period's budget (e.g. predicting the state);
        `last_action`: the command in force (the last one sent), the start of the rate limit."""
        dof = self.robot.dof
        qv, qdv = _finite(q, dof), _finite(qd, dof)
        if qv is None or qdv is None:
            return MpcResult(None, None, f'state must be {dof} finite positions and velocities')
        shift = 1
        if now is not None and self._last_time is not None:
            shift = int(np.clip(round((now - self._last_time) / self.dt), 1, self.config.horizon))
        t0 = time.perf_counter()
        state = np.concatenate([qv, qdv])
        ee_distance = np.inf if self.goal is None else float(np.linalg.norm(self.robot.fk(qv) - self.goal))
        self._advance_ik(qv, ee_distance)
        last = None if last_action is None else _finite(last_action, dof)
        self._update_bias(state, shift if now is not None else 1, applied=last)
        if ee_distance > self.config.std_carry_radius:
            self.planner.widen()
        spent_ms += 1e3 * (time.perf_counter() - t0)
        plan = self.planner.plan(state, self.goal, shift=shift,
                                 budget_ms=self.config.time_budget_ms - spent_ms, last_action=last)
        if now is not None:
            self._last_time = float(now)
        if plan.stats.iterations == 0:
            # Nothing was evaluated: sending the blind warm start would be a guess.
            self._previous = None
            return MpcResult(None, plan, 'time budget too small for a single planner iteration')
        self._previous = (state, plan.action.copy())
        return MpcResult(plan.action, plan)


def _finite(x, n: int) -> Optional[np.ndarray]:
    try:
        v = np.array(x, dtype=float).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        return None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        return None
    return v
