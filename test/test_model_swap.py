"""Hot model swap during a running reach, over real processes (arm3 sim stack through the launch
runner; A is a copy of the shipped trained models/arm3, B the same with its ONNX weights changed
by 1e-4 relative: its own sha256 and predictions, driving like A).

Setting `model_dir` on world_model (what `ros2 param set /world_model model_dir B` does) while the
MPC drives: world_model validates B and announces it on /mbrl/world_model/active_model; the
mpc_controller and the safety filter load it on their worker threads and swap between periods.
Checked: the safety filter keeps sending one command per control period across the swap (its own
period counter and late-resync counter between diagnostics before and after), the arm receives
them (sim_robot's own received-command counter: one per period; its 0.1 s command watchdog never
trips), the filter stays in mode `mpc` (it may leave it only to refuse an MPC command pushing a
joint past its limit, a check that cannot be relaxed), and every node ends up on B.

On the shared, loaded development machine a late planner makes the filter fall back to hold now
and then with or without a swap (commands > 100 ms old, a joint near its limit margin). Those
checks are not what is under test, so the test relaxes them live (command/state timeouts 0.5 s, no
limit margin), waits for a clean baseline in mode `mpc`, and only then swaps; the confidence check
(ensemble disagreement under the new model) stays as configured.
"""
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Float64MultiArray, String

from mbrl_ros.core.bundle import load_bundle
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.resources import default_model_dir
from mbrl_ros.ros.conversions import LATCHED
from mbrl_ros.testing.filter_log import LIMIT_REFUSAL, mode_switches, refusal_of
from mbrl_ros.testing.goals import GoalSender
from mbrl_ros.ros.diagnostics import status_values

pytestmark = [pytest.mark.ros, pytest.mark.system]

GOAL = (0.3, 0.1, 0.35)
PERIOD = 0.02            # safety_filter control_rate_hz 50
WAKE_GRACE = 0.25        # ControlLoop's default: how much longer a period waits for a late command
BASELINE_S = 1.5
RELAX = [('/safety_filter', 'command_timeout_s', 0.5), ('/safety_filter', 'state_timeout_s', 0.5),
         ('/safety_filter', 'joint_limit_margin', 0.0),
         ('/safety_filter', 'limit_lookahead_s', 0.0), ('/mpc_controller', 'state_timeout_s', 0.5)]
WAIT = ['/mbrl/state', '/mbrl/mpc/command', '/forward_effort_controller/commands', '/mbrl/safety/mode',
        '/mbrl/world_model/active_model']


def _shipped_arm3():
    d = default_model_dir('arm3')
    if not (d / 'bundle.yaml').is_file():
        return None
    meta = load_bundle(d).meta
    return None if meta.get('data', {}).get('source') == 'test' else d


def _perturbed_copy(src: Path, dst: Path, scale: float = 1e-4, seed: int = 1) -> Path:
    """A copy of bundle `src` whose ONNX weights are changed by a relative `scale`: another bundle
    (own sha256, own predictions) that drives like the original, so what the test sees after the
    swap is the swap itself."""
    import onnx
    from onnx import numpy_helper
    shutil.copytree(src, dst)
    meta = yaml.safe_load((dst / 'bundle.yaml').read_text())
    rng = np.random.default_rng(seed)
    for name in meta['files']:
        if not name.endswith('.onnx'):
            continue
        model = onnx.load(str(dst / name))
        for init in model.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype in (np.float32, np.float64) and w.size > 1:
                init.CopyFrom(numpy_helper.from_array(
                    (w * (1 + scale * rng.standard_normal(w.shape))).astype(w.dtype), init.name))
        onnx.save(model, str(dst / name))
        meta['files'][name]['sha256'] = hashlib.sha256((dst / name).read_bytes()).hexdigest()
    (dst / 'bundle.yaml').write_text(yaml.safe_dump(meta, sort_keys=False))
    return dst


def _clean_mpc_since(modes, t0: float) -> bool:
    """Mode mpc at t0 and no other mode message since (the mode is re-sent every second)."""
    ms = list(modes)
    before = [m.data for t, m in ms if t <= t0]
    return bool(before) and before[-1] == 'mpc' and all(m.data == 'mpc' for t, m in ms if t > t0)


def _status(diags, node: str, since: float) -> dict | None:
    for t, arr in reversed(list(diags)):
        if t < since:
            return None
        for st in arr.status:
            if st.name == node:
                return status_values(st) | {
                    '_stamp': arr.header.stamp.sec + 1e-9 * arr.header.stamp.nanosec}
    return None


