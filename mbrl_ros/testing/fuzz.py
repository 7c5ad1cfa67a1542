"""Fuzzing the nodes' subscribers over real DDS: hypothesis strategies for every input message,
and a campaign that feeds them to a running stack while checking what reaches the actuators.

Strategies (ROS message objects, ready to publish), each a mixture of fully random messages
and *nearly valid* ones (a good message with one or two fields broken), because the nearly
valid ones get past the first checks and exercise the code behind them:

- `joint_states(robot)`: sensor_msgs/JointState for /joint_states, /mbrl/state and the
  JointState commands (/mbrl/mpc/command, /mbrl/policy/command): wrong lengths, wrong /
  duplicate / missing / extra / garbage names, NaN, +-Inf, huge and subnormal values, stamps
  zero, far past, far future, nanosec >= 1e9, garbage frame ids, empty messages.
- `effort_arrays(robot)`: std_msgs/Float64MultiArray for /forward_effort_controller/commands.
- `goals(robot)`: geometry_msgs/PointStamped for /mbrl/goal (frames, NaN, out of reach).
- `active_models(good)`: std_msgs/String for /mbrl/world_model/active_model (garbage text,
  '<path> <sha>' with wrong paths / hashes / the good path with a wrong hash, huge strings).
- `strategy_for(topic, robot, good_identity)`: the one for a topic.

`generate(strategy, n, seed, fn)` drives hypothesis (generate phase only, no shrinking, no
database) and calls `fn(msg)` for n examples. `FuzzCampaign` publishes them on a topic of a
running stack (e.g. `mbrl-ros launch sim_arm.launch.yaml`) and counts crashed processes,
safety-filter commands outside the effort limits, and whether each node still answers.
"""
from __future__ import annotations

import functools
import math
import string
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped
from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings
from hypothesis import strategies as st
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String

from mbrl_ros.topics import (
    ACTIVE_MODEL_TOPIC, COMMAND_TOPIC, GOAL_TOPIC, JOINT_STATES_TOPIC,
    MPC_COMMAND_TOPIC, POLICY_COMMAND_TOPIC, PREDICTION_TOPIC, SAFETY_MODE_TOPIC, STATE_TOPIC
)

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
SPECIAL_FLOATS = [math.nan, -math.nan, math.inf, -math.inf, 1e308, -1e308, 1.7976931348623157e308,
                  5e-324, -5e-324, 0.0, -0.0, 1e-300, 1e15, -1e15, 2.0**53 + 1]

# Text without surrogates or NUL: rclpy cannot encode the first, and DDS strings end at the second
# (neither is something a node can receive).
_TEXT = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'), max_size=40)
_GARBAGE_TEXT = st.one_of(_TEXT, st.text(string.printable, min_size=0, max_size=300),
                          st.sampled_from(['', ' ', 'world', 'World', 'base_link', '/world', 'map', '\n',
                                           '..', '%s%s%n', "'; DROP TABLE", '\\x00']),
                          st.builds(lambda k: 'x' * k, st.integers(1000, 70000)))


@functools.lru_cache(maxsize=None)
def floats(scale: float = 10.0):
    """Any float64, weighted towards the nasty ones and towards plausible magnitudes."""
    return st.one_of(st.sampled_from(SPECIAL_FLOATS),
                     st.floats(allow_nan=True, allow_infinity=True),
                     st.floats(-scale, scale, allow_nan=False))


# Strategies are built once and reused (lru_cache, no flatmap): hypothesis validates every new
# strategy object, which made a fresh strategy per message cost tens of milliseconds.
@st.composite
def float_lists(draw, n: int, scale: float = 10.0):
    """Lists around the right length n: n, n +- 1, empty, one, longer, and rarely very long."""
    kind = draw(_LIST_KIND)
    if kind < 6:
        k = n if kind < 4 else draw(_SMALL_LENGTH_DELTA)
        k = max(0, n + k) if kind >= 4 else n
        return [draw(floats(scale)) for _ in range(k)]
    # Longer lists repeat a few drawn values: what matters about a long list is its length and
    # which nasty values it holds, not each element.
    vals = [draw(floats(scale)) for _ in range(draw(_FEW))]
    k = draw(_LONG_LENGTH)
    return (vals * k)[:k]


_LIST_KIND = st.integers(0, 7)
_SMALL_LENGTH_DELTA = st.sampled_from([-100, -1, 1, 2, 5, 50])   # (clamped at 0: empty lists)
_FEW = st.integers(1, 4)
_LONG_LENGTH = st.one_of(st.integers(10, 64), st.integers(1000, 20000))


