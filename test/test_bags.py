"""rosbag2 MCAP logs: writing, reading with standard tooling, and turning real-robot-like
streams (jitter, out-of-order, gaps, other joint orders) into transitions."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from mbrl_ros.core.data.bags import (BagError, BagWriter, Streams, bag_custom_data,
                                     read_bag, read_streams, streams_to_dataset, write_bag)
from mbrl_ros.core.data.collect import collect_sim
from mbrl_ros.core.data.dataset import TransitionDataset
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.topics import COMMAND_TOPIC, JOINT_STATES_TOPIC

MS = 1_000_000


@pytest.fixture(scope='module')
def sim_data():
    return collect_sim('arm3', 300, seed=4, episode_len=120, progress=False)


def test_dataset_bag_round_trip_equals_dataset(tmp_path, sim_data):
    path = write_bag(sim_data, tmp_path / 'bag', start_time_ns=1_700_000_000 * 10**9)
    back = read_bag(path, RobotModel.load('arm3'))
    assert len(back) == len(sim_data)
    assert np.array_equal(back.states, sim_data.states)
    assert np.array_equal(back.actions, sim_data.actions)
    assert np.array_equal(back.next_states, sim_data.next_states)
    assert np.array_equal(back.episode, sim_data.episode)
    assert back.robot == 'arm3' and back.joint_names == sim_data.joint_names and back.dt == sim_data.dt
    # Without a robot, the bag's own metadata says which robot and joints.
    again = read_bag(path)
    assert again.robot == 'arm3' and np.array_equal(again.states, sim_data.states)
    assert again.meta['exploration'] == 'colored'


def test_bag_is_standard_rosbag2_mcap(tmp_path, sim_data):
    from rosbags.highlevel import AnyReader
    path = write_bag(sim_data, tmp_path / 'bag')
    meta = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['storage_identifier'] == 'mcap'
    assert [f for f in meta['relative_file_paths']][0].endswith('.mcap')
    n_eps = sim_data.num_episodes
    counts = {t['topic_metadata']['name']: t['message_count'] for t in meta['topics_with_message_count']}
    assert counts == {JOINT_STATES_TOPIC: len(sim_data) + n_eps, COMMAND_TOPIC: len(sim_data)}
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {JOINT_STATES_TOPIC: 'sensor_msgs/msg/JointState', COMMAND_TOPIC: 'std_msgs/msg/Float64MultiArray'}
        conn = next(c for c in reader.connections if c.topic == JOINT_STATES_TOPIC)
        _, t, raw = next(reader.messages(connections=[conn]))
        msg = reader.deserialize(raw, conn.msgtype)
        assert list(msg.name) == sim_data.joint_names
        assert np.array_equal(msg.position, sim_data.states[0, :3])
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t
    assert bag_custom_data(path)['robot'] == 'arm3'


def test_write_refuses_to_overwrite(tmp_path, sim_data):
    write_bag(sim_data, tmp_path / 'bag')
    with pytest.raises(FileExistsError):
        write_bag(sim_data, tmp_path / 'bag')
    write_bag(sim_data, tmp_path / 'bag', overwrite=True)


def test_non_contiguous_rows_still_round_trip(tmp_path, sim_data):
    # A holdout split leaves rows whose s' is not the next row's s: the writer must break the chain.
    _, hold = sim_data.split_by_episode(0.5, seed=0)
    shuffled = hold.subset(np.random.default_rng(0).permutation(len(hold))[:40])
    back = read_bag(write_bag(shuffled, tmp_path / 'bag'))
    assert len(back) == 40
    key = lambda ds: sorted(map(tuple, np.hstack([ds.states, ds.actions, ds.next_states])))  # noqa: E731
    assert key(back) == key(shuffled)


# ---- a real-robot-like stream --------------------------------------------------------------------
def _q(t):  # ground truth trajectory, linear in time so that interpolation is exact
    t = (np.asarray(t, dtype=np.int64) - 10**18)[..., None] * 1e-9
    return np.concatenate([0.5 + 0.3 * t, -0.2 * t], axis=-1) * np.ones(2)


QD = np.array([0.3, -0.2])


def _cmd(k):
    return np.array([0.01 * k, -0.02 * k])


def _zoh_mean(cmd_t, cmd_v, a, b, n=4001):
    """Brute-force time average of the zero-order-held commands over [a, b)."""
    ts = np.linspace(a, b, n, endpoint=False)
    j = np.searchsorted(cmd_t, ts, side='right') - 1
    return cmd_v[j].mean(0)


def _write_robot_stream(path, rng):
    """250 Hz joint states with stamp jitter, a dropout at 1.0-1.2 s, commands 3 ms after each
    50 Hz tick with a 100 ms command dropout, messages written out of order, names reordered
    and an extra joint (a gripper) in some messages."""
    t_state = np.arange(0, 2000 * MS, 4 * MS) + rng.integers(-MS // 2, MS // 2, size=500)
    t_state = t_state[(t_state < 1000 * MS) | (t_state > 1200 * MS)]
    t_state += 10**18  # a realistic epoch (the trajectory starts there)
    recv = t_state + rng.integers(MS // 10, MS, size=len(t_state))
    k = np.arange(100)
    cmd_t = 10**18 + k * 20 * MS + 3 * MS
    keep = (cmd_t < 10**18 + 400 * MS) | (cmd_t > 10**18 + 500 * MS)
    cmd_t, cmd_v = cmd_t[keep], np.array([_cmd(i) for i in k[keep]])
    events = [('js', i) for i in range(len(t_state))] + [('cmd', i) for i in range(len(cmd_t))]
    order = rng.permutation(len(events))  # fully out of order in the file
    with BagWriter(path) as w:
        for e in order:
            kind, i = events[e]
            if kind == 'cmd':
                w.write_command(cmd_t[i], cmd_v[i])
            elif i % 3 == 0:
                w.write_joint_state(recv[i], ['gripper', 'b', 'a'], np.r_[0.04, _q(t_state[i])[::-1]],
                                    np.r_[0.0, QD[::-1]], stamp_ns=t_state[i])
            else:
                w.write_joint_state(recv[i], ['a', 'b'], _q(t_state[i]), QD, stamp_ns=t_state[i])
        # Garbage that must be skipped, not crash the reader.
        w.write_command(cmd_t[5] + MS, [1.0, 2.0, 3.0])
        w.write_command(cmd_t[6] + MS, [np.nan, 0.0])
        w.write_joint_state(recv[10] + 1, ['a'], [0.0], stamp_ns=t_state[10] + 1)
    return t_state, cmd_t, cmd_v


def test_real_robot_stream_becomes_correct_transitions(tmp_path):
    rng = np.random.default_rng(0)
    t_state, cmd_t, cmd_v = _write_robot_stream(tmp_path / 'bag', rng)
    streams = read_streams(tmp_path / 'bag', ['a', 'b'])
    assert streams.skipped == {'commands: wrong length': 1, 'commands: non-finite': 1,
                               'joint_states: joint names do not match': 1}
    ds = streams_to_dataset(streams, dt=0.02, robot='toy')
    # Recover each transition's time from the (linear) trajectory.
    t0 = 10**18 + np.round((ds.states[:, 0] - 0.5) / 0.3 * 1e9).astype(np.int64)
    # States are the true trajectory at the ticks, velocities included.
    assert np.allclose(ds.states[:, :2], _q(t0), atol=1e-9)
    assert np.allclose(ds.next_states[:, :2], _q(t0 + 20 * MS), atol=1e-9)
    assert np.allclose(ds.states[:, 2:], QD) and np.allclose(ds.next_states[:, 2:], QD)
    # Actions are the commands in force over [t, t+dt), time-weighted.
    rel, cmd_rel = t0 - 10**18, cmd_t - 10**18
    expected = np.array([_zoh_mean(cmd_rel, cmd_v, t, t + 20 * MS) for t in rel])
    assert np.allclose(ds.actions, expected, rtol=0, atol=1e-5)
    # No transition spans the state dropout or the command dropout; they split episodes.
    rel = rel / MS
    assert not np.any((rel < 1200) & (rel + 20 > 1000))
    # The command sent at 383 ms is stale (> 50 ms old) from 433 ms until the next at 503 ms.
    assert not np.any((rel < 503) & (rel + 20 > 433))
    assert ds.num_episodes == 3
    # Nearly all the usable time is used: 2 s minus the 0.2 s dropout and the command gap.
    assert 70 <= len(ds) <= 90


def test_missing_velocities_are_estimated(tmp_path):
    t = 10**18 + np.arange(0, 400 * MS, 5 * MS)
    with BagWriter(tmp_path / 'bag') as w:
        for i, ti in enumerate(t):
            w.write_joint_state(ti, ['a', 'b'], _q(ti))  # no velocity field
        for k in range(20):
            w.write_command(10**18 + k * 20 * MS, _cmd(k))
    ds = streams_to_dataset(read_streams(tmp_path / 'bag'), dt=0.02)
    assert len(ds) == 19
    assert np.allclose(ds.states[:, 2:], QD, atol=1e-6)


def test_read_bag_errors_are_clear(tmp_path):
    with pytest.raises(BagError, match='no such bag'):
        read_bag(tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match='no metadata.yaml'):
        read_bag(tmp_path / 'empty')
    with BagWriter(tmp_path / 'cmds_only') as w:
        w.write_command(1, [0.0])
    with pytest.raises(BagError, match='no usable /joint_states'):
        read_bag(tmp_path / 'cmds_only')
    with BagWriter(tmp_path / 'states_only') as w:
        w.write_joint_state(1, ['a'], [0.0], [0.0])
    with pytest.raises(BagError, match='no usable /forward_effort_controller/commands'):
        read_bag(tmp_path / 'states_only')


def test_streams_round_trip_through_write_bag(tmp_path):
    t = np.arange(0, 200 * MS, 10 * MS, dtype=np.int64) + 10**18
    s = Streams(['a', 'b'], t, _q(t), np.tile(QD, (len(t), 1)), t[::2], [_cmd(k) for k in range(10)])
    back = read_streams(write_bag(s, tmp_path / 'bag'))
    assert np.array_equal(back.position, s.position) and np.array_equal(back.cmd_values, s.cmd_values)
    assert np.array_equal(back.js_time_ns, t) and back.joint_names == ['a', 'b']
    assert isinstance(streams_to_dataset(back), TransitionDataset)


def test_path_to_mcap_file_is_accepted(tmp_path, sim_data):
    path = write_bag(sim_data, tmp_path / 'bag')
    mcap = next(Path(path).glob('*.mcap'))
    assert len(read_bag(mcap)) == len(sim_data)


# ---- live collection against the simulated arm over DDS -----------------------------------------
def test_live_collect_against_sim_robot(tmp_path):
    import subprocess
    import sys

    from mbrl_ros.core.commands import check_command
    from mbrl_ros.testing.node_process import NodeProcess
    robot = RobotModel.load('arm3')
    with NodeProcess('sim_robot', 'robot:=arm3', 'publish_rate_hz:=250.0') as sim:
        out = tmp_path / 'live'
        res = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'collect', '--live', '--robot', 'arm3',
                              '--transitions', '100', '--amplitude', '0.5', '--out', str(out), '--npz',
                              '--no-progress', '--wait', '30'],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr + '\nsim_robot:\n' + sim.log_text(2000)
        sim.alive()
    assert 'sent 100 commands (0 refused' in res.stdout, res.stdout
    streams = read_streams(out, robot.joint_names)
    # Every command that went out is in the bag and was valid; the last one is the hold.
    assert len(streams.cmd_values) == 101
    assert all(check_command(c, robot) is None for c in streams.cmd_values)
    assert np.array_equal(streams.cmd_values[-1], np.zeros(3))
    # ~250 Hz joint states for ~2 s of exploration.
    assert len(streams.js_time_ns) > 200
    ds = read_bag(out, robot)
    # Timer jitter on a loaded machine can drop or split a few periods, not most of them.
    assert 60 <= len(ds) <= 101
    assert ds.robot == 'arm3' and ds.meta['source'] == 'live'
    assert np.abs(ds.deltas[:, 3:]).max() > 1e-3  # the arm moved under the exploration commands
    npz = TransitionDataset.load(str(out) + '.npz')
    assert np.array_equal(npz.states, ds.states)
