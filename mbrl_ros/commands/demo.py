"""`mbrl-ros demo`: the whole stack reaching random goals on the simulated arm, with a report.

Brings `sim_arm.launch.yaml` up through `mbrl-ros launch` (each node its own process, their
output in <out>/launch.log), waits until the stack is ready (state flowing, model loaded by
world_model and mpc_controller, safety filter publishing its mode), then sends `--goals`
reachable end-effector goals on /mbrl/goal (the benchmarks' `sample_goal_chain`), chained one every
`--goal-period` seconds, with a
live one-line readout. At the end: a summary table per goal, PNG plots and the rosbag2 MCAP
log of the run in the report folder (see docs/demo.md). Ctrl-C stops early (still reports).

Exit status: 0 when the stack ran the whole demo; 1 when it did not come up or stopped during
the run (the message says which, with the tail of launch.log); 2 for bad options.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mbrl_ros.topics import (
    ACTIVE_MODEL_TOPIC, COMMAND_TOPIC, DIAGNOSTICS_TOPIC, EE_POSITION_TOPIC, GOAL_TOPIC,
    JOINT_STATES_TOPIC, MPC_COMMAND_TOPIC, MPC_PLAN_TOPIC, POLICY_COMMAND_TOPIC, SAFETY_MODE_TOPIC,
    STATE_TOPIC, UNCERTAINTY_TOPIC
)

BAG_TOPICS = {  # topic -> (package, type); imported lazily so `--help` stays fast
    JOINT_STATES_TOPIC: ('sensor_msgs', 'JointState'),
    STATE_TOPIC: ('sensor_msgs', 'JointState'),
    GOAL_TOPIC: ('geometry_msgs', 'PointStamped'),
    EE_POSITION_TOPIC: ('geometry_msgs', 'PointStamped'),
    MPC_COMMAND_TOPIC: ('sensor_msgs', 'JointState'),
    MPC_PLAN_TOPIC: ('nav_msgs', 'Path'),
    POLICY_COMMAND_TOPIC: ('sensor_msgs', 'JointState'),
    COMMAND_TOPIC: ('std_msgs', 'Float64MultiArray'),
    SAFETY_MODE_TOPIC: ('std_msgs', 'String'),
    UNCERTAINTY_TOPIC: ('std_msgs', 'Float64'),
    ACTIVE_MODEL_TOPIC: ('std_msgs', 'String'),
    DIAGNOSTICS_TOPIC: ('diagnostic_msgs', 'DiagnosticArray'),
}
LATCHED_TOPICS = (SAFETY_MODE_TOPIC, ACTIVE_MODEL_TOPIC)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--robot', default='arm7', help='built-in robot (arm7, arm3) or MJCF path')
    p.add_argument('--model-dir', default=None,
                   help='model bundle directory (default: the shipped models/<robot>)')
    p.add_argument('--goals', type=int, default=5, metavar='N', help='number of random goals')
    p.add_argument('--goal-period', type=float, default=3.0, metavar='S',
                   help='seconds per goal (success is judged 3 s after a goal)')
    p.add_argument('--seed', type=int, default=0, help='seed of the goal sequence')
    p.add_argument('--out', default=None, metavar='DIR',
                   help='report folder (default: runs/demo_<date>_<time>)')
    p.add_argument('--launch-file', default='sim_arm.launch.yaml',
                   help='launch file: a path, or a name under the package launch/')
    p.add_argument('--startup-timeout', type=float, default=120.0, metavar='S',
                   help='seconds to wait for the stack to be ready')


def fail(msg: str, code: int = 1) -> int:
    print(f'[demo] error: {msg}', file=sys.stderr, flush=True)
    return code


def run(args) -> int:
    import numpy as np

    from mbrl_ros.core.evaluation.reaching import sample_goal_chain
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.core.workspace import Workspace
    from mbrl_ros.resources import default_model_dir
    from mbrl_ros.testing.isolation import isolate_ros_session

    if args.goals < 1:
        return fail(f'--goals must be at least 1, got {args.goals}', 2)
    if not args.goal_period > 0:
        return fail(f'--goal-period must be positive, got {args.goal_period}', 2)
    try:
        robot = RobotModel.load(args.robot)
    except Exception as exc:
        return fail(f'cannot load robot {args.robot!r}: {exc}', 2)
    model_dir = Path(args.model_dir).expanduser() if args.model_dir else default_model_dir(robot.name)
    why = _check_bundle(model_dir, robot)
    if why:
        return fail(why)
    # The benchmarks' goal distribution (chained from home's EE): one for demo and benches. FK of a
    # configuration is inside the reach the controller checks, but a refusal must not pass silently.
    goals = sample_goal_chain(robot, args.goals, args.seed)[1]
    ws = Workspace.from_robot(robot)
    bad = [g for g in goals if ws.check_goal(g) is not None]
    if bad:
        return fail(f'goal {np.round(bad[0], 3).tolist()} is outside the controller\'s reach: {ws.check_goal(bad[0])}')
    out = Path(args.out or time.strftime('runs/demo_%Y%m%d_%H%M%S'))
    if (out / 'bag').exists():
        return fail(f'{out} already holds a demo run; choose another --out', 2)
    out.mkdir(parents=True, exist_ok=True)

    # A demo must never drive a real arm that happens to share the default domain.
    domain = isolate_ros_session()
    cmd = [sys.executable, '-m', 'mbrl_ros.cli', 'launch', args.launch_file, f'robot:={args.robot}',
           f'model_dir:={model_dir.resolve()}', '--log-dir', str(out / 'logs')]
    print(f'[demo] {robot.name}, model {model_dir}, {args.goals} goals x {args.goal_period:g} s, seed {args.seed}',
          flush=True)
    print(f'[demo] ROS_DOMAIN_ID={domain}; starting {args.launch_file} (node output: {out / "launch.log"})',
          flush=True)
    log = open(out / 'launch.log', 'wb')
    stack = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        result = _drive(args, robot, goals, model_dir, out, stack)
    finally:
        stopped_rc = _stop(stack)
        log.close()
    if result.get('startup_error'):
        return fail(result['startup_error'] + '\n' + _tail(out / 'launch.log'))
    return _report(args, robot, model_dir, out, result, stopped_rc)


def _check_bundle(model_dir: Path, robot) -> str | None:
    """Why the bundle cannot run the demo, before starting anything (the nodes would say it less clearly)."""
    from mbrl_ros.core.bundle import BUNDLE_FILE, BundleError, load_bundle
    if not (model_dir / BUNDLE_FILE).is_file():
        return (f'no model bundle at {model_dir} (no bundle.yaml): pass --model-dir, or train one '
                f'(mbrl-ros collect, mbrl-ros train --robot {robot.name})')
    try:
        load_bundle(model_dir, robot)
    except BundleError as exc:
        return f'model bundle {model_dir} refused [{getattr(exc, "check", "?")}]: {exc}'
    return None


# ---- the run ---------------------------------------------------------------------------------
class _Watch:
    """What the readout shows: the stack observer (fed by the bag recorder's callbacks, executor
    thread) plus the demo's own series of the run record."""

    def __init__(self, rec, probe, robot):
        from mbrl_ros.testing.stack_observer import StackObserver
        self.rec = rec
        self.obs = StackObserver(probe, robot, ('mode', 'active_model', 'diagnostics'), subscribe=False,
                                 on_status=self.on_status)
        self.goal = None
        self.dist = float('nan')
        self.unc = float('nan')
        self.latency_ms = float('nan')
        self.reasons: dict = {}          # why the filter refused / the MPC sent nothing -> times seen
        self.filter_periods = []         # (t, {mode: periods so far}) from safety_filter diagnostics
        self._counters: dict = {}

    @property
    def mode(self):
        return self.obs.mode

    @property
    def active_model(self):
        return self.obs.active_model

    @property
    def mpc_status(self):
        d = self.obs.diag.get('mpc_controller')
        return None if d is None else d[2]

    @property
    def plan_p50(self):
        return self.obs.plan_ms[-1][1] if self.obs.plan_ms else float('nan')

    def on_ee(self, msg, t):
        import numpy as np
        p = (msg.point.x, msg.point.y, msg.point.z)
        # The measurement time (header stamp, wall clock here: no sim time) unless it is off by
        # more than a second (a sim-time stamp): then the receive time.
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        self.rec.ee_t.append(stamp if abs(stamp - t) < 1.0 else t)
        self.rec.ee.append(p)
        if self.goal is not None:
            self.dist = float(np.linalg.norm(np.asarray(p) - self.goal))

    def on_unc(self, msg, t):
        self.rec.unc_t.append(t)
        self.rec.unc.append(msg.data)
        self.unc = msg.data

    def on_mpc(self, msg, t):
        from mbrl_ros.ros.conversions import stamp_to_sec
        ms = 1e3 * (t - stamp_to_sec(msg.header.stamp))
        self.rec.latency_t.append(t)
        self.rec.latency_ms.append(ms)
        self.latency_ms = ms

    def _grew(self, who: str, values: dict, keys) -> bool:
        """Whether a node's counters grew since its last status: only then is its 'last reason' news."""
        try:
            n = sum(int(values[k]) for k in keys)
        except (KeyError, ValueError):
            return False
        prev = self._counters.get(who)
        self._counters[who] = n
        return prev is not None and n > prev

    def _reason(self, who: str, text) -> None:
        import re
        if not text or text in ('none', 'no goal') or self.goal is None:
            return  # start-up reasons (no model yet, no goal) are not what the run is judged on
        # Numbers vary from message to message; the reason does not.
        key = who + ': ' + re.sub(r'[0-9]+(\.[0-9]+)?', 'N', text)
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def on_status(self, name, st, values, t):
        if name.endswith('safety_filter'):
            try:
                self.filter_periods.append((t, {m: int(values[f'periods_{m}']) for m in ('mpc', 'policy', 'hold')}))
            except (KeyError, ValueError):
                pass
            if self._grew('filter', values, ('refused_mpc', 'refused_policy')):
                self._reason('safety_filter refused', values.get('last_refusal'))
        if name.endswith('mpc_controller') and self._grew('mpc', values, ('no_command',)):
            self._reason('mpc_controller sent nothing', values.get('last_no_command'))

    def close(self) -> None:
        """The observer's series into the run record."""
        changes = self.obs.mode_changes()
        self.rec.mode_t[:] = [t for t, _ in changes]
        self.rec.modes[:] = [m for _, m in changes]
        plans = list(self.obs.plan_ms)
        self.rec.plan_t[:] = [t for t, _, _ in plans]
        self.rec.plan_p50_ms[:] = [p for _, p, _ in plans]
        self.rec.plan_p99_ms[:] = [p for _, _, p in plans]


