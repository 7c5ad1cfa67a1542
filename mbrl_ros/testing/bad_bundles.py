"""Corrupt and mismatched model bundles, each with the check `load_bundle` must refuse it with.

    bad = make_bad_bundles(good_dir, root / 'bad', count=100, outside=root / 'outside')
    for b in bad:   # b.kind, b.path (what to set as model_dir), b.check (expected failed check)
        ...

Every bundle is a copy of a good one broken in one way (KINDS: truncated or random-bytes
ONNX with a matching hash, a flipped byte without one, wrong dims in the YAML or in the graph,
wrong / duplicate joint names, wrong robot or description hash, missing files, YAML that is
broken, not a mapping, not UTF-8, an alias bomb or nested too deep, NaN / Inf weights, files
over the size caps (sparse, so they take no disk), symlinks and '..' out of the model roots,
...). `count` cycles through the kinds with a different random variation each time. Bundles
meant to be refused by model_roots are placed (or point) under `outside`, which must not be
inside a root; all the others are under `root`.

No torch: graphs are edited with `onnx`; the metadata is read and written with mbrl_ros.core.bundle's
read_bundle_meta / write_bundle_meta, and broken on purpose as raw text.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mbrl_ros.core.bundle import (BUNDLE_FILE, ENSEMBLE_FILE, MAX_ONNX_BYTES, MAX_YAML_BYTES, PARTITIONED_FILE,
                                  POLICY_FILE, read_bundle_meta, sha256_file, update_bundle_meta,
                                  write_bundle_meta)
from mbrl_ros.topics import ACTIVE_MODEL_TOPIC, DIAGNOSTICS_TOPIC, MPC_COMMAND_TOPIC, PREDICTION_TOPIC


@dataclass
class BadBundle:
    kind: str
    path: Path        # the model_dir value to try
    check: str        # the check that must fail


# ---- editing helpers ---------------------------------------------------------------------------
def _edit(d: Path, fn: Callable[[dict], None]) -> None:
    meta = read_bundle_meta(d)
    fn(meta)
    write_bundle_meta(d, meta)


def _rehash(d: Path, *names: str) -> None:
    """Record the current sha256 of these files (so the bytes, not the hash, are what is wrong)."""
    update_bundle_meta(d, {}, hash_files=names)


def _onnx_files(d: Path) -> list[str]:
    return [n for n in (ENSEMBLE_FILE, PARTITIONED_FILE) if (d / n).is_file()]


def _poison_weights(d: Path, value: float, rng) -> None:
    """Set one element of the largest float initializer of every ensemble graph to `value`."""
    import onnx
    from onnx import numpy_helper
    for name in _onnx_files(d):
        model = onnx.load(str(d / name))
        inits = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
        t = max(inits, key=lambda t: int(np.prod(t.dims)) if t.dims else 1)
        arr = numpy_helper.to_array(t).copy()
        flat = arr.reshape(-1)
        if value == 'all':
            flat[:] = np.float32(3e38)
        else:
            flat[rng.integers(0, flat.size)] = value
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        onnx.save(model, str(d / name))
    _rehash(d, *_onnx_files(d))


# ---- the kinds: fn(d, rng, ctx) breaks the copy d (or returns another path to use) -------------
def _truncated(d, rng, ctx):
    p = d / ENSEMBLE_FILE
    data = p.read_bytes()
    p.write_bytes(data[: int(rng.integers(1, len(data) - 1))])
    _rehash(d, ENSEMBLE_FILE)


def _random_bytes(d, rng, ctx):
    (d / ENSEMBLE_FILE).write_bytes(rng.bytes(int(rng.integers(1, 200_000))))
    _rehash(d, ENSEMBLE_FILE)


def _empty_onnx(d, rng, ctx):
    (d / ENSEMBLE_FILE).write_bytes(b'')
    _rehash(d, ENSEMBLE_FILE)


def _flipped_byte(d, rng, ctx):
    p = d / rng.choice(_onnx_files(d))
    data = bytearray(p.read_bytes())
    data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
    p.write_bytes(bytes(data))


def _appended_byte(d, rng, ctx):
    with open(d / ENSEMBLE_FILE, 'ab') as f:
        f.write(bytes([int(rng.integers(0, 256))]))


def _hash_of_other_file(d, rng, ctx):
    _edit(d, lambda m: m['files'].__setitem__(ENSEMBLE_FILE, {'sha256': sha256_file(d / BUNDLE_FILE)}))


def _yaml_dims(d, rng, ctx):
    _edit(d, lambda m: m['state'].__setitem__('dim', int(m['state']['dim']) + int(rng.choice([-2, -1, 1, 2, 8]))))


def _yaml_action_dims(d, rng, ctx):
    _edit(d, lambda m: m['action'].__setitem__('dim', int(m['action']['dim']) + 1))


def _graph_of_other_robot(d, rng, ctx):
    """ensemble.onnx of another robot (more joints) under this bundle.yaml, hashes matching."""
    other = ctx['other']
    for name in _onnx_files(d):
        shutil.copyfile(other / (name if (other / name).is_file() else ENSEMBLE_FILE), d / name)
    _rehash(d, *_onnx_files(d))


def _ensemble_size(d, rng, ctx):
    _edit(d, lambda m: m['ensemble'].__setitem__('size', int(m['ensemble']['size']) + 2))


def _reversed_joints(d, rng, ctx):
    _edit(d, lambda m: m.__setitem__('joint_names', list(reversed(m['joint_names']))))


def _renamed_joint(d, rng, ctx):
    def fn(m):
        i = int(rng.integers(0, len(m['joint_names'])))
        m['joint_names'][i] = m['joint_names'][i] + '_x'
    _edit(d, fn)


def _duplicate_joint(d, rng, ctx):
    _edit(d, lambda m: m['joint_names'].__setitem__(-1, m['joint_names'][0]))


def _robot_hash(d, rng, ctx):
    _edit(d, lambda m: m['robot'].__setitem__('description_hash', rng.bytes(32).hex()))


def _robot_name(d, rng, ctx):
    _edit(d, lambda m: m['robot'].__setitem__('name', str(rng.choice(['arm7', 'ur5', 'arm3x', '']))))


def _missing_yaml(d, rng, ctx):
    (d / BUNDLE_FILE).unlink()


def _missing_onnx(d, rng, ctx):
    (d / ENSEMBLE_FILE).unlink()


def _missing_listed(d, rng, ctx):
    _edit(d, lambda m: m['files'].__setitem__('extra.onnx', {'sha256': '0' * 64}))


def _missing_dir(d, rng, ctx):
    shutil.rmtree(d)


def _a_file_not_a_dir(d, rng, ctx):
    shutil.rmtree(d)
    d.write_text('not a directory\n')


def _yaml_syntax(d, rng, ctx):
    """A tail that can never parse (the file ends in block context, so these are errors there)."""
    tail = str(rng.choice(['[unclosed', '{a: 1', '- item', 'key: "unterminated', 'k: v: w', '%YAML 9.9']))
    with open(d / BUNDLE_FILE, 'a') as f:
        f.write('\n' + tail + '\n')


def _yaml_not_mapping(d, rng, ctx):
    (d / BUNDLE_FILE).write_text(str(rng.choice(['- a\n- b\n', '42\n', '"just a string"\n', '', 'null\n'])))


def _yaml_binary(d, rng, ctx):
    (d / BUNDLE_FILE).write_bytes(b'\xff\xfe\x00' + rng.bytes(int(rng.integers(10, 4000))))


def _yaml_bomb(d, rng, ctx):
    """Billion laughs: 9 levels of 10 aliases (a few hundred bytes, 10^9 nodes expanded)."""
    lines = ['a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]']
    for i in range(1, 10):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f'{cur}: &{cur} [' + ', '.join([f'*{prev}'] * 10) + ']')
    meta_text = (d / BUNDLE_FILE).read_text()
    (d / BUNDLE_FILE).write_text('\n'.join(lines) + '\n' + meta_text)


def _yaml_deep(d, rng, ctx):
    depth = int(rng.integers(300, 20000))
    (d / BUNDLE_FILE).write_text('x: ' + '[' * depth + ']' * depth + '\n' + (d / BUNDLE_FILE).read_text())


def _yaml_huge(d, rng, ctx):
    with open(d / BUNDLE_FILE, 'a') as f:
        f.write('# padding\n' + ('#' * 1023 + '\n') * (MAX_YAML_BYTES // 1024 + 1))


def _schema_missing_key(d, rng, ctx):
    key = str(rng.choice(['files', 'dt', 'robot', 'state', 'ensemble', 'joint_names']))
    _edit(d, lambda m: m.pop(key))


def _schema_version(d, rng, ctx):
    _edit(d, lambda m: m.__setitem__('schema_version', int(rng.choice([0, 2, 99]))))


def _schema_dt(d, rng, ctx):
    _edit(d, lambda m: m.__setitem__('dt', float(rng.choice([0.0, -0.02, float('nan'), float('inf'), 1e9]))))


def _schema_wrong_types(d, rng, ctx):
    _edit(d, lambda m: m['state'].__setitem__('dim', str(m['state']['dim'])))


def _schema_path_in_files(d, rng, ctx):
    _edit(d, lambda m: m['files'].__setitem__(str(rng.choice(['../../etc/passwd', 'sub/ensemble.onnx', '/etc/hosts'])),
                                              {'sha256': '0' * 64}))


def _schema_bad_sha(d, rng, ctx):
    _edit(d, lambda m: m['files'][ENSEMBLE_FILE].__setitem__('sha256', str(rng.choice(['abc', 'Z' * 64, '']))))


def _policy_unlisted(d, rng, ctx):
    shutil.copyfile(d / ENSEMBLE_FILE, d / POLICY_FILE)


def _policy_garbage(d, rng, ctx):
    (d / POLICY_FILE).write_bytes(rng.bytes(int(rng.integers(1, 5000))))
    _rehash(d, POLICY_FILE)


def _partitioned_truncated(d, rng, ctx):
    p = d / PARTITIONED_FILE
    if not p.is_file():
        shutil.copyfile(d / ENSEMBLE_FILE, p)
    p.write_bytes(p.read_bytes()[: int(rng.integers(1, 1000))])
    _rehash(d, PARTITIONED_FILE)


def _nan_weights(d, rng, ctx):
    _poison_weights(d, float('nan'), rng)


def _inf_weights(d, rng, ctx):
    _poison_weights(d, 'all', rng)


def _huge_onnx(d, rng, ctx):
    with open(d / ENSEMBLE_FILE, 'r+b') as f:   # sparse: the size is real, the disk blocks are not
        f.truncate(MAX_ONNX_BYTES + int(rng.integers(1, 1 << 30)))


def _outside_copy(d, rng, ctx):
    """A perfectly good bundle, but outside every model root."""
    out = ctx['outside'] / d.name
    shutil.move(str(d), str(out))
    return out


def _symlink_dir_out(d, rng, ctx):
    """A symlink inside the root pointing at a good bundle outside it."""
    out = ctx['outside'] / d.name
    shutil.move(str(d), str(out))
    d.symlink_to(out, target_is_directory=True)


def _symlink_file_out(d, rng, ctx):
    """ensemble.onnx inside the root is a symlink to an identical file outside it (hash matches)."""
    name = str(rng.choice(_onnx_files(d) + [BUNDLE_FILE]))
    out = ctx['outside'] / f'{d.name}_{name}'
    shutil.move(str(d / name), str(out))
    (d / name).symlink_to(out)


def _dotdot_out(d, rng, ctx):
    """root/<x>/../../outside/<bundle>: '..' leads out of the root."""
    out = ctx['outside'] / d.name
    shutil.move(str(d), str(out))
    rel = os.path.relpath(out, d.parent)
    return d.parent / 'x' / '..' / rel


def _symlink_devzero(d, rng, ctx):
    (d / ENSEMBLE_FILE).unlink()
    (d / ENSEMBLE_FILE).symlink_to('/dev/zero')


# kind -> (the check that must fail, the breaker)
KINDS: dict[str, tuple[str, Callable]] = {
    'truncated_onnx': ('onnx_load', _truncated),
    'random_bytes_onnx': ('onnx_load', _random_bytes),
    'empty_onnx': ('onnx_load', _empty_onnx),
    'flipped_byte': ('sha256', _flipped_byte),
    'appended_byte': ('sha256', _appended_byte),
    'hash_of_other_file': ('sha256', _hash_of_other_file),
    'yaml_state_dim': ('dims', _yaml_dims),
    'yaml_action_dim': ('dims', _yaml_action_dims),
    'graph_of_other_robot': ('dims', _graph_of_other_robot),
    'ensemble_size': ('dims', _ensemble_size),
    'reversed_joint_names': ('joint_names', _reversed_joints),
    'renamed_joint': ('joint_names', _renamed_joint),
    'duplicate_joint': ('joint_names', _duplicate_joint),
    'robot_hash': ('robot', _robot_hash),
    'robot_name': ('robot', _robot_name),
    'missing_bundle_yaml': ('missing_file', _missing_yaml),
    'missing_ensemble_onnx': ('missing_file', _missing_onnx),
    'missing_listed_file': ('missing_file', _missing_listed),
    'missing_directory': ('missing_file', _missing_dir),
    'file_not_directory': ('missing_file', _a_file_not_a_dir),
    'yaml_syntax': ('yaml', _yaml_syntax),
    'yaml_not_mapping': ('yaml', _yaml_not_mapping),
    'yaml_binary': ('yaml', _yaml_binary),
    'yaml_alias_bomb': ('yaml', _yaml_bomb),
    'yaml_deep_nesting': ('yaml', _yaml_deep),
    'yaml_huge': ('file_size', _yaml_huge),
    'schema_missing_key': ('schema', _schema_missing_key),
    'schema_version': ('schema', _schema_version),
    'schema_dt': ('schema', _schema_dt),
    'schema_wrong_type': ('schema', _schema_wrong_types),
    'schema_path_in_files': ('schema', _schema_path_in_files),
    'schema_bad_sha_text': ('schema', _schema_bad_sha),
    'policy_unlisted': ('sha256', _policy_unlisted),
    'policy_garbage': ('onnx_load', _policy_garbage),
    'partitioned_truncated': ('onnx_load', _partitioned_truncated),
    'nan_weights': ('test_inference', _nan_weights),
    'inf_weights': ('test_inference', _inf_weights),
    'huge_onnx_sparse': ('file_size', _huge_onnx),
    'outside_roots': ('model_roots', _outside_copy),
    'symlink_dir_out_of_root': ('model_roots', _symlink_dir_out),
    'symlink_file_out_of_root': ('model_roots', _symlink_file_out),
    'dotdot_out_of_root': ('model_roots', _dotdot_out),
    'symlink_to_dev_zero': ('model_roots', _symlink_devzero),
}


def make_bad_bundles(good: Path, root: Path, count: int = 100, outside: Path | None = None,
                     other_robot_bundle: Path | None = None, seed: int = 0, kinds=None) -> list[BadBundle]:
    """`count` broken copies of the bundle `good` under `root` (kinds cycled in KINDS order, each
    with its own random variation). `outside`: a directory outside every model root (needed for the
    model_roots kinds, skipped without it). `other_robot_bundle`: a bundle of a robot with another
    joint count (default: the shipped arm7, or arm3 when `good` is an arm7 bundle)."""
    good, root = Path(good).resolve(), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if outside is not None:
        Path(outside).mkdir(parents=True, exist_ok=True)
    if other_robot_bundle is None:
        from mbrl_ros.resources import default_model_dir
        robot = read_bundle_meta(good)['robot']['name']
        other_robot_bundle = default_model_dir('arm3' if robot == 'arm7' else 'arm7')
    ctx = {'outside': Path(outside) if outside is not None else None, 'other': Path(other_robot_bundle)}
    names = [k for k in (kinds or KINDS) if outside is not None or KINDS[k][0] != 'model_roots']
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kind = names[i % len(names)]
        check, breaker = KINDS[kind]
        d = root / f'{i:03d}_{kind}'
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)
        shutil.copytree(good, d, ignore=shutil.ignore_patterns('*.png', 'learn_report.yaml'))
        path = breaker(d, rng, ctx) or d
        out.append(BadBundle(kind, Path(path), check))
    return out


def identity_of(path: Path) -> str:
    """'<path> <sha256 of ensemble.onnx>' as an active_model announcement (zeros when unreadable),
    for offering a bad bundle straight to the active_model followers. The path is announced as given
    (made absolute, symlinks and '..' kept), so the followers' model_roots check sees what
    world_model's saw; the hash is that of the file it leads to, so only the roots can refuse it."""
    try:
        p = Path(path).absolute()
        f = p.resolve() / ENSEMBLE_FILE
        sha = sha256_file(f) if f.is_file() and f.stat().st_size <= MAX_ONNX_BYTES else '0' * 64
        return f'{p} {sha}'
    except OSError:
        return f'{path} {"0" * 64}'