@pytest.mark.skipif(_shipped_arm3() is None, reason='needs the shipped trained models/arm3 bundle')
def test_model_swap_during_a_reach_keeps_every_period_and_mode_mpc(launch_system, tmp_path):
    robot = RobotModel.load('arm3')
    # Copies: the shipped bundle may be retrained while the test runs.
    a = Path(shutil.copytree(_shipped_arm3(), tmp_path / 'a')).resolve()
    b = _perturbed_copy(a, tmp_path / 'b').resolve()
    load_bundle(b, robot)   # B passes every check
    sha_b = load_bundle(b).identity.split()[-1]
    assert load_bundle(a).identity != load_bundle(b).identity
    with launch_system('sim_arm.launch.yaml', args={'robot': 'arm3', 'model_dir': str(a)},
                       wait_topics=WAIT, timeout=90) as system:
        probe = system.probe
        out = probe.subscribe('/forward_effort_controller/commands', Float64MultiArray, 1000)
        modes = probe.subscribe('/mbrl/safety/mode', String, LATCHED)
        active = probe.subscribe('/mbrl/world_model/active_model', String, LATCHED)
        diags = probe.subscribe('/diagnostics', DiagnosticArray, 100)
        sender = GoalSender(probe, GOAL)
        try:
            assert probe.wait_until(lambda: bool(modes) and modes[-1][1].data == 'mpc', 60), \
                'never reached mode mpc:\n' + system.output_text()[-3000:]
            assert probe.wait_until(lambda: bool(active) and str(a) in active[-1][1].data, 10)
            for node, name, value in RELAX:
                ok, why = probe.set_param(node, name, value)
                assert ok, (node, name, why)
            assert probe.wait_until(lambda: _clean_mpc_since(modes, time.time() - BASELINE_S), 30), \
                f'no {BASELINE_S} s in mode mpc before the swap: ' + str([m.data for _, m in modes][-20:])
            before = probe.wait_until(lambda: _status(diags, '/safety_filter', time.time() - 1.5), 5)
            assert before, 'no safety_filter diagnostics'
            arm_before = probe.wait_until(lambda: _status(diags, '/sim_robot', time.time() - 1.5), 5)
            assert arm_before, 'no sim_robot diagnostics'
            n_modes = len(modes)

            t_set = time.time()
            ok, why = probe.set_param('/world_model', 'model_dir', str(b))
            assert ok, why
            t_reply = time.time()
            assert probe.wait_until(lambda: str(b) in active[-1][1].data, 10), [m.data for _, m in active]
            t_announced = time.time()

            def all_on_b():
                st = {n: _status(diags, n, t_announced) for n in ('/mpc_controller', '/safety_filter')}
                return all(s is not None and str(b) in s.get('model', '') for s in st.values()) and st
            on_b = probe.wait_until(all_on_b, 15)
            assert on_b, 'mpc_controller / safety_filter did not load B:\n' + system.output_text()[-3000:]
            t_loaded = time.time()
            time.sleep(1.0)
            t_end = time.time()
            after = probe.wait_until(lambda: _status(diags, '/safety_filter', t_loaded + 0.5), 5)
            assert after, 'no safety_filter diagnostics after the swap'
            arm_after = probe.wait_until(lambda: _status(diags, '/sim_robot', t_loaded + 0.5), 5)
            assert arm_after, 'no sim_robot diagnostics after the swap'
            t_end = time.time()
        finally:
            sender.close()

        # One command per period across the swap: from just before the set call to 1 s after all loaded.
        t = np.array([rt for rt, _ in list(out)])
        w = t[(t >= t_set - 0.5) & (t <= t_end)]
        gaps = np.diff(w)
        span = w[-1] - w[0]
        print(f'swap: set call {1e3 * (t_reply - t_set):.0f} ms, announced {1e3 * (t_announced - t_set):.0f} ms, '
              f'all loaded {1e3 * (t_loaded - t_set):.0f} ms after the call; {len(w)} commands in {span:.2f} s '
              f'({len(w) / span:.1f} Hz), max gap {1e3 * gaps.max():.1f} ms, p99 gap '
              f'{1e3 * np.percentile(gaps, 99):.1f} ms')
        # Sender side (the filter's own counters between a status before and one after the swap): a
        # period at most every 25 ms on its clock (forward_on_arrival: the filter runs when the MPC's
        # command arrives, and waits up to a quarter period longer for a late one: 147 of 150 and 188
        # of 200 seen on a loaded machine while the MPC loaded B), and no late resync (the loop
        # skipping periods: what a stall would do).
        periods = int(after['periods']) - int(before['periods'])
        elapsed = after['_stamp'] - before['_stamp']
        print(f'safety_filter: {periods} periods in {elapsed:.2f} s ({periods / elapsed:.1f} Hz), late resyncs '
              f"{before['late_resyncs']} -> {after['late_resyncs']}")
        assert periods >= elapsed / (PERIOD * (1 + WAKE_GRACE)) - 1, (periods, elapsed)
        assert int(after['late_resyncs']) == int(before['late_resyncs']), (before['late_resyncs'],
                                                                         after['late_resyncs'])
        # Receiver side, the actuator's own counters between a status before and one after the swap:
        # a command per (possibly stretched) period arrived, and its command watchdog (0.1 s) never tripped. (This test
        # process's receive times above are printed only: the command topic keeps the last sample
        # (depth 1, as an actuator wants), so whatever arrives while this process is descheduled is
        # replaced, not queued; that measures the test process, not the stack.)
        received = int(arm_after['commands_received']) - int(arm_before['commands_received'])
        arm_elapsed = arm_after['_stamp'] - arm_before['_stamp']
        trips = int(arm_after['watchdog_trips']) - int(arm_before['watchdog_trips'])
        print(f'sim_robot: {received} commands received in {arm_elapsed:.2f} s ({received / arm_elapsed:.1f} Hz), '
              f'watchdog trips {trips}')
        assert received >= arm_elapsed / (PERIOD * (1 + WAKE_GRACE)) - 1, (received, arm_elapsed)
        assert trips == 0, (arm_before['watchdog_trips'], arm_after['watchdog_trips'])
        # Mode mpc throughout (/mbrl/safety/mode is sent on every change and each second), except
        # where the filter refused an MPC command that pushed a joint past its limit: a check on the
        # arm's motion that stays on (the world model's one-step prediction) and fires with or without
        # a swap. Any other reason (stale, uncertain, no model) would be the swap's doing.
        seen = [m.data for _, m in list(modes)[n_modes:]]
        assert seen and modes[-1][1].data == 'mpc', seen
        away = [(new, why) for _, old, new, why in mode_switches(system.output_text(), t_set) if old == 'mpc']
        print(f'mode changes away from mpc after the set call: {len(away)} {away[:3]}')
        assert set(seen) == {'mpc'} or away, seen
        for new, why in away:
            assert LIMIT_REFUSAL.match(refusal_of(why, 'mpc') or ''), f'mpc -> {new} after the swap: {why}'
        # The announced identity is B's path and sha256; the nodes use it.
        assert active[-1][1].data.split()[-1] == sha_b
        assert probe.get_param('/world_model', 'model_dir') == str(b)
        assert int(on_b['/mpc_controller']['model_swaps']) >= 2   # A at start, then B
    assert system.returncode == 0, system.output_text()[-3000:]