def _good(draw, lo, hi) -> list:
    """One finite value inside [lo_i, hi_i] per element: a bound itself, or a uniform draw (numpy,
    seeded by hypothesis: in-range values need no search, and each hypothesis draw costs)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    how = draw(_GOOD_KIND)
    if how == 0:
        return lo.tolist()
    if how == 1:
        return hi.tolist()
    return np.random.default_rng(draw(_SEED)).uniform(lo, hi).tolist()


_GOOD_KIND = st.integers(0, 7)
_SEED = st.integers(0, 2**32 - 1)


@functools.lru_cache(maxsize=None)
def _bounded(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False)


@functools.lru_cache(maxsize=None)
def stamps(now: Optional[Callable[[], float]] = None):
    """builtin_interfaces/Time: zero, far past, far future, nanosec >= 1e9, any, and recent."""
    now = now or time.time

    def recent(offset):
        t = now() + offset
        return Time(sec=int(t) % INT32_MAX, nanosec=int((t % 1.0) * 1e9))
    return st.one_of(
        st.just(Time()),
        st.builds(Time, sec=st.integers(0, INT32_MAX), nanosec=st.integers(0, UINT32_MAX)),
        st.builds(Time, sec=st.integers(-2**31, -1), nanosec=st.integers(0, 999_999_999)),
        st.builds(Time, sec=st.sampled_from([1, INT32_MAX, 100_000, 4_000_000_000 % INT32_MAX]),
                  nanosec=st.sampled_from([0, 999_999_999, 1_000_000_000, UINT32_MAX])),
        st.builds(recent, st.sampled_from([0.0, -0.05, -1.0, -3600.0, 0.05, 1.0, 3600.0])),
        st.builds(recent, st.floats(-10.0, 10.0)),
    )


@functools.lru_cache(maxsize=None)
def joint_names(names: tuple):
    """Name lists: right, shuffled, one missing, duplicated, extra, renamed, empty, garbage."""
    names = list(names)
    n = len(names)
    return st.one_of(
        st.just(names), st.just(names),
        st.permutations(names),
        st.integers(0, n - 1).map(lambda i: names[:i] + names[i + 1:]),
        st.integers(0, n - 1).map(lambda i: names + [names[i]]),
        st.integers(0, n - 1).map(lambda i: names[:i] + [names[(i + 1) % n]] + names[i + 1:]),
        st.lists(_TEXT, max_size=3).map(lambda extra: names + extra),
        st.integers(0, n - 1).map(lambda i: names[:i] + [names[i].upper()] + names[i + 1:]),
        st.just([]),
        st.lists(_TEXT, min_size=0, max_size=n + 2),
        st.builds(lambda k: [f'j{i}' for i in range(k)], st.integers(100, 3000)),
    )


_COIN = st.booleans()
_ONE_IN_TEN = st.integers(0, 9)
_FIELD = st.sampled_from(['position', 'velocity', 'effort'])
_BROKEN_FIELDS = st.lists(_FIELD, max_size=2, unique=True)
_SPECIAL = st.sampled_from(SPECIAL_FLOATS)
_FRAMES = st.one_of(st.just(''), _GARBAGE_TEXT)


@st.composite
def joint_states(draw, robot, values_scale: float = 10.0):
    """sensor_msgs/JointState: random, or a plausible one (names, q, qd, effort within limits)
    with some fields broken."""
    dof = robot.dof
    msg = JointState()
    msg.header.stamp = draw(stamps())
    msg.header.frame_id = draw(_FRAMES)
    names = draw(joint_names(tuple(robot.joint_names)))
    msg.name = names
    k = len(names) if names else dof
    if draw(_COIN):  # nearly valid: good values with (maybe) one or two fields broken
        fields = {
            'position': _good(draw, np.resize(robot.q_min, k), np.resize(robot.q_max, k)),
            'velocity': _good(draw, -np.resize(robot.qd_max, k), np.resize(robot.qd_max, k)),
            'effort': _good(draw, -np.resize(robot.effort_max, k), np.resize(robot.effort_max, k)),
        }
        for name in draw(_BROKEN_FIELDS):
            fields[name] = draw(float_lists(k, values_scale))
        if draw(_ONE_IN_TEN) == 0:   # one entry replaced by a special value
            name = draw(_FIELD)
            if fields[name]:
                fields[name][draw(st.integers(0, len(fields[name]) - 1))] = draw(_SPECIAL)
    else:
        fields = {f: draw(float_lists(k, values_scale)) for f in ('position', 'velocity', 'effort')}
    msg.position, msg.velocity, msg.effort = fields['position'], fields['velocity'], fields['effort']
    return msg


_DIMS = st.lists(st.builds(MultiArrayDimension, label=_TEXT, size=st.integers(0, UINT32_MAX),
                          stride=st.integers(0, UINT32_MAX)), max_size=3)
_OFFSET = st.integers(0, UINT32_MAX)


@st.composite
def effort_arrays(draw, robot, marker: Optional[int] = None):
    """std_msgs/Float64MultiArray on the command topic. `marker`: put into layout.data_offset so a
    checker on the same topic can tell these messages from the safety filter's."""
    dof = robot.dof
    msg = Float64MultiArray()
    if draw(_COIN):
        data = _good(draw, -robot.effort_max, robot.effort_max)
        if draw(_COIN):
            data[draw(st.integers(0, dof - 1))] = draw(floats(1e3))
    else:
        data = draw(float_lists(dof, 1e3))
    msg.data = data
    msg.layout.dim = draw(_DIMS)
    msg.layout.data_offset = marker if marker is not None else draw(_OFFSET)
    return msg


