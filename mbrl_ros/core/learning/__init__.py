"""PETS-style model learning from nothing: explore -> train -> MPC episodes -> retrain (ROS-free)."""
from .agent import MpcAgent, planner_config  # noqa: F401
