"""rosbag2 (MCAP) logs of arm data, and turning them into transitions.

A bag holds what a real robot shows: `/joint_states` (sensor_msgs/JointState, any rate,
possibly jittery, out of order or with dropouts) and `/forward_effort_controller/commands`
(std_msgs/Float64MultiArray, the controller's joint order, at the control rate). The sim fast
path writes the same two topics, so one reader serves both.

Bags are written with `rosbags` (storage mcap, rosbag2 format 9, a ROS 2 Kilted typestore)
and carry metadata.yaml, so `ros2 bag info`, `ros2 bag play` and rosbags' AnyReader open them.
Our own facts about the run (robot, dt, exploration) go into metadata `custom_data`.

Reading (`read_bag`): states are resampled onto a grid of period dt within each gap-free
segment (linear interpolation between neighbouring samples); the action of a transition is
the command actually in force over [t, t+dt) (time-weighted when a command arrives mid-way,
as on a real robot where the command follows the state by a few ms); a transition whose
command is missing or stale is dropped and the episode split there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from mbrl_ros.core.data.dataset import TransitionDataset
from mbrl_ros.topics import COMMAND_TOPIC, JOINT_STATES_TOPIC

JOINT_STATE_TYPE = 'sensor_msgs/msg/JointState'
COMMAND_TYPE = 'std_msgs/msg/Float64MultiArray'
CUSTOM_PREFIX = 'mbrl_ros.'
DEFAULT_DT = 0.02
DEFAULT_MAX_GAP_S = 0.05      # a longer silence on /joint_states ends a segment
DEFAULT_EPISODE_GAP_S = 1.0   # the writer separates episodes by this much time

_TYPESTORE = None


class BagError(ValueError):
    """A bag that cannot be read as arm data; the message says what is wrong."""


def typestore():
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore
        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE


# ---- streams: the raw content of a bag as arrays ------------------------------------------------
@dataclass
class Streams:
    """The two topics as arrays. Times are int nanoseconds; joint columns in `joint_names` order.

    `js_stamp_ns` is the JointState header stamp (measurement time), `js_time_ns` the time the
    recorder received it; `velocity` rows may be NaN where a message carried no velocity.
    """
    joint_names: list[str]
    js_time_ns: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    cmd_time_ns: np.ndarray
    cmd_values: np.ndarray
    js_stamp_ns: Optional[np.ndarray] = None
    effort: Optional[np.ndarray] = None
    skipped: Optional[dict] = None  # reason -> count of messages not usable

    def __post_init__(self):
        self.joint_names = [str(n) for n in self.joint_names]
        d = len(self.joint_names)
        self.js_time_ns = np.asarray(self.js_time_ns, dtype=np.int64).reshape(-1)
        self.position = np.asarray(self.position, dtype=np.float64).reshape(-1, d)
        self.velocity = (np.full_like(self.position, np.nan) if self.velocity is None
                         else np.asarray(self.velocity, dtype=np.float64).reshape(-1, d))
        self.cmd_time_ns = np.asarray(self.cmd_time_ns, dtype=np.int64).reshape(-1)
        self.cmd_values = np.asarray(self.cmd_values, dtype=np.float64).reshape(-1, d)
        if self.js_stamp_ns is not None:
            self.js_stamp_ns = np.asarray(self.js_stamp_ns, dtype=np.int64).reshape(-1)
        if self.skipped is None:
            self.skipped = {}


# ---- writing ----------------------------------------------------------------------------------
class BagWriter:
    """Streaming rosbag2/MCAP writer for the two arm topics (used by the live recorder too).

        with BagWriter(path, custom={'robot': 'arm7', 'dt': 0.02}) as w:
            w.write_joint_state(t_ns, names, q, qd)
            w.write_command(t_ns, effort)
            w.write_raw(COMMAND_TOPIC, t_ns, cdr_bytes)   # already serialized (rclpy raw subscription)
    """

    def __init__(self, path: str | Path, custom: Optional[dict] = None, overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise FileExistsError(f'{self.path} exists; choose another --out or remove it')
            _remove_bag_dir(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ts = typestore()
        self._w = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        for k, v in (custom or {}).items():
            self._w.set_custom_data(CUSTOM_PREFIX + str(k), _custom_str(v))
        self._w.open()
        self._conns = {
            JOINT_STATES_TOPIC: self._w.add_connection(JOINT_STATES_TOPIC, JOINT_STATE_TYPE, typestore=self._ts),
            COMMAND_TOPIC: self._w.add_connection(COMMAND_TOPIC, COMMAND_TYPE, typestore=self._ts),
        }
        T = self._ts.types
        self._JS, self._Header, self._Time = (T[JOINT_STATE_TYPE], T['std_msgs/msg/Header'],
                                              T['builtin_interfaces/msg/Time'])
        self._F64, self._Layout = T[COMMAND_TYPE], T['std_msgs/msg/MultiArrayLayout']
        self._empty = np.zeros(0, dtype=np.float64)
        self.counts = {JOINT_STATES_TOPIC: 0, COMMAND_TOPIC: 0}

    def write_joint_state(self, t_ns: int, names: Sequence[str], position, velocity=None, effort=None,
                          stamp_ns: Optional[int] = None, frame_id: str = '') -> None:
        stamp_ns = int(t_ns if stamp_ns is None else stamp_ns)
        msg = self._JS(
            header=self._Header(stamp=self._Time(sec=stamp_ns // 1_000_000_000,
                                                 nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id),
            name=list(names), position=np.asarray(position, dtype=np.float64),
            velocity=self._empty if velocity is None else np.asarray(velocity, dtype=np.float64),
            effort=self._empty if effort is None else np.asarray(effort, dtype=np.float64))
        self.write_raw(JOINT_STATES_TOPIC, t_ns, self._ts.serialize_cdr(msg, JOINT_STATE_TYPE))

    def write_command(self, t_ns: int, values) -> None:
        msg = self._F64(layout=self._Layout(dim=[], data_offset=0),
                        data=np.asarray(values, dtype=np.float64))
        self.write_raw(COMMAND_TOPIC, t_ns, self._ts.serialize_cdr(msg, COMMAND_TYPE))

    def write_raw(self, topic: str, t_ns: int, data: bytes) -> None:
        self._w.write(self._conns[topic], int(t_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_bag(data: TransitionDataset | Streams, path: str | Path, *, start_time_ns: Optional[int] = None,
              episode_gap_s: float = DEFAULT_EPISODE_GAP_S, custom: Optional[dict] = None,
              overwrite: bool = False, robot_hash: str = '') -> Path:
    """Write a dataset (as the stream a robot would have produced) or raw streams to an MCAP bag.

    A dataset becomes, per episode, /joint_states at every tick (state, then each next state)
    and the action at each tick on the command topic; episodes (and any break inside one,
    where s' of a row is not s of the next) are separated by `episode_gap_s` of silence.
    """
    if isinstance(data, TransitionDataset):
        streams, extra = _dataset_to_streams(data, start_time_ns, episode_gap_s), _dataset_custom(data)
    elif isinstance(data, Streams):
        streams, extra = data, {}
    else:
        raise TypeError(f'write_bag takes a TransitionDataset or Streams, not {type(data).__name__}')
    extra.update(custom or {})
    if robot_hash:
        extra['description_hash'] = robot_hash
    with BagWriter(path, custom=extra, overwrite=overwrite) as w:
        # Interleave by time, as a recorder would have written them.
        order = np.argsort(np.concatenate([streams.js_time_ns, streams.cmd_time_ns]), kind='stable')
        n_js = len(streams.js_time_ns)
        stamps = streams.js_stamp_ns if streams.js_stamp_ns is not None else streams.js_time_ns
        has_vel = ~np.isnan(streams.velocity).any(axis=1)
        for i in order:
            if i < n_js:
                w.write_joint_state(streams.js_time_ns[i], streams.joint_names, streams.position[i],
                                    streams.velocity[i] if has_vel[i] else None,
                                    None if streams.effort is None else streams.effort[i],
                                    stamp_ns=stamps[i])
            else:
                j = i - n_js
                w.write_command(streams.cmd_time_ns[j], streams.cmd_values[j])
    return Path(path)


def _dataset_custom(ds: TransitionDataset) -> dict:
    out = {'robot': ds.robot, 'dt': ds.dt, 'joint_names': ','.join(ds.joint_names),
           'num_transitions': len(ds), 'num_episodes': ds.num_episodes}
    if ds.meta.get('description_hash'):
        out['description_hash'] = ds.meta['description_hash']
    for k, v in ds.meta.items():
        out.setdefault('meta.' + k, v)
    return out


def _dataset_to_streams(ds: TransitionDataset, start_time_ns: Optional[int], episode_gap_s: float) -> Streams:
    dt_ns = int(round(ds.dt * 1e9))
    gap_ns = int(round(episode_gap_s * 1e9))
    if gap_ns <= 2 * dt_ns:
        raise ValueError(f'episode_gap_s={episode_gap_s} must be well above dt={ds.dt}')
    t = int(time.time_ns() if start_time_ns is None else start_time_ns)
    d = ds.dof
    n = len(ds)
    # Rows i where a new chain starts: first row, episode change, or s'[i-1] != s[i].
    new_chain = np.ones(n, dtype=bool)
    if n > 1:
        new_chain[1:] = (ds.episode[1:] != ds.episode[:-1]) | np.any(ds.next_states[:-1] != ds.states[1:], axis=1)
    # Each row contributes its state at tick k; each chain's last row also contributes s' at tick k+1.
    js_t, js_s, cmd_t = [], [], []
    chain_start = np.flatnonzero(new_chain)
    chain_end = np.append(chain_start[1:], n)
    for a, b in zip(chain_start, chain_end):
        ticks = t + dt_ns * np.arange(b - a + 1, dtype=np.int64)
        js_t.append(ticks)
        js_s.append(np.vstack([ds.states[a:b], ds.next_states[b - 1:b]]))
        cmd_t.append(ticks[:-1])
        t = int(ticks[-1]) + gap_ns
    js_s = np.concatenate(js_s) if js_s else np.zeros((0, 2 * d))
    return Streams(ds.joint_names, np.concatenate(js_t) if js_t else np.zeros(0, np.int64),
                   js_s[:, :d], js_s[:, d:],
                   np.concatenate(cmd_t) if cmd_t else np.zeros(0, np.int64), ds.actions)


# ---- reading ----------------------------------------------------------------------------------
def bag_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.suffix == '.mcap' and (p.parent / 'metadata.yaml').is_file():
        p = p.parent
    if not p.is_dir():
        raise BagError(f'{p}: no such bag directory')
    if not (p / 'metadata.yaml').is_file():
        raise BagError(f'{p}: not a rosbag2 directory (no metadata.yaml)')
    return p


def bag_custom_data(path: str | Path) -> dict:
    """Our custom_data entries of a bag's metadata.yaml, without the 'mbrl_ros.' prefix."""
    with open(bag_dir(path) / 'metadata.yaml') as f:
        meta = yaml.safe_load(f) or {}
    custom = (meta.get('rosbag2_bagfile_information') or {}).get('custom_data') or {}
    return {k[len(CUSTOM_PREFIX):]: v for k, v in custom.items() if str(k).startswith(CUSTOM_PREFIX)}


def read_streams(path: str | Path, joint_names: Optional[Sequence[str]] = None,
                 js_topic: str = JOINT_STATES_TOPIC, cmd_topic: str = COMMAND_TOPIC) -> Streams:
    """Both topics of a bag as arrays, JointState columns reordered to `joint_names` by name
    (default: the names of the first JointState). Unusable messages are counted, not fatal."""
    from rosbags.highlevel import AnyReader
    path = bag_dir(path)
    names = list(joint_names) if joint_names is not None else None
    skipped: dict[str, int] = {}
    js_t, js_stamp, pos, vel, cmd_t, cmd_v = [], [], [], [], [], []
    index_cache: dict[tuple, Optional[np.ndarray]] = {}

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    with AnyReader([path], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if c.topic in (js_topic, cmd_topic)]
        if not any(c.topic == js_topic for c in conns):
            raise BagError(f'{path}: no {js_topic} topic (topics: {sorted({c.topic for c in reader.connections})})')
        for conn, t_ns, raw in reader.messages(connections=conns):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception:
                skip(f'{conn.topic}: undecodable')
                continue
            if conn.topic == js_topic:
                key = tuple(msg.name)
                if names is None:
                    names = list(key)
                if key not in index_cache:
                    where = {n: i for i, n in enumerate(key)}
                    index_cache[key] = (np.array([where[n] for n in names])
                                        if all(n in where for n in names) else None)
                idx = index_cache[key]
                p = np.asarray(msg.position, dtype=np.float64)
                if idx is None or len(p) != len(key):
                    skip('joint_states: joint names do not match')
                    continue
                p = p[idx]
                if not np.all(np.isfinite(p)):
                    skip('joint_states: non-finite position')
                    continue
                v = np.asarray(msg.velocity, dtype=np.float64)
                v = v[idx] if len(v) == len(key) else np.full(len(names), np.nan)
                if not np.all(np.isfinite(v)):
                    v = np.full(len(names), np.nan)  # estimated from positions later
                js_t.append(t_ns)
                js_stamp.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
                pos.append(p)
                vel.append(v)
            else:
                c = np.asarray(msg.data, dtype=np.float64)
                if names is not None and len(c) != len(names):
                    skip('commands: wrong length')
                    continue
                if not np.all(np.isfinite(c)):
                    skip('commands: non-finite')
                    continue
                cmd_t.append(t_ns)
                cmd_v.append(c)
    if names is None:
        raise BagError(f'{path}: no usable {js_topic} messages')
    d = len(names)
    # Commands seen before the first JointState had no length to check against.
    keep = [i for i, c in enumerate(cmd_v) if len(c) == d]
    if len(keep) != len(cmd_v):
        skipped['commands: wrong length'] = skipped.get('commands: wrong length', 0) + len(cmd_v) - len(keep)
    return Streams(names, np.array(js_t, dtype=np.int64), np.array(pos).reshape(-1, d),
                   np.array(vel).reshape(-1, d), np.array([cmd_t[i] for i in keep], dtype=np.int64),
                   np.array([cmd_v[i] for i in keep]).reshape(-1, d),
                   js_stamp_ns=np.array(js_stamp, dtype=np.int64), skipped=skipped)


def streams_to_dataset(streams: Streams, dt: float = DEFAULT_DT, robot: str = '',
                       max_gap_s: float = DEFAULT_MAX_GAP_S, command_timeout_s: Optional[float] = None,
                       time_source: str = 'auto', min_episode_len: int = 1,
                       meta: Optional[dict] = None) -> TransitionDataset:
    """Transitions at period `dt` from raw streams (see the module docstring)."""
    if time_source not in ('auto', 'header', 'receive'):
        raise ValueError(f"time_source must be 'auto', 'header' or 'receive', got {time_source!r}")
    dt_ns = int(round(dt * 1e9))
    if dt_ns <= 0:
        raise ValueError(f'dt must be positive, got {dt}')
    max_gap_ns = int(round(max_gap_s * 1e9))
    timeout_ns = int(round((max_gap_s if command_timeout_s is None else command_timeout_s) * 1e9))
    if timeout_ns < dt_ns:
        raise ValueError(f'the command timeout ({timeout_ns * 1e-9} s) must be at least dt ({dt} s): '
                         'a command is normally dt old when the next one arrives')
    d = len(streams.joint_names)

    t_js = _state_times(streams, time_source)
    # Sort (bags may hold out-of-order messages) and keep the last of equal stamps.
    order = np.argsort(t_js, kind='stable')
    t_js, pos, vel = t_js[order], streams.position[order], streams.velocity[order]
    last = np.append(t_js[1:] != t_js[:-1], True) if len(t_js) else np.zeros(0, bool)
    t_js, pos, vel = t_js[last], pos[last], vel[last]

    c_order = np.argsort(streams.cmd_time_ns, kind='stable')
    c_t, c_v = streams.cmd_time_ns[c_order], streams.cmd_values[c_order]
    c_last = np.append(c_t[1:] != c_t[:-1], True) if len(c_t) else np.zeros(0, bool)
    c_t, c_v = c_t[c_last], c_v[c_last]

    S, A, S2, E = [], [], [], []
    ep = 0
    breaks = np.flatnonzero(np.diff(t_js) > max_gap_ns) + 1 if len(t_js) > 1 else np.zeros(0, int)
    for seg_t, seg_p, seg_v in zip(np.split(t_js, breaks), np.split(pos, breaks), np.split(vel, breaks)):
        if len(seg_t) < 2 or seg_t[-1] - seg_t[0] < dt_ns:
            continue
        if np.isnan(seg_v).any():
            seg_v = _fill_velocity(seg_t, seg_p, seg_v)
        ticks = seg_t[0] + dt_ns * np.arange((seg_t[-1] - seg_t[0]) // dt_ns + 1, dtype=np.int64)
        x = _interp(seg_t, np.hstack([seg_p, seg_v]), ticks)
        a, ok = _commands_over(c_t, c_v, ticks[:-1], dt_ns, timeout_ns, d)
        # Episodes are the runs of consecutive valid transitions.
        run_start = np.flatnonzero(ok & ~np.append(False, ok[:-1]))
        run_end = np.flatnonzero(ok & ~np.append(ok[1:], False)) + 1
        for r0, r1 in zip(run_start, run_end):
            if r1 - r0 < min_episode_len:
                continue
            S.append(x[r0:r1])
            S2.append(x[r0 + 1:r1 + 1])
            A.append(a[r0:r1])
            E.append(np.full(r1 - r0, ep, dtype=np.int64))
            ep += 1
    meta = dict(meta or {})
    meta.setdefault('source', 'bag')
    for reason, count in streams.skipped.items():
        meta['skipped ' + reason] = count
    if not S:
        return TransitionDataset(np.zeros((0, 2 * d)), np.zeros((0, d)), np.zeros((0, 2 * d)),
                                 np.zeros(0, np.int64), dt, streams.joint_names, robot, meta)
    return TransitionDataset(np.concatenate(S), np.concatenate(A), np.concatenate(S2), np.concatenate(E),
                             dt, streams.joint_names, robot, meta)


def read_bag(path: str | Path, robot=None, dt: Optional[float] = None, **kwargs) -> TransitionDataset:
    """Transitions at period `dt` from a recorded bag (sim or real robot).

    `robot`: a RobotModel (joint order and name) or a built-in name; default the robot named in
    the bag's metadata, or the joint order of the first JointState. `dt`: default the bag's
    recorded dt, else 0.02 s. Other keywords go to `streams_to_dataset`.
    """
    custom = bag_custom_data(path)
    if dt is None:
        dt = float(custom.get('dt', DEFAULT_DT))
    if isinstance(robot, (str, Path)):
        from mbrl_ros.core.robot import RobotModel
        robot = RobotModel.load(robot)
    if robot is not None:
        names, robot_name = list(robot.joint_names), robot.name
    else:
        names = str(custom['joint_names']).split(',') if custom.get('joint_names') else None
        robot_name = str(custom.get('robot', ''))
    streams = read_streams(path, names)
    if len(streams.cmd_time_ns) == 0:
        raise BagError(f'{bag_dir(path)}: no usable {COMMAND_TOPIC} messages; transitions need the commands '
                       'that were in force (record that topic too)')
    meta = {k[len('meta.'):]: v for k, v in custom.items() if str(k).startswith('meta.')}
    meta['bag'] = str(bag_dir(path))
    return streams_to_dataset(streams, dt=dt, robot=robot_name, meta=meta, **kwargs)


# ---- helpers ----------------------------------------------------------------------------------
def _state_times(streams: Streams, time_source: str) -> np.ndarray:
    """Measurement times of the joint states: header stamps when they share the recorder's clock
    (commands only have the receive time, so both must be on one clock), else receive times."""
    if time_source == 'receive' or streams.js_stamp_ns is None or len(streams.js_stamp_ns) == 0:
        return streams.js_time_ns.copy()
    if time_source == 'header':
        return streams.js_stamp_ns.copy()
    offset = np.median(np.abs(streams.js_stamp_ns - streams.js_time_ns))
    if np.all(streams.js_stamp_ns > 0) and offset < 1e9:
        return streams.js_stamp_ns.copy()
    return streams.js_time_ns.copy()


def _interp(t: np.ndarray, y: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """Linear interpolation on int64 ns times; exact where a tick hits a sample."""
    i = np.clip(np.searchsorted(t, ticks, side='right') - 1, 0, len(t) - 1)
    j = np.minimum(i + 1, len(t) - 1)
    span = (t[j] - t[i]).astype(np.float64)
    w = np.where(span > 0, (ticks - t[i]).astype(np.float64) / np.where(span > 0, span, 1.0), 0.0)
    out = y[i].copy()
    moving = w > 0
    out[moving] += w[moving, None] * (y[j][moving] - y[i][moving])
    return out


def _fill_velocity(t: np.ndarray, p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Velocities a message did not carry, from finite differences of the positions."""
    est = np.gradient(p, (t - t[0]).astype(np.float64) * 1e-9, axis=0)  # relative: ns epochs lose precision
    return np.where(np.isnan(v), est, v)


def _commands_over(c_t: np.ndarray, c_v: np.ndarray, starts: np.ndarray, dt_ns: int, timeout_ns: int,
                   d: int) -> tuple[np.ndarray, np.ndarray]:
    """Time-weighted mean of the zero-order-held command over [start, start+dt), and whether it
    is valid (a command in force for the whole interval, none older than the timeout)."""
    n = len(starts)
    out = np.zeros((n, d))
    if len(c_t) == 0 or n == 0:
        return out, np.zeros(n, dtype=bool)
    ends = starts + dt_ns
    j0 = np.searchsorted(c_t, starts, side='right') - 1   # command in force at the start
    j1 = np.searchsorted(c_t, ends, side='left') - 1      # last command starting before the end
    j0c = np.maximum(j0, 0)
    # A command is oldest just before the next one replaces it: check the one in force at
    # the start (until the next arrives) and the last one (until the end); any in between
    # are less than dt apart.
    nxt = np.minimum(j0c + 1, len(c_t) - 1)
    first_until = np.where(j0c + 1 < len(c_t), np.minimum(ends, c_t[nxt]), ends)
    ok = ((j0 >= 0) & (first_until - c_t[j0c] <= timeout_ns)
          & (ends - c_t[np.maximum(j1, 0)] <= timeout_ns))
    single = ok & (j0 == j1)
    out[single] = c_v[j0c[single]]  # the usual case: one command for the whole period, exactly
    for k in np.flatnonzero(ok & (j1 > j0)):
        edges = np.concatenate([[starts[k]], c_t[j0[k] + 1:j1[k] + 1], [ends[k]]])
        w = np.diff(edges).astype(np.float64) / dt_ns
        out[k] = w @ c_v[j0[k]:j1[k] + 1]
    return out, ok


def _custom_str(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _remove_bag_dir(p: Path) -> None:
    if not (p / 'metadata.yaml').is_file() and any(p.iterdir()):
        raise FileExistsError(f'{p} exists and is not a bag directory; not removing it')
    for f in p.iterdir():
        if f.is_file() and (f.suffix == '.mcap' or f.name == 'metadata.yaml'):
            f.unlink()
    p.rmdir()