_GOAL_FRAMES = st.one_of(st.sampled_from(['world', '', 'world']), _GARBAGE_TEXT)
_ANYWHERE = st.tuples(floats(5.0), floats(5.0), floats(5.0))


@functools.lru_cache(maxsize=None)
def _near(point: tuple):
    return st.tuples(*[st.floats(c - 0.3, c + 0.3) for c in point])


@st.composite
def goals(draw, robot=None, reach_point=(0.3, 0.1, 0.35)):
    """geometry_msgs/PointStamped: good frames and points mixed with wrong frames, NaN, far away."""
    msg = PointStamped()
    msg.header.stamp = draw(stamps())
    msg.header.frame_id = draw(_GOAL_FRAMES)
    x, y, z = draw(st.one_of(_near(tuple(reach_point)), _ANYWHERE))
    msg.point.x, msg.point.y, msg.point.z = float(x), float(y), float(z)
    return msg


def active_models(good_identity: Optional[str] = None):
    """std_msgs/String for /mbrl/world_model/active_model."""
    hexes = st.text('0123456789abcdef', min_size=64, max_size=64)
    paths = st.one_of(st.sampled_from(['/', '/tmp', '/etc', '/dev/zero', '/proc/self/mem', '.', '..',
                                       '/nonexistent/bundle', '~', '/dev/null', '../../../etc']),
                      _TEXT.map(lambda t: '/' + t))
    options = [
        _GARBAGE_TEXT,
        st.builds(lambda p, h: f'{p} {h}', paths, hexes),
        st.builds(lambda p, h: f'{p} {h}', paths, st.text('0123456789abcdefABCDEFg', max_size=70)),
        st.builds(lambda p, h: f'{p}\t{h}\n', paths, hexes),
    ]
    if good_identity:
        path, sha = good_identity.rsplit(None, 1)
        options += [
            st.builds(lambda h: f'{path} {h}', hexes),                       # right bundle, wrong hash
            st.builds(lambda i: f'{path} {sha[:i]}', st.integers(0, 63)),    # truncated hash
            st.just(f'{path} {sha.upper()}'),
            st.just(f'  {good_identity}  '),
            st.builds(lambda s: f'{path}/{s} {sha}', st.sampled_from(['..', '../arm7', '.', 'x'])),
        ]
    return st.builds(lambda s: String(data=s), st.one_of(*options))


def strategy_for(topic: str, robot, good_identity: Optional[str] = None, marker: Optional[int] = None):
    if topic == COMMAND_TOPIC:
        return effort_arrays(robot, marker=marker)
    if topic == GOAL_TOPIC:
        return goals(robot)
    if topic == ACTIVE_MODEL_TOPIC:
        return active_models(good_identity)
    return joint_states(robot)


def generate(strategy, n: int, fn: Callable, seed: int = 0) -> int:
    """Call `fn(example)` for n examples of `strategy` (hypothesis' generate phase: no shrinking,
    no example database, health checks off: speed of generation is not under test). Returns n."""
    done = [0]

    @hyp_seed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(strategy)
    def run(example):
        if done[0] < n:
            fn(example)
            done[0] += 1

    k = 0
    while done[0] < n and k < 20:   # hypothesis may stop early on a small space: draw again
        run()
        k += 1
        seed += 1
        run = hyp_seed(seed)(run)
    return done[0]


# ------------------------------------------------------------------------------------------------
# The campaign against a running stack

