"""ament_python package for mbrl_ros (also installable with plain pip)."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'mbrl_ros'

# One console script per node module (docs/architecture.md: node name == executable name) plus the CLI.
NODES = sorted(
    os.path.basename(p)[:-3] for p in glob(os.path.join(PACKAGE, 'nodes', '*.py'))
    if not os.path.basename(p).startswith('_')
)


def _data_files():
    files = [
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.yaml')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ]
    for root, _dirs, names in os.walk('models'):
        if names:
            files.append(('share/' + PACKAGE + '/' + root, [os.path.join(root, n) for n in names]))
    return files


ROS_WHEELS = [
    'ros-rclpy', 'ros-rmw-fastrtps-cpp', 'ros-std-msgs', 'ros-sensor-msgs',
    'ros-geometry-msgs', 'ros-std-srvs', 'ros-diagnostic-msgs', 'ros-trajectory-msgs',
    'ros-rosgraph-msgs', 'ros-visualization-msgs', 'ros-nav-msgs',
]

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['robots/*.xml']},
    data_files=_data_files(),
    python_requires='>=3.10',
    # Robot-side runtime: no torch here (docs/architecture.md "Layers").
    install_requires=[
        'numpy>=1.24',
        'pyyaml>=6',
        'onnxruntime>=1.17',
        'onnx>=1.15',   # the planner's mean-only graphs are cut from the bundle's graphs at load
        'mujoco>=3.1',
        'mcap>=1.1',
        'rosbags>=0.10',
        'tqdm>=4.60',
        'matplotlib>=3.7',
    ],
    extras_require={
        'ros': ROS_WHEELS,
        # torch is pinned by the bootstrap to the CPU build (installed before this package).
        'train': ['torch>=2.2', 'onnx>=1.15'],
        # pybullet: real arms' URDFs as shipped (pybullet_data), the test zoo of foreign descriptions.
        'test': ['pytest>=7', 'hypothesis>=6', 'psutil>=5', 'onnx>=1.15', 'pybullet>=3.2'],
        # pytorch-mppi: the reference planner of 'mbrl-ros bench mppi-compare'.
        'bench': ['pytorch-mppi>=0.9', 'torch>=2.2'],
    },
    zip_safe=True,
    maintainer='mbrl_ros developers',
    maintainer_email='mbrl-ros@example.org',
    description='Model-based RL (PETS ensemble + CEM/iCEM MPC + safety filter + distilled policy) as ROS 2 nodes',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [f'{n} = {PACKAGE}.nodes.{n}:main' for n in NODES]
        + ['mbrl-ros = mbrl_ros.cli:main'],
    },
)
