"""mbrl_ros: learned-model predictive control for robot arms on ROS 2.

`mbrl_ros.core` holds the algorithms and imports no ROS; `mbrl_ros.nodes` holds one thin
rclpy node per file; `mbrl_ros.ros` holds the plumbing those nodes share.
"""
__version__ = '0.1.0'