# (topic, message type, the nodes that subscribe to it)
TARGETS = [
    (COMMAND_TOPIC, Float64MultiArray, ['sim_robot', 'world_model']),
    (JOINT_STATES_TOPIC, JointState, ['state_estimator']),
    (STATE_TOPIC, JointState, ['world_model', 'mpc_controller', 'policy', 'safety_filter']),
    (GOAL_TOPIC, PointStamped, ['mpc_controller', 'policy']),
    (ACTIVE_MODEL_TOPIC, String, ['mpc_controller', 'policy', 'safety_filter']),
    (MPC_COMMAND_TOPIC, JointState, ['safety_filter']),
    (POLICY_COMMAND_TOPIC, JointState, ['safety_filter']),
]
NODES = ['sim_robot', 'state_estimator', 'world_model', 'mpc_controller', 'policy', 'safety_filter']
FUZZ_MARKER = 0x0F022E5   # layout.data_offset of the fuzzer's own effort arrays


@dataclass
class TopicResult:
    topic: str
    subscribers: list
    sent: int = 0
    publish_errors: int = 0
    seconds: float = 0.0
    crashed: list = field(default_factory=list)         # node names whose process exited
    filter_commands: int = 0                            # safety-filter commands seen meanwhile
    out_of_limit: int = 0
    first_bad: str = ''
    responsive: dict = field(default_factory=dict)      # node -> 'yes' or why not
    internal_errors: dict = field(default_factory=dict)  # node -> increase of its internal_errors count
    error_texts: dict = field(default_factory=dict)      # node -> its diagnostics message about them


