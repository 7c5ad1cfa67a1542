"""World-model data: transitions, exploration, sim collection, rosbag2 MCAP logs (ROS-free)."""
from mbrl_ros.core.data.bags import BagError, read_bag, write_bag
from mbrl_ros.core.data.dataset import DatasetError, TransitionDataset

__all__ = ['TransitionDataset', 'DatasetError', 'read_bag', 'write_bag', 'BagError']
