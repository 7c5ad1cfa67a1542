"""Planning core (ROS-free, no torch): CEM/iCEM over a dynamics model with task costs.

    from mbrl_ros.core.planning import Planner, PlannerConfig, CostWeights, make_task_cost
    planner = Planner(PlannerConfig(), dynamics, make_task_cost(robot), -robot.effort_max, robot.effort_max)
    plan = planner.plan(state, goal)      # plan.action, plan.actions, plan.states, plan.ee_path, plan.stats
"""
from .config import CostWeights, PlannerConfig, field_specs, from_mapping
from .costs import (CostTerm, EffortCost, EndEffectorDistanceCost, JointGoalCost, JointLimitCost, JointVelocityCost,
                    TerminalDistanceCost, TerminalVelocityCost, TrajectoryBatch, TrajectoryCost,
                    UncertaintyCost, make_task_cost)
from .ik import IkSolver, solve_ik
from .mpc import MpcController, MpcResult
from .noise import ColoredNoise, powerlaw_psd_gaussian
from .optimizers import Plan, Planner, PlanStats
from .rollout import DoubleIntegratorDynamics, Dynamics, EnsembleDynamics, rollout

__all__ = [
    'CostWeights', 'PlannerConfig', 'field_specs', 'from_mapping',
    'CostTerm', 'EffortCost', 'EndEffectorDistanceCost', 'JointGoalCost', 'JointLimitCost', 'JointVelocityCost',
    'IkSolver', 'solve_ik',
    'TerminalDistanceCost', 'TerminalVelocityCost', 'TrajectoryBatch', 'TrajectoryCost',
    'UncertaintyCost', 'make_task_cost', 'ColoredNoise', 'powerlaw_psd_gaussian',
    'MpcController', 'MpcResult', 'Plan', 'Planner', 'PlanStats', 'DoubleIntegratorDynamics', 'Dynamics', 'EnsembleDynamics', 'rollout',
]
