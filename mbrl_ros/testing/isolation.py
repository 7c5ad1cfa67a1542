"""Give each test session its own DDS world: a ROS_DOMAIN_ID of its own and localhost-only
discovery, set before rclpy is imported so every child process inherits it."""
from __future__ import annotations

import os
import random


def isolate_ros_session(seed: int | None = None) -> int:
    if 'MBRL_TEST_DOMAIN_ID' in os.environ:
        domain = int(os.environ['MBRL_TEST_DOMAIN_ID'])
    else:
        # 1..100: valid with FastDDS's default port mapping; 0 is the usual "real robot" domain.
        domain = random.Random(seed if seed is not None else os.getpid() ^ int.from_bytes(os.urandom(4), 'little')).randint(1, 100)
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    # MBRL_TEST_DISCOVERY_RANGE=SUBNET: for runs without shared memory, which LOCALHOST forces with
    # rmw_fastrtps (docs/reliability.md); pair it with ROS_STATIC_PEERS=127.0.0.1 and
    # config/fastdds_udp_localhost.xml to stay on this machine.
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = os.environ.get('MBRL_TEST_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.pop('ROS_LOCALHOST_ONLY', None)  # deprecated since Jazzy; the range above replaces it
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    os.environ['PYTHONUNBUFFERED'] = '1'
    return domain