def _drive(args, robot, goals, model_dir: Path, out: Path, stack) -> dict:
    import importlib

    import numpy as np
    from geometry_msgs.msg import PointStamped

    from mbrl_ros.core.report import RunRecord
    from mbrl_ros.ros.conversions import sec_to_stamp
    from mbrl_ros.ros.run_recorder import RunRecorder
    from mbrl_ros.testing.ros_probe import RosProbe

    rec = RunRecord()
    topics = {t: getattr(importlib.import_module(f'{pkg}.msg'), name) for t, (pkg, name) in BAG_TOPICS.items()}
    custom = {'robot': robot.name, 'model_dir': str(model_dir), 'goals': len(goals), 'seed': args.seed,
              'goal_period_s': args.goal_period, 'source': 'mbrl-ros demo'}
    interactive = sys.stdout.isatty()
    result = {'record': rec, 'watch': None, 'interrupted': False, 'died': None, 'goals_sent': 0}
    with RosProbe('mbrl_demo') as probe, _stop_on_signals():
        w = result['watch'] = _Watch(rec, probe, robot)
        callbacks = {EE_POSITION_TOPIC: w.on_ee, UNCERTAINTY_TOPIC: w.on_unc, MPC_COMMAND_TOPIC: w.on_mpc,
                     **{t: lambda m, t_, t=t: w.obs.take(t, m, t_)
                        for t in (SAFETY_MODE_TOPIC, ACTIVE_MODEL_TOPIC, DIAGNOSTICS_TOPIC)}}
        # ee_position comes at the sim's 100 Hz: every 5th is plenty for the distance curves and
        # keeps this process light next to the stack it measures (all are still recorded).
        recorder = RunRecorder(probe.node, out / 'bag', topics, callbacks, LATCHED_TOPICS, custom,
                               decimate={EE_POSITION_TOPIC: 5})
        result['recorder'] = recorder
        try:
            why = _wait_ready(probe, w, stack, args.startup_timeout, interactive)
            if why:
                result['startup_error'] = why
                return result
            pub = probe.publisher(GOAL_TOPIC, PointStamped, 10)
            for k, g in enumerate(goals):
                msg = PointStamped()
                msg.header.frame_id = 'world'
                t0 = time.time()
                msg.header.stamp = sec_to_stamp(t0)
                msg.point.x, msg.point.y, msg.point.z = (float(v) for v in g)
                w.goal = np.asarray(g, dtype=np.float64)
                rec.goal_times.append(t0)
                rec.goals.append(tuple(float(v) for v in g))
                pub.publish(msg)
                result['goals_sent'] = k + 1
                last_line = 0.0
                while time.time() - t0 < args.goal_period:
                    if stack.poll() is not None:
                        result['died'] = stack.returncode
                        break
                    now = time.time()
                    if now - last_line >= (0.2 if interactive else 1.0):
                        last_line = now
                        _print_line(_readout(k, len(goals), now - t0, args.goal_period, w), interactive)
                    time.sleep(0.05)
                if result['died'] is not None:
                    break
        except KeyboardInterrupt:
            result['interrupted'] = True
        finally:
            rec.t_end = time.time()
            if interactive:
                print(flush=True)
            result['counts'] = recorder.close()
            w.close()
    return result


