"""Closed-loop evaluation of controllers on the simulated arm (ROS-free)."""
from .reaching import (GoalSpec, ReachingResult, ReachMetrics, evaluate_reaching, judge_distances,
                       sample_goal_chain, sample_goals)

__all__ = ['GoalSpec', 'ReachMetrics', 'ReachingResult', 'evaluate_reaching', 'judge_distances',
           'sample_goal_chain', 'sample_goals']
