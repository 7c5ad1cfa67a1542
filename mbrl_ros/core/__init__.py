"""ROS-free core: robot, simulation, estimation, dynamics, planning, safety, policy."""
