"""The test/script isolation (mbrl_ros.testing.isolation): a ROS domain of its own and, by default, UDP on
127.0.0.1 without Fast DDS's shared memory (docs/reliability.md, "Limit: LOCALHOST")."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mbrl_ros.resources import find_resource
from mbrl_ros.testing import isolation
from mbrl_ros.testing.isolation import UDP_LOCALHOST, isolate_ros_session, isolation_mode

_KEYS = ('MBRL_TEST_DISCOVERY_RANGE', 'MBRL_TEST_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_STATIC_PEERS',
         'FASTDDS_DEFAULT_PROFILES_FILE', 'ROS_DOMAIN_ID', 'ROS_LOCALHOST_ONLY')


@pytest.fixture
def env():
    """os.environ as isolate_ros_session() will see it, restored afterwards (the session's own isolation
    must survive these tests)."""
    saved = {k: os.environ.get(k) for k in _KEYS}
    for k in _KEYS:
        os.environ.pop(k, None)
    yield os.environ
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_default_is_udp_on_loopback_with_the_shipped_profile(env):
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = '/somewhere/else.xml'   # a caller's profile is replaced
    env['ROS_LOCALHOST_ONLY'] = '1'
    domain = isolate_ros_session(seed=3)
    assert isolation_mode() == UDP_LOCALHOST
    assert 1 <= domain <= 100 and env['ROS_DOMAIN_ID'] == str(domain)
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'SUBNET'
    assert env['ROS_STATIC_PEERS'] == '127.0.0.1'
    profile = Path(env['FASTDDS_DEFAULT_PROFILES_FILE'])
    assert profile.is_absolute() and profile == find_resource('config', 'fastdds_udp_localhost.xml')
    text = profile.read_text()
    assert '<address>127.0.0.1</address>' in text and '<useBuiltinTransports>false</useBuiltinTransports>' in text
    assert 'ROS_LOCALHOST_ONLY' not in env


def test_each_session_draws_its_own_domain_unless_given_one(env):
    assert len({isolate_ros_session() for _ in range(20)}) > 1
    env['MBRL_TEST_DOMAIN_ID'] = '42'                  # a parent session handing its domain to a child
    assert isolate_ros_session() == 42 and env['ROS_DOMAIN_ID'] == '42'


def test_localhost_stays_selectable(env):
    env['MBRL_TEST_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_STATIC_PEERS'] = '192.0.2.99'             # would leave the machine
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = '/somewhere/else.xml'
    isolate_ros_session()
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert 'ROS_STATIC_PEERS' not in env and 'FASTDDS_DEFAULT_PROFILES_FILE' not in env


def test_other_ranges_pass_through_with_the_callers_settings(env):
    env['MBRL_TEST_DISCOVERY_RANGE'] = 'SUBNET'
    env['ROS_STATIC_PEERS'] = '127.0.0.1'
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = '/my/profile.xml'
    isolate_ros_session()
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'SUBNET'
    assert env['ROS_STATIC_PEERS'] == '127.0.0.1' and env['FASTDDS_DEFAULT_PROFILES_FILE'] == '/my/profile.xml'


def test_a_missing_profile_is_an_error_not_a_lan_session(env, monkeypatch):
    def missing():
        raise FileNotFoundError('config fastdds_udp_localhost.xml not found')
    monkeypatch.setattr(isolation, 'udp_localhost_profile', missing)
    with pytest.raises(RuntimeError, match='LOCALHOST'):
        isolate_ros_session()
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE' not in env       # nothing half-set


# Two participants of this session's domain find each other; each reports its DDS threads and UDP sockets.
_PEER = textwrap.dedent("""
    import json, os, sys, time, psutil, rclpy
    from std_msgs.msg import String
    rclpy.init()
    me = sys.argv[1]
    node = rclpy.create_node('isolation_peer_' + me)
    pub = node.create_publisher(String, '/isolation_check', 10)
    heard, acked = set(), set()     # peers heard; peers that said they heard someone
    def on(m):
        name, ack = m.data.split(':')
        heard.add(name)
        if ack == '1':
            acked.add(name)
    node.create_subscription(String, '/isolation_check', on, 10)
    end = time.monotonic() + 30
    # Until the other one says it heard us: matching can complete in one direction first, and a peer
    # that left once it heard the other could leave before the other heard it.
    while time.monotonic() < end and not acked - {me}:
        pub.publish(String(data=f'{me}:{int(bool(heard - {me}))}'))
        rclpy.spin_once(node, timeout_sec=0.1)
    for _ in range(10):   # our acknowledgement, for the other one
        pub.publish(String(data=f'{me}:1'))
        rclpy.spin_once(node, timeout_sec=0.1)
    threads = sorted({open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')})
    socks = sorted({c.laddr.ip for c in psutil.Process().net_connections(kind='udp')})
    print(json.dumps({'heard': sorted(heard - {me}), 'threads': [t for t in threads if t.startswith('dds.')],
                      'udp': socks}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
""")


@pytest.mark.ros
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads thread names from /proc')
@pytest.mark.skipif(isolation_mode() != UDP_LOCALHOST, reason='checks the default (UDP on 127.0.0.1) isolation')
def test_session_participants_talk_on_loopback_only_without_shared_memory():
    # The session's own environment (test/conftest.py): what every node and probe of the suite runs with.
    procs = [subprocess.Popen([sys.executable, '-c', _PEER, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for name in ('a', 'b')]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert reports[0]['heard'] == ['b'] and reports[1]['heard'] == ['a'], reports   # discovery works
    for r in reports:
        assert r['threads'] and not [t for t in r['threads'] if t.startswith('dds.shm')], r
        assert r['udp'], r
        for ip in r['udp']:
            # unicast sockets on 127.0.0.1; the discovery multicast socket on its group address
            # (joined on the whitelisted loopback interface only)
            assert ip == '127.0.0.1' or ipaddress.ip_address(ip).is_multicast, r
