"""`mbrl-ros launch`: runs ROS 2 YAML launch files without the `launch` package (not on PyPI).

    plan = parse_launch_file('sim_arm.launch.yaml', {'robot': 'arm3'})
    try:
        rc = ProcessManager(plan.processes).run()
    finally:
        plan.cleanup()
"""
from mbrl_ros.launch_runner.description import LaunchArgument, LaunchError, LaunchPlan, ProcessDescription
from mbrl_ros.launch_runner.parser import declared_arguments, parse_cli_args, parse_launch_file
from mbrl_ros.launch_runner.process_manager import ProcessManager, describe_exit

__all__ = ['LaunchArgument', 'LaunchError', 'LaunchPlan', 'ProcessDescription', 'ProcessManager',
           'declared_arguments', 'describe_exit', 'parse_cli_args', 'parse_launch_file']