# ---- against a running stack ------------------------------------------------------------------
@dataclass
class Outcome:
    bundle: BadBundle
    refused: bool
    check_named: bool       # '[<check>]' in the set-parameters reason
    reason: str
    seconds: float          # how long the set-parameters call took
    offered_to_followers: bool


@dataclass
class SwapRunReport:
    outcomes: list
    active_models: list          # every identity seen on active_model during the run
    good_identity: str
    run_s: float
    baseline: dict               # period stats with no swaps, same length of time
    during: dict                 # period stats while the bad bundles were tried
    predictions: dict            # count and largest gap of /mbrl/world_model/prediction during the run
    follower_refusals: dict      # node -> increase of its refused_models counter
    models_in_use: dict          # node -> the model it ran at the end
    mpc_counts: dict = field(default_factory=dict)    # increase of mpc_controller's counters during the run
    follower_superseded: dict = field(default_factory=dict)  # node -> announcements superseded unvalidated
    sent_gaps: dict = field(default_factory=dict)     # gaps between the commands' stamps (the MPC side)
    after: dict = field(default_factory=dict)  # period stats with no swaps, as long as the run, right after it
    cpu: dict = field(default_factory=dict)   # node -> (CPU cores used in the baseline, during the run)
    scheduling: dict = field(default_factory=dict)   # node -> its control thread's scheduling (diagnostics)


