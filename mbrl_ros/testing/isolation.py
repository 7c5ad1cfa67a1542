"""Give each test session its own DDS world: a ROS_DOMAIN_ID of its own and discovery and traffic
confined to this machine, set before rclpy is imported so every child process inherits it.

`MBRL_TEST_DISCOVERY_RANGE` picks how the session stays on this machine:

- unset (the default): UDP on 127.0.0.1 only, no shared memory. ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET,
  ROS_STATIC_PEERS=127.0.0.1 and FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_udp_localhost.xml
  (found by mbrl_ros.resources, so a clean checkout needs nothing set by hand). Every participant
  binds its UDP sockets to 127.0.0.1 and joins the discovery multicast group on the loopback
  interface only. Why not LOCALHOST: under it rmw_fastrtps forces Fast DDS's shared-memory transport,
  whose locks a SIGKILLed process can leave held, blocking publishers for seconds with the GIL held
  (docs/reliability.md). A caller's FASTDDS_DEFAULT_PROFILES_FILE is replaced: the point is to know
  what the session runs on. The profile wins over FASTDDS_BUILTIN_TRANSPORTS (checked with SHM,
  DEFAULT, LARGE_DATA: no shared-memory thread).
- `LOCALHOST`: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST as before (shared memory + UDP); static peers
  and the profile are removed (rmw_fastrtps ignores the profile's transports under LOCALHOST).
- anything else (`SUBNET`, `OFF`, ...): copied into ROS_AUTOMATIC_DISCOVERY_RANGE, with the caller's
  ROS_STATIC_PEERS and FASTDDS_DEFAULT_PROFILES_FILE left as they are (for experiments).
"""
from __future__ import annotations

import os
import random

UDP_LOCALHOST = 'UDP_LOCALHOST'   # the default mode's name (MBRL_TEST_DISCOVERY_RANGE unset)
PROFILE = 'fastdds_udp_localhost.xml'


def udp_localhost_profile() -> str:
    """Absolute path of the shipped local-only UDP profile; FileNotFoundError naming where it looked."""
    from mbrl_ros.resources import find_resource  # stdlib only: safe before rclpy
    return str(find_resource('config', PROFILE))


def isolation_mode() -> str:
    """UDP_LOCALHOST, LOCALHOST or the raw discovery range from MBRL_TEST_DISCOVERY_RANGE."""
    return os.environ.get('MBRL_TEST_DISCOVERY_RANGE', '').strip() or UDP_LOCALHOST


def isolate_ros_session(seed: int | None = None) -> int:
    if 'MBRL_TEST_DOMAIN_ID' in os.environ:
        domain = int(os.environ['MBRL_TEST_DOMAIN_ID'])
    else:
        # 1..100: valid with FastDDS's default port mapping; 0 is the usual "real robot" domain.
        domain = random.Random(seed if seed is not None else os.getpid() ^ int.from_bytes(os.urandom(4), 'little')).randint(1, 100)
    mode = isolation_mode()
    if mode == UDP_LOCALHOST:
        try:
            profile = udp_localhost_profile()
        except FileNotFoundError as exc:
            # Never fall back to SUBNET without the profile: that would put the session on the LAN.
            raise RuntimeError(f'cannot isolate the ROS session on 127.0.0.1: {exc} (reinstall mbrl_ros, '
                               'or set MBRL_TEST_DISCOVERY_RANGE=LOCALHOST)') from exc
        os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SUBNET'
        os.environ['ROS_STATIC_PEERS'] = '127.0.0.1'
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
    elif mode == 'LOCALHOST':
        os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        os.environ.pop('ROS_STATIC_PEERS', None)     # a caller's remote peer would leave this machine
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    else:
        os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = mode
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ.pop('ROS_LOCALHOST_ONLY', None)  # deprecated since Jazzy; the range above replaces it
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    os.environ['PYTHONUNBUFFERED'] = '1'
    return domain


def describe_isolation() -> str:
    """One line for logs and the pytest header: what isolate_ros_session() set."""
    env = os.environ
    text = f"ROS_DOMAIN_ID={env.get('ROS_DOMAIN_ID')} ROS_AUTOMATIC_DISCOVERY_RANGE={env.get('ROS_AUTOMATIC_DISCOVERY_RANGE')}"
    if env.get('ROS_STATIC_PEERS'):
        text += f" ROS_STATIC_PEERS={env['ROS_STATIC_PEERS']}"
    if env.get('FASTDDS_DEFAULT_PROFILES_FILE'):
        text += f" FASTDDS_DEFAULT_PROFILES_FILE={env['FASTDDS_DEFAULT_PROFILES_FILE']}"
    return text + f' ({isolation_mode()})'