class FuzzCampaign:
    """Fuzz every subscriber of a running stack. `system`: a LaunchedSystem (mbrl_ros.testing.
    pytest_plugin) of sim_arm.launch.yaml; its probe publishes and watches."""

    def __init__(self, system, robot, good_identity: Optional[str] = None, rate_hz: float = 1000.0,
                 seed: int = 0, log: Callable[[str], None] = lambda s: None):
        from mbrl_ros.ros.conversions import LATCHED
        from mbrl_ros.testing.stack_observer import StackObserver
        self.system, self.robot, self.probe = system, robot, system.probe
        self.good_identity = good_identity
        self.period = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self.seed = seed
        self.log = log
        # the safety filter's commands only (the fuzzer publishes on the command topic too)
        self.watch = StackObserver(self.probe, robot, ('commands', 'diagnostics'), command_from='safety_filter',
                                   ignore=lambda m: m.layout.data_offset == FUZZ_MARKER, status_log=True)
        self.error_texts: dict = {}
        self._pubs = {t: self.probe.publisher(t, ty, LATCHED if t.endswith('active_model') else 10)
                      for t, ty, _ in TARGETS}

    # ---- checks ------------------------------------------------------------------------
    def crashed(self) -> list[str]:
        import psutil
        dead = []
        for name, pid in self.system.pids().items():
            try:
                p = psutil.Process(pid)
                if p.status() == psutil.STATUS_ZOMBIE or not p.is_running():
                    dead.append(name)
            except psutil.NoSuchProcess:
                dead.append(name)
        return dead

    def internal_errors(self, since: int = 0) -> dict:
        """Latest `internal_errors` counter each node reported on /diagnostics (and, in
        self.error_texts, the status message that came with a non-zero one)."""
        out = {}
        for _, name, _, message, vals in self.watch.statuses_since(since):
            node = name.split('/')[-1]
            if 'internal_errors' in vals:
                try:
                    out[node] = int(float(vals['internal_errors']))
                except ValueError:
                    continue
                if out[node]:
                    self.error_texts[node] = message + ' | ' + '; '.join(
                        f'{k}={vals[k]}' for k in ('last_bad_input', 'last_error') if k in vals)
        return out

    def responsive(self, node: str, since: int, timeout: float = 10.0) -> str:
        """'yes' when the node answers a parameter get and has published /diagnostics since `since`."""
        try:
            self.probe.get_param(f'/{node}', 'use_sim_time', timeout=timeout)
        except Exception as exc:
            return f'no parameter answer ({type(exc).__name__})'

        def diag_seen():
            return any(name.endswith(node) for _, name, *_ in self.watch.statuses_since(since))
        if not self.probe.wait_until(diag_seen, timeout):
            return 'no /diagnostics'
        return 'yes'

    # ---- one topic ---------------------------------------------------------------------
    def fuzz_topic(self, topic: str, n: int) -> TopicResult:
        subscribers = next(s for t, _, s in TARGETS if t == topic)
        res = TopicResult(topic, subscribers)
        pub = self._pubs[topic]
        strategy = strategy_for(topic, self.robot, self.good_identity, marker=FUZZ_MARKER)
        before_cmds, before_bad, _ = self.watch.snapshot()
        before_err = self.internal_errors()
        next_t = time.monotonic()
        t0 = time.monotonic()
        progress = max(1, n // 10)

        def send(msg):
            nonlocal next_t
            try:
                pub.publish(msg)
                res.sent += 1
            except Exception as exc:   # a message the transport itself refuses (not a node input)
                res.publish_errors += 1
                if res.publish_errors == 1:
                    self.log(f'  publish refused: {exc!r}')
            if res.sent % progress == 0:
                self.log(f'  {topic}: {res.sent}/{n} sent, crashed so far: {self.crashed() or "none"}')
            if self.period:
                next_t += self.period
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_t = time.monotonic()
        generate(strategy, n, send, seed=self.seed)
        res.seconds = time.monotonic() - t0
        since = self.watch.status_count()
        time.sleep(1.5)   # let the last messages be handled and a diagnostics round go out
        res.crashed = self.crashed()
        for node in NODES:
            res.responsive[node] = 'exited' if node in res.crashed else self.responsive(node, since)
        after_err = self.internal_errors()
        res.internal_errors = {k: v - before_err.get(k, 0) for k, v in after_err.items()
                               if v - before_err.get(k, 0)}
        res.error_texts = {k: self.error_texts.get(k, '') for k in res.internal_errors}
        cmds, bad, first = self.watch.snapshot()
        res.filter_commands, res.out_of_limit, res.first_bad = cmds - before_cmds, bad - before_bad, first
        if topic == ACTIVE_MODEL_TOPIC and self.good_identity:
            pub.publish(String(data=self.good_identity))   # leave the good identity latched
        return res


def format_table(results: list[TopicResult]) -> str:
    head = ('topic', 'subscribers', 'sent', 'crashes', 'filter cmds', 'out of limit', 'responsive',
            'internal errors')
    rows = []
    for r in results:
        resp = ', '.join(f'{n}: {v}' for n, v in r.responsive.items() if v != 'yes') or 'all 6 nodes'
        errs = ', '.join(f'{k} +{v}' for k, v in r.internal_errors.items()) or '0'
        rows.append((r.topic, ', '.join(r.subscribers), str(r.sent), str(len(r.crashed)),
                     str(r.filter_commands), str(r.out_of_limit), resp, errs))
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]

    def line(cells):
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'
    out = [line(head), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    out += [line(r) for r in rows]
    return '\n'.join(out)


STACK_TOPICS = [JOINT_STATES_TOPIC, STATE_TOPIC, MPC_COMMAND_TOPIC, COMMAND_TOPIC,
                SAFETY_MODE_TOPIC, ACTIVE_MODEL_TOPIC, PREDICTION_TOPIC]
STACK_ARGS = {'robot': 'arm3', 'respawn': False}   # no node respawned: a crash must show
GOALS = [(0.3, 0.1, 0.35), (0.25, -0.15, 0.3), (0.35, 0.0, 0.25)]


def fuzz_stack(system, robot, n: int, topics=None, rate_hz: float = 1000.0, seed: int = 0,
               log: Callable[[str], None] = print) -> list[TopicResult]:
    """Fuzz each topic of `topics` (default: all TARGETS) with n messages on a running sim stack
    while the MPC is reaching for goals; one TopicResult per topic."""
    from mbrl_ros.ros.conversions import LATCHED
    from mbrl_ros.testing.goals import GoalSender
    probe = system.probe
    active = probe.wait_for(ACTIVE_MODEL_TOPIC, String, timeout=60, qos=LATCHED)
    if active is None:
        raise RuntimeError('no /mbrl/world_model/active_model from the stack')
    sender = GoalSender(probe, GOALS[0])
    try:
        mode = probe.wait_for(SAFETY_MODE_TOPIC, String, timeout=60, predicate=lambda m: m.data == 'mpc',
                              qos=LATCHED)
        log(f'stack up: model {active.data}; safety mode {"mpc" if mode else "not mpc yet"}')
        campaign = FuzzCampaign(system, robot, good_identity=active.data, rate_hz=rate_hz, seed=seed, log=log)
        results = []
        for i, topic in enumerate(topics or [t for t, _, _ in TARGETS]):
            sender.goal = GOALS[i % len(GOALS)]
            log(f'fuzzing {topic} with {n} messages')
            results.append(campaign.fuzz_topic(topic, n))
            r = results[-1]
            log(f'  done in {r.seconds:.1f} s: crashed {r.crashed or "none"}, {r.filter_commands} filter commands, '
                f'{r.out_of_limit} out of limit {r.first_bad}, responsive {r.responsive}, '
                f'internal errors {r.internal_errors or 0} {r.error_texts or ""}')
        return results
    finally:
        sender.close()
