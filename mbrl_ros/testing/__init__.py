"""Test support in the spirit of launch_pytest: ROS isolation and bringing launch files up."""