def period_stats(times: list, start: float, end: float, period: float) -> dict:
    """Missed control periods of the MPC between `start` and `end` (monotonic seconds): the
    mpc_controller sends one /mbrl/mpc/command per period; a gap g between consecutive commands
    (and from start to the first / last to end) misses round(g / period) - 1 periods."""
    ts = sorted(t for t in times if start <= t <= end)
    edges = [start] + ts + [end]
    missed = sum(max(0, int(round((b - a) / period)) - 1) for a, b in zip(edges, edges[1:]))
    gaps = np.diff(ts) if len(ts) > 1 else np.array([end - start])
    expected = int(round((end - start) / period))
    return {'commands': len(ts), 'expected': expected, 'missed_periods': missed,
            'max_gap_ms': float(1e3 * gaps.max()) if len(gaps) else float('nan')}


def run_against_stack(system, bad: list, period: float = 0.02, baseline_s: float | None = None,
                      offer_to_followers: bool = True, log: Callable[[str], None] = print) -> SwapRunReport:
    """Set each bad bundle as world_model's model_dir on a running sim stack whose MPC is reaching
    (sim_arm.launch.yaml), and announce it on /mbrl/world_model/active_model as well so that
    mpc_controller, policy and safety_filter must refuse it too (the model_roots cases included:
    the followers enforce the same roots, see docs/security.md). Measures missed MPC periods
    during the run against a baseline of the same length before it."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from mbrl_ros.ros.conversions import LATCHED
    from mbrl_ros.testing.goals import GoalSender
    probe = system.probe
    lock = threading.Lock()
    cmd_times: list = []
    cmd_stamps: list = []    # (receipt time, the command's stamp = its state's stamp, ROS seconds)
    pred_times: list = []

    def stamp(buf):
        def cb(msg):
            with lock:
                buf.append(time.monotonic())
        return cb
    def on_cmd(msg):
        with lock:
            cmd_times.append(time.monotonic())
            cmd_stamps.append((cmd_times[-1], msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec))
    probe.node.create_subscription(JointState, MPC_COMMAND_TOPIC, on_cmd, 50)
    probe.node.create_subscription(JointState, PREDICTION_TOPIC, stamp(pred_times), 50)
    wm_gids: set = set()
    heard: list = []   # (publisher gid, text) of every active_model message, in order

    def on_active(msg, info):
        with lock:
            heard.append((bytes((info.get('publisher_gid') or {}).get('data', b'')), msg.data))

    def world_model_actives() -> list:
        # Only world_model's announcements: this probe announces the bad bundles on the same topic.
        # Matched when asked, not on receipt: the latched message can arrive before the graph
        # knows its publisher, and world_model sends it only once.
        if not wm_gids:
            wm_gids.update(bytes(i.endpoint_gid) for i in probe.node.get_publishers_info_by_topic(
                ACTIVE_MODEL_TOPIC) if i.node_name == 'world_model')
        with lock:
            got = list(heard)
        return [text for gid, text in got
                if gid and any(g[:len(gid)] == gid or gid[:len(g)] == g for g in wm_gids)]
    probe.node.create_subscription(String, ACTIVE_MODEL_TOPIC, on_active, LATCHED)
    diag = probe.subscribe(DIAGNOSTICS_TOPIC, DiagnosticArray, 100)
    announce = probe.publisher(ACTIVE_MODEL_TOPIC, String, LATCHED)
    good = probe.wait_until(lambda: (world_model_actives() or [None])[-1], 60)
    if not good:
        raise RuntimeError('no active_model from world_model')
    sender = GoalSender(probe, (0.3, 0.1, 0.35))
    try:
        if not probe.wait_until(lambda: len(cmd_times) > 25, 60):
            raise RuntimeError('the MPC is not sending commands')
        before = _diag_values(diag)
        baseline_s = baseline_s if baseline_s is not None else max(5.0, 0.5 * len(bad))
        b0 = time.monotonic()
        cpu0 = _cpu_seconds(system)
        time.sleep(baseline_s)
        b1 = t0 = time.monotonic()
        cpu1 = _cpu_seconds(system)
        at_start = _diag_values(diag)   # (the counters' increase is taken over the run only)
        outcomes = []
        for i, b in enumerate(bad):
            s0 = time.monotonic()
            ok, reason = probe.set_param('/world_model', 'model_dir', str(b.path), timeout=60)
            dt = time.monotonic() - s0
            offered = offer_to_followers
            if offered:
                announce.publish(String(data=identity_of(b.path)))
            outcomes.append(Outcome(b, not ok, f'[{b.check}]' in reason, reason, dt, offered))
            log(f'  {i + 1:3d} {b.kind:26s} {"refused" if not ok else "ACCEPTED"} '
                f'{"(check named)" if f"[{b.check}]" in reason else "(check NOT named)"} {dt:.2f} s: {reason[:150]}')
        t_last = time.monotonic()
        if offer_to_followers:
            announce.publish(String(data=good))
        time.sleep(2.0)   # the followers' loader threads finish; one more diagnostics round
        t1 = time.monotonic()
        cpu2 = _cpu_seconds(system)
        after = _diag_values(diag)
        # The same length again with no swaps: the machine's other load drifts over minutes, so
        # the run is compared with the windows right before and right after it.
        time.sleep(t1 - t0)
        t2 = time.monotonic()
    finally:
        sender.close()
    with lock:
        cmds, preds = list(cmd_times), list(pred_times)
        stamps = [s for t, s in cmd_stamps if t0 <= t <= t1]
    actives = world_model_actives()

    def grew(node, key, since=None, until=None):
        since = before if since is None else since
        until = after if until is None else until
        try:
            return int(float(until.get(node, {}).get(key, 0))) - int(float(since.get(node, {}).get(key, 0)))
        except ValueError:
            return 0
    followers = ('mpc_controller', 'policy', 'safety_filter')
    follower = {n: grew(n, 'refused_models') for n in followers}
    superseded = {n: grew(n, 'superseded_models') for n in followers}
    mpc_counts = {'baseline_missed_periods': grew('mpc_controller', 'missed_periods', before, at_start)}
    mpc_counts |= {k: grew('mpc_controller', k, at_start) for k in ('plans', 'commands', 'missed_periods', 'no_command',
                                                                   'stale_states', 'overruns', 'loop_resyncs')}
    # Stamps are those of the states planned from: a gap here is one on the MPC's side (or the
    # state's), not a delay in this probe's executor.
    sgaps = np.diff(sorted(stamps)) if len(stamps) > 1 else np.array([])
    sent = {'missed_periods': int(sum(max(0, int(round(g / period)) - 1) for g in sgaps)),
            'max_gap_ms': float(1e3 * sgaps.max()) if len(sgaps) else float('nan')}
    scheduling = {n: after.get(n, {}).get('control_thread', '?') for n in followers}
    in_use = {n: after.get(n, {}).get('model', after.get(n, {}).get('active_model', '?'))
              for n in ('world_model', 'mpc_controller', 'policy', 'safety_filter')}
    pgaps = np.diff([t for t in preds if t0 <= t <= t1])
    return SwapRunReport(
        outcomes=outcomes, active_models=list(actives), good_identity=good, run_s=t1 - t0,
        baseline=period_stats(cmds, b0, b1, period), during=period_stats(cmds, t0, t1, period),
        after=period_stats(cmds, t1, t2, period),
        predictions={'count': int(len(pgaps) + 1) if len(pgaps) else 0,
                     'max_gap_s': float(pgaps.max()) if len(pgaps) else float('nan'),
                     'after_last_refusal': sum(1 for t in preds if t > t_last)},
        follower_refusals=follower, models_in_use=in_use, mpc_counts=mpc_counts,
        follower_superseded=superseded, sent_gaps=sent, scheduling=scheduling,
        cpu={n: (round((cpu1[n] - cpu0[n]) / (b1 - b0), 3), round((cpu2[n] - cpu1[n]) / (t1 - t0), 3))
             for n in cpu2 if n in cpu1 and n in cpu0})


def _cpu_seconds(system) -> dict:
    """node -> CPU seconds (user + system) its process has used so far."""
    import psutil
    out = {}
    for name, pid in system.pids().items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            pass
    t = psutil.Process().cpu_times()
    out['probe (this process)'] = t.user + t.system
    return out


def _diag_values(diag) -> dict:
    """node -> its latest /diagnostics values."""
    from mbrl_ros.ros.diagnostics import status_values
    out = {}
    for _, arr in list(diag):
        for s in arr.status:
            out[s.name.lstrip('/').split('/')[-1]] = status_values(s)
    return out


def format_report(rep: SwapRunReport) -> str:
    kinds: dict = {}
    for o in rep.outcomes:
        k = kinds.setdefault(o.bundle.kind, [o.bundle.check, 0, 0, 0, 0.0])
        k[1] += 1
        k[2] += int(o.refused)
        k[3] += int(o.refused and o.check_named)
        k[4] = max(k[4], o.seconds)
    lines = ['| kind | expected check | tried | refused | check named | slowest refusal [s] |',
             '|---|---|---|---|---|---|']
    lines += [f'| {k} | {v[0]} | {v[1]} | {v[2]} | {v[3]} | {v[4]:.2f} |' for k, v in kinds.items()]
    n = len(rep.outcomes)
    refused = sum(o.refused for o in rep.outcomes)
    named = sum(o.refused and o.check_named for o in rep.outcomes)
    changed = [a for a in rep.active_models if a != rep.good_identity]
    b, d, a, sg, nan = rep.baseline, rep.during, rep.after, rep.sent_gaps, float('nan')
    lines += [
        '',
        f'bundles: {n}; refused {refused}; refused with the failed check named {named}',
        f'active_model changed: {len(changed)} times (every message: {"the good bundle" if not changed else changed})',
        'models in use at the end: ' + '; '.join(f'{k}: {"good" if v == rep.good_identity else v}'
                                                  for k, v in rep.models_in_use.items()),
        f'followers refused (refused_models increase): {rep.follower_refusals} '
        f'(offered {sum(o.offered_to_followers for o in rep.outcomes)} bundles on active_model)',
        f'world_model predictions during the run: {rep.predictions["count"]} '
        f'({rep.predictions["after_last_refusal"]} after the last refusal), largest gap '
        f'{rep.predictions["max_gap_s"]:.2f} s (single-threaded: predictions pause while a bundle validates)',
        'missed control period := a 20 ms period of the MPC without a /mbrl/mpc/command '
        '(a gap g between consecutive commands misses round(g/20 ms) - 1)',
        f'  baseline ({b["expected"]} periods, no swaps): {b["commands"]} commands, {b["missed_periods"]} missed, '
        f'max gap {b["max_gap_ms"]:.0f} ms',
        f'  during the {rep.run_s:.0f} s run ({d["expected"]} periods): {d["commands"]} commands, '
        f'{d["missed_periods"]} missed, max gap {d["max_gap_ms"]:.0f} ms',
        f'  after the run ({a.get("expected", 0)} periods, no swaps): {a.get("commands", 0)} commands, '
        f'{a.get("missed_periods", "?")} missed, max gap {a.get("max_gap_ms", nan):.0f} ms',
        f'  during the run, from the commands\' stamps (MPC side, probe delays excluded): '
        f'{sg.get("missed_periods", "?")} missed, max gap {sg.get("max_gap_ms", nan):.0f} ms',
        f'  the MPC\'s own count (its send times; diagnostics each 1 s): baseline '
        f'{rep.mpc_counts.get("baseline_missed_periods", "?")} missed, during the run '
        f'{rep.mpc_counts.get("missed_periods", "?")} missed',
        f'  mpc_controller counters during the run: {rep.mpc_counts}',
        f'  control threads: {rep.scheduling}',
        f'  announcements superseded before validation (superseded_models increase): {rep.follower_superseded}',
        'CPU (cores) per node, baseline -> run: '
        + '; '.join(f'{n} {x:.2f} -> {y:.2f}' for n, (x, y) in rep.cpu.items()),
    ]
    return '\n'.join(lines)