@contextlib.contextmanager
def _stop_on_signals():
    """Ctrl-C / SIGTERM end the run early with a report: rclpy.init installed its own SIGINT
    handler (it shuts the context down and raises nothing), so put Python's back for the run."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    old = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _wait_ready(probe, w: _Watch, stack, timeout: float, interactive: bool) -> str | None:
    """None once state flows, both model users have the bundle and the filter runs; else why not."""
    t0 = time.monotonic()
    last = 0.0
    while True:
        checks = {
            'state': probe.node.count_publishers(STATE_TOPIC) > 0 and len(w.rec.ee_t) > 0,
            'world_model': w.active_model is not None,
            'mpc_controller': (probe.node.count_subscribers(GOAL_TOPIC) > 0 and w.mpc_status is not None
                               and not w.mpc_status.startswith(('no model', 'unconfigured', 'inactive'))),
            'safety_filter': w.mode is not None,
        }
        if all(checks.values()):
            print(f'[demo] stack ready after {time.monotonic() - t0:.1f} s', flush=True)
            return None
        if stack.poll() is not None:
            return f'the stack exited (code {stack.returncode}) before it was ready; waiting for: ' + \
                ', '.join(k for k, ok in checks.items() if not ok)
        if time.monotonic() - t0 > timeout:
            return (f'the stack was not ready after {timeout:g} s; missing: '
                    + ', '.join(k for k, ok in checks.items() if not ok)
                    + (f' (mpc_controller says: {w.mpc_status})' if w.mpc_status else ''))
        if time.monotonic() - last >= (0.5 if interactive else 5.0):
            last = time.monotonic()
            _print_line(f'[demo] waiting for the stack ({time.monotonic() - t0:4.1f} s): '
                        + '  '.join(f"{k} {'ok' if ok else '..'}" for k, ok in checks.items()), interactive)
        time.sleep(0.1)


def _readout(k: int, n: int, t: float, period: float, w: _Watch) -> str:
    def f(v, fmt):
        return '-' if v != v else format(v, fmt)
    return (f'goal {k + 1}/{n} {t:4.1f}/{period:g}s  mode {w.mode or "-":6s} dist {f(100 * w.dist, "5.1f")} cm  '
            f'plan p50 {f(w.plan_p50, "4.1f")} ms  cmd latency {f(w.latency_ms, "5.1f")} ms  '
            f'uncertainty {f(w.unc, ".4f")}')


def _print_line(line: str, interactive: bool) -> None:
    if interactive:
        print('\r' + line[:200].ljust(120), end='', flush=True)
    else:
        print(line, flush=True)


def _stop(stack) -> int | None:
    """SIGINT to the runner (its orderly shutdown of every node), SIGKILL to the group if it hangs."""
    if stack.poll() is not None:
        return stack.returncode
    try:
        stack.send_signal(signal.SIGINT)
        return stack.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print('[demo] the stack did not stop in 30 s after SIGINT: killing it', file=sys.stderr, flush=True)
        try:
            os.killpg(stack.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stack.wait()
        return None


def _period_shares(samples: list, t0: float) -> dict:
    """Share of the safety filter's periods per mode from the first goal on (its own counters)."""
    if not samples:
        return {}
    before = [c for t, c in samples if t <= t0] or [samples[0][1]]  # else the first status after it
    last = samples[-1][1]
    d = {m: last[m] - before[-1][m] for m in last}
    total = sum(d.values())
    return {**{m: round(v / total, 3) for m, v in d.items()}, 'total': total} if total > 0 else {}


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors='replace').splitlines()
    except OSError:
        return ''
    return f'--- last {min(n, len(lines))} lines of {path} ---\n' + '\n'.join(lines[-n:])