@pytest.mark.skipif(_shipped_arm3() is None, reason='needs the shipped trained models/arm3 bundle')
def test_a_respawned_world_model_serves_the_bundle_swapped_in_live(launch_system, tmp_path):
    """SIGKILL world_model after a live swap to B: the launch respawns it, and it serves B again (not the
    launch's model_dir A), so the followers stay on B; `model_dir` reads B. A new launch starts from A."""
    import signal
    a = Path(shutil.copytree(_shipped_arm3(), tmp_path / 'a')).resolve()
    b = _perturbed_copy(a, tmp_path / 'b').resolve()
    env = {'ROS_HOME': str(tmp_path / 'ros_home')}   # the memory files go here, not into ~/.ros
    args = {'robot': 'arm3', 'model_dir': str(a), 'respawn_delay': 0.5}
    with launch_system('sim_arm.launch.yaml', args=args, wait_topics=WAIT, timeout=90, env=env) as system:
        probe = system.probe
        active = probe.subscribe('/mbrl/world_model/active_model', String, LATCHED)
        diags = probe.subscribe('/diagnostics', DiagnosticArray, 100)
        assert probe.wait_until(lambda: bool(active) and str(a) in active[-1][1].data, 30)
        ok, why = probe.set_param('/world_model', 'model_dir', str(b))
        assert ok, why
        assert probe.wait_until(lambda: str(b) in active[-1][1].data, 10)
        t_swap = time.time()
        assert probe.wait_until(lambda: str(b) in (_status(diags, '/mpc_controller', t_swap) or {}).get('model', ''),
                                15), system.output_text()[-3000:]
        old = system.pid('world_model')
        system.kill('world_model', signal.SIGKILL)
        assert probe.wait_until(lambda: system.pids().get('world_model') not in (None, old), 30), \
            system.output_text()[-3000:]
        assert system.wait_for_output(r'\[world_model\].*respawned: resuming ' + str(b), 60), \
            system.output_text()[-3000:]
        t_back = time.time()
        # The new process announces B (latched); nothing announces A meanwhile.
        assert probe.wait_until(lambda: (_status(diags, '/world_model', t_back) or {}).get('active_model', '')
                                .startswith(f'{b} '), 30), system.output_text()[-3000:]
        assert probe.get_param('/world_model', 'model_dir') == str(b)
        assert all(str(a) not in m.data for t, m in list(active) if t > t_swap), [m.data for _, m in active]
        time.sleep(1.5)
        st = _status(diags, '/mpc_controller', time.time() - 1.2)
        assert st and str(b) in st['model'], st
    assert system.returncode == 0, system.output_text()[-3000:]
    # A second launch (a new respawn_memory_key) starts from its model_dir, whatever the first one swapped.
    with launch_system('sim_arm.launch.yaml', args=args,
                       wait_topics=['/mbrl/world_model/active_model'], timeout=90, env=env) as system:
        active = system.probe.subscribe('/mbrl/world_model/active_model', String, LATCHED)
        assert system.probe.wait_until(lambda: bool(active) and active[-1][1].data.startswith(f'{a} '), 30), \
            [m.data for _, m in active]
