"""Closed-loop evaluation of controllers on the simulated arm (ROS-free)."""
from .reaching import ReachingResult, evaluate_reaching, sample_goals

__all__ = ['ReachingResult', 'evaluate_reaching', 'sample_goals']