# ---- the report ------------------------------------------------------------------------------
def _report(args, robot, model_dir: Path, out: Path, result: dict, stopped_rc) -> int:
    from mbrl_ros.core import report

    rec = result['record']
    if not rec.goal_times:
        return fail('no goal was sent (interrupted before the first goal)')
    results = report.goal_results(rec)
    w = result['watch']
    tot = report.totals(results, rec)
    tot['goals_planned'] = args.goals
    tot['safety_filter_periods'] = _period_shares(w.filter_periods, rec.goal_times[0])
    table = report.format_table(results, tot)
    print('\n' + table, flush=True)
    def ms(v):
        return '-' if v is None else f'{v:.1f}'
    span = (rec.t_end or rec.goal_times[0]) - rec.goal_times[0]
    print(f"[demo] MPC: {tot['mpc_commands']} commands in {span:.1f} s ({tot['mpc_commands'] / max(span, 1e-9):.1f}/s); "
          f"latency state stamp -> command received p50 {ms(tot['command_latency_ms_p50'])} ms, p99 "
          f"{ms(tot['command_latency_ms_p99'])} ms; plan time p50/p99 (mpc_controller /diagnostics) "
          f"{ms(tot['plan_ms_p50_last'])}/{ms(tot['plan_ms_p99_last'])} ms; {tot['mode_changes']} mode changes",
          flush=True)
    shares = tot['safety_filter_periods']
    if shares:
        print('[demo] safety filter periods during the goals: ' + ', '.join(
            f"{m} {100 * v:.0f}%" for m, v in shares.items() if m != 'total') + f" of {shares['total']}", flush=True)
    if w.reasons:
        # The filter's last refusal and the MPC's last no-command reason, as sampled once a second.
        top = sorted(w.reasons.items(), key=lambda kv: -kv[1])[:4]
        print('[demo] reasons seen in /diagnostics (samples): ' + '; '.join(f'{k} ({n})' for k, n in top), flush=True)
        tot['reasons_seen'] = dict(top)
    plots = report.write_plots(out, rec, results, title=f'({robot.name})')
    bag_counts, bag_error = {}, None
    try:
        bag_counts = report.bag_topic_counts(out / 'bag')
    except Exception as exc:  # the run happened; say the log is unreadable rather than hide the table
        bag_error = f'{exc!r}'
    settings = {'robot': robot.name, 'model_dir': str(model_dir), 'active_model': result['watch'].active_model,
                'goals': args.goals, 'goal_period_s': args.goal_period, 'seed': args.seed,
                'success': f'within {report.SUCCESS_RADIUS_M * 100:g} cm {report.SUCCESS_AFTER_S:g} s after the goal',
                'plan_time_source': 'command stamp timing (receive time - planned-from state stamp) '
                                    'and mpc_controller /diagnostics p50/p99',
                'distance_source': '/mbrl/sim/ee_position (simulator ground truth)',
                'bag_messages': bag_counts, 'interrupted': result['interrupted']}
    report.write_summary(out, results, tot, table, settings)
    print(f"[demo] report: {out}/ (summary.txt, summary.yaml, {', '.join(p.name for p in plots)}, "
          f"launch.log, logs/)", flush=True)
    if bag_error:
        print(f'[demo] warning: the bag {out / "bag"} could not be read back: {bag_error}', file=sys.stderr)
    else:
        print(f'[demo] bag: {out / "bag"} (rosbag2 MCAP, {sum(bag_counts.values())} messages on '
              f'{sum(1 for v in bag_counts.values() if v)} topics; `ros2 bag info {out / "bag"}`)', flush=True)
    errors = result['recorder'].callback_errors
    if errors:
        print(f"[demo] warning: {errors} messages could not be read: {result['recorder'].last_callback_error}",
              file=sys.stderr)
    if result['died'] is not None:
        return fail(f"the stack stopped during the run (exit code {result['died']}) after "
                    f"{result['goals_sent']} of {args.goals} goals\n" + _tail(out / 'launch.log'))
    if result['interrupted']:
        print(f"[demo] interrupted after {result['goals_sent']} of {args.goals} goals", flush=True)
    if stopped_rc not in (0, None) and not result['interrupted']:
        print(f'[demo] note: the launch exited with code {stopped_rc} on shutdown (see {out / "launch.log"})',
              file=sys.stderr)
    return 0
