"""`mbrl-ros bench ros-closed-loop`: the reaching benchmark through the whole ROS stack, as users run it.

A launch file runs headless (every node its own process, in a ROS domain of its own). The goals are
`sample_goal_chain(robot, N, seed)`, the same goals as the ROS-free bench for the same seed (default
1000 in both). The arm is reset to home (`/sim_robot/reset`) once at the start of each seed's goals;
then the goals are sent on /mbrl/goal one after another, each for `--goal-s` (5 s), WITHOUT a reset:
each starts wherever the arm stopped (`--from-home`: a reset before every goal, the old way). Each
seed's chain thus starts from home, as `evaluate_reaching(start='chained')` does: `--compare` runs
that ROS-free loop on the same goals and start mode, planning within the same limits the stack's
safety filter announced (clamped and rate-limited as the filter does; not its joint-limit refusals).

Per goal: the end effector's distance to the goal from /mbrl/sim/ee_position (simulator ground
truth), resampled onto 0.02 s steps by time since the goal was sent (latest sample at or before each
step), judged by `judge_distances` (mbrl_ros.core.evaluation.reaching): success = within 2 cm at
`--settle` (3 s), final distance at the end of the window, settle time (first time after which it
stays within 5 mm; never: counted as the whole window in the median), stalled.

Per seed and overall: those, the safety filter's periods per mode (its counters), the MPC's plan time
p50/p99 (its /diagnostics: its last 500 plans), missed periods (gaps of more than 1.5 periods in
/mbrl/mpc/command and in the filter's output at this process's receive times, and the MPC's own count
from its send times), the state-to-actuator delay.

The real-arm path as a lab runs it (`--arm-process`): `sim_robot` is started as its own process, the
"robot driver" with its own parameters (`--arm-params`, default config/sim_robot.yaml) and real-time
priority (`--arm-priority`, SCHED_FIFO 50 like a ros2_control driver, above the stack's 20), then the
launch file (e.g. real_arm.launch.yaml with `--params-file config/real_arm_template.yaml`) against it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mbrl_ros.topics import GOAL_TOPIC

CONTROL_PERIOD_S = 0.02   # the resampling step of the distance series and the missed-period unit


def add_arguments(p):
    d = ' (default: %(default)s)'
    p.add_argument('--robot', default='arm7', help='built-in robot or MJCF path' + d)
    p.add_argument('--model-dir', default=None,
                   help='bundle directory (default: the shipped models/<robot>)')
    p.add_argument('--goals', type=int, default=10, help='goals per seed' + d)
    p.add_argument('--seed', type=int, default=1000,
                   help='goal seed, the same goals as `bench closed-loop --seed`' + d)
    p.add_argument('--seeds', default=None, metavar='S1,S2,...',
                   help='several goal seeds in one stack start (overrides --seed); the arm is reset to '
                        'home at the start of each seed' + d)
    p.add_argument('--goal-s', type=float, default=5.0, help='seconds per goal; final distance at its end' + d)
    p.add_argument('--settle', type=float, default=3.0,
                   help='success is judged this many seconds after the goal was sent (within 2 cm)' + d)
    p.add_argument('--from-home', action='store_true',
                   help='reset the arm to home before every goal (default: goals chained, no reset)')
    p.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE',
                   help='set a parameter on a running node before the goals (as `ros2 param set`), '
                        'e.g. safety_filter.max_effort_step=0.5; repeatable' + d)
    p.add_argument('--compare', action='store_true',
                   help='also run the ROS-free loop (evaluate_reaching) on the same goals and start mode')
    p.add_argument('--launch-file', default='sim_arm.launch.yaml', help='launch file of the stack' + d)
    p.add_argument('--params-file', default=None,
                   help='parameter file for the stack, passed as params_file:= (real_arm.launch.yaml), '
                        'e.g. config/real_arm_template.yaml' + d)
    p.add_argument('--arm-process', action='store_true',
                   help='start sim_robot as its own process (the robot driver) before the launch file; '
                        'for a launch file without a simulator, e.g. real_arm.launch.yaml')
    p.add_argument('--arm-params', default='sim_robot.yaml',
                   help="the arm process's parameter file (a path or a file in the package config/)" + d)
    p.add_argument('--arm-priority', type=int, default=50,
                   help='SCHED_FIFO priority of every thread of the arm process (0: normal scheduler); '
                        'above the stack (launch arg control_thread_priority, 20), as a driver' + d)
    p.add_argument('--launch-arg', action='append', default=[], metavar='NAME:=VALUE',
                   help='another launch argument, e.g. control_thread_priority:=20; repeatable' + d)
    p.add_argument('--log', default=None, metavar='FILE', help="the stack's output (default: a temp file)")
    p.add_argument('--startup-timeout', type=float, default=120.0, help='seconds to wait for the stack' + d)
    p.add_argument('--json', action='store_true', help='print the results as JSON')


def _parse_sets(items) -> list:
    import yaml
    out = []
    for item in items:
        key, sep, value = item.partition('=')
        node, dot, name = key.partition('.')
        if not sep or not dot or not node or not name:
            raise ValueError(f'--set wants NODE.PARAM=VALUE, got {item!r}')
        out.append(('/' + node.lstrip('/'), name, yaml.safe_load(value)))
    return out


def _parse_seeds(args) -> list:
    if args.seeds is None:
        return [args.seed]
    try:
        seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError:
        raise ValueError(f'--seeds wants integers separated by commas, got {args.seeds!r}') from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f'--seeds wants distinct integers, got {args.seeds!r}')
    return seeds


def run(args) -> int:
    from mbrl_ros.core.evaluation.reaching import ReachMetrics, sample_goal_chain
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.resources import default_model_dir, find_resource

    try:
        if args.goals < 1 or not args.goal_s > 0 or not 0 < args.settle <= args.goal_s:
            raise ValueError('--goals must be >= 1, --goal-s > 0 and 0 < --settle <= --goal-s')
        if not 0 <= args.arm_priority <= 98:
            raise ValueError(f'--arm-priority must be 0-98, got {args.arm_priority}')
        seeds = _parse_seeds(args)
        sets = _parse_sets(args.set)
        bad = [a for a in args.launch_arg if ':=' not in a]
        if bad:
            raise ValueError(f'--launch-arg takes NAME:=VALUE, got {bad[0]!r}')
        if args.arm_process and Path(args.launch_file).name == 'sim_arm.launch.yaml':
            raise ValueError('--arm-process starts the arm itself: use a launch file without sim_robot '
                             '(real_arm.launch.yaml)')
        params_file = str(find_resource('config', args.params_file)) if args.params_file else None
        arm_params = str(find_resource('config', args.arm_params)) if args.arm_process else None
        robot = RobotModel.load(args.robot)
    except Exception as exc:
        print(f'mbrl-ros bench ros-closed-loop: {exc}')
        return 2
    model_dir = Path(args.model_dir).expanduser() if args.model_dir else default_model_dir(robot.name)
    from mbrl_ros.commands.demo import _check_bundle
    why = _check_bundle(model_dir, robot)
    if why:
        print(f'mbrl-ros bench ros-closed-loop: {why}')
        return 2
    metrics = ReachMetrics(settle_s=args.settle, goal_s=args.goal_s)
    chains = [(s, sample_goal_chain(robot, args.goals, s)[1]) for s in seeds]
    launch_args = list(args.launch_arg) + ([f'params_file:={params_file}'] if params_file else [])
    arm = None
    if args.arm_process:
        arm = {'robot': args.robot, 'params': arm_params, 'priority': args.arm_priority}
    result = run_ros(robot, model_dir, chains, metrics, args.from_home, sets, args.launch_file, args.log,
                     args.startup_timeout, launch_args, arm)
    if 'error' in result:
        print(f"mbrl-ros bench ros-closed-loop: {result['error']}")
        return 1
    rows = {'ros': result}
    if args.compare:
        rows['ros-free'] = run_ros_free(robot, model_dir, chains, metrics, args.from_home,
                                        result['mpc_settings'], result.get('command_limits'))
    if args.json:
        print(json.dumps(rows, indent=1, default=_json_default))
        return 0
    _print(args, robot, model_dir, seeds, rows)
    return 0


def _json_default(v):
    import numpy as np
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return str(v)


# ---- judging one run -------------------------------------------------------------------------------
def goal_distances(ee: list, goal, t0: float, goal_s: float, dt: float = CONTROL_PERIOD_S):
    """The EE distance to `goal` at t0 + (k+1)·dt, k < goal_s/dt, from (stamp, xyz) samples: the latest
    sample at or before each step (the first one after t0 if none is before it). None without samples."""
    import numpy as np
    if not ee:
        return None
    stamps = np.array([s for s, _ in ee])
    order = np.argsort(stamps, kind='stable')
    stamps = stamps[order]
    pos = np.array([p for _, p in ee], dtype=float)[order]
    t = t0 + dt * np.arange(1, int(round(goal_s / dt)) + 1)
    idx = np.clip(np.searchsorted(stamps, t, side='right') - 1, 0, len(stamps) - 1)
    return np.linalg.norm(pos[idx] - np.asarray(goal, float), axis=1)


def _median(v) -> float:
    import numpy as np
    a = np.sort(np.asarray(v, float))
    n = len(a)
    if n == 0:
        return float('nan')
    return float(a[n // 2]) if n % 2 else float(0.5 * a[n // 2 - 1] + 0.5 * a[n // 2])


def summarize(per_goal: dict, metrics) -> dict:
    """Reaching figures of one run from per-goal lists (distance_at_settle_m, final_distance_m,
    settle_time_s, stalled)."""
    import numpy as np
    at = np.asarray(per_goal['distance_at_settle_m'], float)
    fin = np.asarray(per_goal['final_distance_m'], float)
    st = np.asarray(per_goal['settle_time_s'], float)
    settled = np.isfinite(st)
    pct = (lambda a, q: float(np.percentile(a, q)) if len(a) else float('nan'))
    return {
        'goals': int(len(fin)),
        'success_rate': float(np.mean(at <= metrics.tolerance_m)) if len(at) else float('nan'),
        'success_at_end_rate': float(np.mean(fin <= metrics.tolerance_m)) if len(fin) else float('nan'),
        'final_mm': {'median': 1e3 * pct(fin, 50), 'p90': 1e3 * pct(fin, 90)},
        # Never settled counts as the whole window, so the median is honest (np.percentile would
        # interpolate inf - inf into NaN: the middle of the sorted values instead).
        'settle_s_median': _median(np.where(settled, st, np.inf)),
        'settled_rate': float(settled.mean()) if len(st) else float('nan'),
        'stalled': int(np.sum(per_goal['stalled'])),
    }


# ---- the ROS run ----------------------------------------------------------------------------------
def run_ros(robot, model_dir: Path, chains: list, metrics, from_home: bool, sets: list, launch_file: str,
            log_path, startup_timeout: float, launch_args: list = (), arm: dict | None = None) -> dict:
    """chains: [(seed, goals (N,3))]. arm: start sim_robot as its own process first ({'robot', 'params',
    'priority'}), as a robot driver runs beside the stack."""
    import subprocess
    import tempfile

    from mbrl_ros.commands.demo import _stop, _tail
    from mbrl_ros.testing.isolation import isolate_ros_session

    isolate_ros_session()
    log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix='ros_closed_loop_')) / 'launch.log'
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, '-m', 'mbrl_ros.cli', 'launch', launch_file, f'robot:={robot.name}',
           f'model_dir:={model_dir.resolve()}', *launch_args, '--log-dir', str(log_path.parent / 'logs')]
    procs, logs = [], []
    try:
        if arm is not None:
            arm_log = log_path.with_name(log_path.stem + '_arm.log')
            # The launch files default the nodes to UDP only (docs/reliability.md): the driver too.
            env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS=os.environ.get('FASTDDS_BUILTIN_TRANSPORTS', 'UDPv4'))
            arm_cmd = [sys.executable, '-m', 'mbrl_ros.nodes.sim_robot', '--ros-args', '--params-file', arm['params'],
                       '-p', f"robot:={arm['robot']}", '-p', f"control_thread_priority:={arm['priority']}"]
            print(f'[bench] starting the arm process (sim_robot, SCHED_FIFO {arm["priority"]}; output: {arm_log})',
                  file=sys.stderr, flush=True)
            logs.append(arm_log)
            with open(arm_log, 'wb') as f:
                procs.append(subprocess.Popen(arm_cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True, env=env))
        print(f'[bench] starting {launch_file} (output: {log_path})', file=sys.stderr, flush=True)
        logs.append(log_path)
        with open(log_path, 'wb') as log:
            stack = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        procs.append(stack)
        result = _drive(robot, chains, metrics, from_home, sets, procs, startup_timeout)
        if 'error' not in result:
            result['cpu_s_per_s'] = result.pop('cpu_probe')()
    finally:
        for p in reversed(procs):   # the stack first, then the robot driver (it zeroes effort last)
            _stop(p)
    if 'error' in result:
        result['error'] += ''.join('\n' + _tail(p) for p in logs)
    return result
def _reasons_counter(reasons: dict):
    """An on_status hook counting the filter's refusals and the MPC's no-command reasons."""
    import re

    def on_status(name, st, values, t):
        for key in ('last_refusal', 'last_no_command'):
            v = values.get(key)
            if v and v not in ('none', 'no goal'):
                k = f"{name}: {re.sub(r'[0-9]+(.[0-9]+)?', 'N', v)}"
                reasons[k] = reasons.get(k, 0) + 1
    return on_status


def _drive(robot, chains, metrics, from_home, sets, procs, startup_timeout) -> dict:
    import numpy as np
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    from mbrl_ros.core.evaluation.reaching import judge_distances
    from mbrl_ros.ros.conversions import LATCHED, limits_from_msg
    from mbrl_ros.topics import SAFETY_LIMITS_TOPIC
    from mbrl_ros.testing.goals import goal_msg
    from mbrl_ros.testing.ros_probe import RosProbe
    from mbrl_ros.testing.stack_observer import StackObserver

    stack = procs[-1]

    def died() -> str | None:
        for p in procs:
            if p.poll() is not None:
                return f"the {'stack' if p is stack else 'arm process'} exited (code {p.returncode})"
        return None

    limits, reasons = {}, {}
    with RosProbe('ros_closed_loop_bench') as probe:
        rec = StackObserver(probe, robot, ('commands', 'mode', 'ee', 'active_model', 'mpc', 'diagnostics'),
                            ee_min_dt=0.0, on_status=_reasons_counter(reasons))
        probe.subscribe(SAFETY_LIMITS_TOPIC, JointState, LATCHED,
                        lambda m, t: limits.__setitem__('last', limits_from_msg(m, robot.joint_names)[0]))
        t_start = time.monotonic()

        def ready():
            mpc = rec.diag_values('mpc_controller') or {}
            return (len(rec.ee_t) and rec.active_model is not None and rec.mode is not None
                    and mpc.get('model', 'none') != 'none' and probe.node.count_subscribers(GOAL_TOPIC) > 0)
        while not ready():
            if died():
                return {'error': died() + ' before the stack was ready'}
            if time.monotonic() - t_start > startup_timeout:
                return {'error': f'the stack was not ready after {startup_timeout:g} s (no /mbrl/sim/ee_position: '
                                 'a launch file without sim_robot needs --arm-process)' if not len(rec.ee_t) else
                                 f'the stack was not ready after {startup_timeout:g} s'}
            time.sleep(0.1)
        print(f'[bench] stack ready after {time.monotonic() - t_start:.1f} s', file=sys.stderr, flush=True)
        for node, name, value in sets:
            if isinstance(value, int) and not isinstance(value, bool) and \
                    isinstance(probe.get_param(node, name), float):
                value = float(value)   # `--set sim_robot.publish_rate_hz=100` means 100.0
            ok, why = probe.set_param(node, name, value)
            if not ok:
                return {'error': f'{node} refused {name}={value!r}: {why}'}
        settings = {k: probe.get_param('/mpc_controller', k)
                    for k in ('planner', 'horizon', 'num_samples', 'num_elites', 'num_iterations', 'time_budget_ms',
                              'propagation', 'delay_compensation')}
        pub = probe.publisher(GOAL_TOPIC, PointStamped, 10)
        reset = probe.node.create_client(Trigger, '/sim_robot/reset')  # one client: no discovery per goal
        if not reset.wait_for_service(timeout_sec=10.0):
            return {'error': '/sim_robot/reset is not available'}
        time.sleep(0.5)  # the goal publisher is discovered

        def do_reset():
            fut = reset.call_async(Trigger.Request())
            resp = fut.result() if probe.wait_until(fut.done, 5.0) else None
            if resp is None or not resp.success:
                return f'/sim_robot/reset failed: {getattr(resp, "message", "no answer")}'
            return None

        def counters():
            time.sleep(1.1)  # one more /diagnostics of each node (1 Hz)
            return (_filter_periods(rec.diag_values('safety_filter') or {}),
                    _int((rec.diag_values('mpc_controller') or {}).get('missed_periods')))
        t_goals = time.time()
        reasons.clear()
        runs, t_first = [], None
        cpu_probe = _CpuProbe([p.pid for p in procs])
        n_total, k_total = sum(len(g) for _, g in chains), 0
        for seed, goals in chains:
            filter0, own0 = counters()
            per_goal = {'distance_at_settle_m': [], 'final_distance_m': [], 'settle_time_s': [], 'stalled': []}
            t_seed = time.time()
            for k, g in enumerate(goals):
                if k == 0 or from_home:
                    why = do_reset()
                    if why:
                        return {'error': why}
                pub.publish(goal_msg(g))
                t0 = time.time()
                t_first = t_first or t0
                k_total += 1
                print(f'[bench] seed {seed} goal {k + 1}/{len(goals)} ({k_total}/{n_total})', file=sys.stderr, flush=True)
                while time.time() < t0 + metrics.goal_s + 0.03:
                    if died():
                        return {'error': f'{died()} during goal {k + 1} of seed {seed}'}
                    time.sleep(0.02)
                stamps, pos = rec.ee_record(by_stamp=True)
                m = (stamps >= t0 - 0.1) & (stamps <= t0 + metrics.goal_s + 0.03)
                rec.forget_ee(t0 + metrics.goal_s - 0.1)   # memory: only what later windows need
                d = goal_distances(list(zip(stamps[m], pos[m])), g, t0, metrics.goal_s)
                if d is None:
                    return {'error': f'no /mbrl/sim/ee_position during goal {k + 1} of seed {seed}'}
                at, fin, settle, stalled = judge_distances(d, CONTROL_PERIOD_S, metrics)
                for key, v in zip(per_goal, (at, fin, settle, stalled)):
                    per_goal[key].append(v)
            t_end_seed = time.time()
            filter1, own1 = counters()
            runs.append({'seed': seed, **summarize(per_goal, metrics), 'per_goal': per_goal,
                         **_stack_figures(rec, filter0, filter1, own0, own1, t_seed, t_end_seed)})
        t_end = time.time()
        cpu_probe.stop()
        mpc_diag = rec.diag_values('mpc_controller') or {}
        delay = rec.delays_ms(t_goals)
        reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
    all_goals = {key: [v for r in runs for v in r['per_goal'][key]] for key in runs[0]['per_goal']}
    overall = summarize(all_goals, metrics)
    overall['filter_periods'] = {m: sum(r['filter_periods'][m] for r in runs) for m in runs[0]['filter_periods']}
    for key in ('missed_mpc_periods', 'missed_output_periods', 'mpc_missed_periods_own'):
        vals = [r[key] for r in runs]
        overall[key] = None if any(v is None for v in vals) else sum(vals)
    overall['mpc_commands_per_s'] = float(np.mean([r['mpc_commands_per_s'] for r in runs]))
    lim = limits.get('last')
    return {
        'runs': runs, 'overall': overall, 'mpc_settings': settings, 'start': 'home' if from_home else 'chained',
        'plan_ms': {'p50': _pct(mpc_diag, 'plan_ms_p50'), 'p99': _pct(mpc_diag, 'plan_ms_p99')},
        'duration_s': t_end - t_first,
        'command_limits': None if lim is None else {'effort': lim.effort.tolist(), 'step': lim.step.tolist(),
                                                     'joint_margin': lim.joint_margin.tolist()},
        'state_to_output_ms': {'p50': float(np.percentile(delay, 50)) if len(delay) else float('nan'),
                               'p99': float(np.percentile(delay, 99)) if len(delay) else float('nan')},
        'reasons': reasons, 'cpu_probe': cpu_probe.result,
    }


def _stack_figures(rec, filter0, filter1, own0, own1, t0, t1) -> dict:
    """The stack's own figures over [t0, t1]: filter periods per mode (its counters), missed periods
    (receive-time gaps here; the MPC's own count from its send times), MPC commands per second."""
    import numpy as np
    mpc_t, out_t = rec.mpc_times(t0, t1), rec.commands(t0, t1)[0]

    def missed(ts):
        if len(ts) < 2:
            return int(round((t1 - t0) / CONTROL_PERIOD_S))
        gaps = np.diff(ts)
        return int(np.sum(np.maximum(np.round(gaps / CONTROL_PERIOD_S) - 1, 0)[gaps > 1.5 * CONTROL_PERIOD_S]))
    return {
        'filter_periods': {m: filter1.get(m, 0) - filter0.get(m, 0) for m in ('mpc', 'policy', 'hold', 'rate_limited',
                                                                              'clamped')},
        'mpc_commands_per_s': len(mpc_t) / max(t1 - t0, 1e-9),
        'missed_mpc_periods': missed(mpc_t), 'missed_output_periods': missed(out_t),
        # The MPC's own count, from its send times: the probe's receive delays (a normal-priority
        # process beside five real-time ones) are not in it.
        'mpc_missed_periods_own': None if own0 is None or own1 is None else own1 - own0,
    }


def _pct(values: dict, key: str) -> float:
    try:
        return float(values[key])
    except (KeyError, ValueError, TypeError):
        return float('nan')


class _CpuProbe:
    """CPU seconds per wall second of each node process during the goals: what the stack demands
    of the machine (work done, so much less sensitive to other load than timings are)."""

    def __init__(self, pids: list):
        import psutil
        self.t0 = time.monotonic()
        self.procs = {}
        for pid in pids:
            try:
                top = psutil.Process(pid)
                # A node process itself (the arm process), else the launch runner's children.
                found = top.children(recursive=True) or [top]
            except psutil.Error:
                continue
            for p in found:
                try:
                    self.procs[p] = (self._name(p), p.cpu_times())
                except psutil.Error:
                    pass
        self.usage: dict = {}

    @staticmethod
    def _name(p) -> str:
        args = p.cmdline()
        for a in args:
            if a.startswith('__node:='):
                return a.split(':=', 1)[1]
        if '-m' in args[:-1]:   # python -m mbrl_ros.nodes.sim_robot (the arm process)
            return args[args.index('-m') + 1].rsplit('.', 1)[-1]
        return next((a.rsplit('/', 1)[-1] for a in args[1:2]), p.name())

    def stop(self) -> None:
        span = time.monotonic() - self.t0
        for p, (name, c0) in self.procs.items():
            try:
                c1 = p.cpu_times()
            except Exception:
                continue
            self.usage[name] = round((c1.user + c1.system - c0.user - c0.system) / span, 3)

    def result(self) -> dict:
        return self.usage


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _filter_periods(values: dict) -> dict:
    out = {}
    for m, key in (('mpc', 'periods_mpc'), ('policy', 'periods_policy'), ('hold', 'periods_hold'),
                   ('rate_limited', 'rate_limited'), ('clamped', 'clamped')):
        out[m] = _int(values.get(key)) or 0
    return out


# ---- the report -----------------------------------------------------------------------------------
def _print(args, robot, model_dir, seeds, rows) -> None:
    import math
    ros = rows['ros']
    s = ros['mpc_settings']
    start = 'from home before every goal' if args.from_home else 'chained (home at the start of each seed)'
    print(f"{robot.name}, bundle {model_dir}, {args.goals} goals x {args.goal_s:g} s per seed, seeds "
          f"{','.join(map(str, seeds))}, {start}; launch {args.launch_file}"
          + (f' + params {args.params_file}' if args.params_file else '')
          + (f'; arm process SCHED_FIFO {args.arm_priority}' if args.arm_process else ''))
    print(f"planner {s.get('planner')} H={s.get('horizon')} N={s.get('num_samples')} elites={s.get('num_elites')} "
          f"budget {s.get('time_budget_ms')} ms, delay compensation {s.get('delay_compensation')}"
          + (f"; set: {', '.join(args.set)}" if args.set else ''))
    lim = ros.get('command_limits')
    if lim:
        print('safety filter limits (planned within): effort ' + ' '.join(f'{v:.3g}' for v in lim['effort'])
              + ' Nm, step ' + ' '.join(f'{v:.3g}' for v in lim['step']) + ' Nm/period')
    st = (lambda v: '>window' if math.isinf(v) else f'{v:.2f}')
    print(f'{"loop":>9}{"seed":>6}{"@" + format(args.settle, "g") + "s<2cm":>10}{"@end<2cm":>10}{"final med mm":>14}'
          f'{"p90 mm":>9}{"settle s":>10}{"settled":>9}{"stalled":>9}{"mpc/pol/hold %":>16}{"missed mpc/out/own":>20}')
    for name, r in rows.items():
        for run in r['runs'] + ([{'seed': 'all', **r['overall']}] if len(r['runs']) > 1 else []):
            fp = run.get('filter_periods')
            modes = ''
            if fp:
                tot = max(fp['mpc'] + fp['policy'] + fp['hold'], 1)
                modes = '/'.join(f'{100 * fp[m] / tot:.0f}' for m in ('mpc', 'policy', 'hold'))
            missed = '' if 'missed_mpc_periods' not in run else \
                f"{run['missed_mpc_periods']}/{run['missed_output_periods']}/{run['mpc_missed_periods_own']}"
            print(f"{name:>9}{run['seed']!s:>6}{run['success_rate']:>10.0%}{run['success_at_end_rate']:>10.0%}"
                  f"{run['final_mm']['median']:>14.1f}{run['final_mm']['p90']:>9.1f}{st(run['settle_s_median']):>10}"
                  f"{run['settled_rate']:>9.0%}{run['stalled']:>9}{modes:>16}{missed:>20}")
    print(f"plan ms (mpc_controller, its last 500 plans): p50 {ros['plan_ms']['p50']:.2f}, p99 {ros['plan_ms']['p99']:.2f}"
          + ('; ros-free p50 {p50:.2f}, p99 {p99:.2f}'.format(**rows['ros-free']['plan_ms']) if 'ros-free' in rows else ''))
    d = ros['state_to_output_ms']
    fp = ros['overall']['filter_periods']
    print(f"state-to-output delay p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms; filter: rate-limited "
          f"{fp['rate_limited']}, clamped {fp['clamped']} of {fp['mpc'] + fp['policy'] + fp['hold']} periods; "
          f"MPC {ros['overall']['mpc_commands_per_s']:.1f} commands/s. 'missed own': the mpc_controller's count "
          "from its send times; mpc/out: gaps at this process's receive times")
    cpu = ros.get('cpu_s_per_s', {})
    if cpu:
        print(f"CPU (cores busy during the goals): {sum(cpu.values()):.2f} = "
              + ', '.join(f'{k} {v:.2f}' for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
    if ros.get('reasons'):
        print('reasons (diagnostics samples): ' + '; '.join(f'{k} ({n})' for k, n in ros['reasons'].items()))
    print('per goal final distance mm: ' + ' | '.join(
        f"{name} {run['seed']}: " + ' '.join(f'{1e3 * v:.0f}' for v in run['per_goal']['final_distance_m'])
        for name, r in rows.items() for run in r['runs']))


# ---- the ROS-free reference on the same goals -----------------------------------------------------
class _FilteredMpc:
    """The MPC as the stack runs it, without ROS: planning within the filter's limits, rate-limited from
    the command sent, its output clamped and rate-limited as the safety filter does; a plan without a
    command (budget too small) repeats the last one for the filter's command timeout (5 periods), then
    the filter's hold (-2·qd). Not modelled: the policy fallback, joint-limit refusals, delays."""
    TIMEOUT_PERIODS = 5
    HOLD_DAMPING = 2.0

    def __init__(self, agent, limits):
        self.agent, self.limits = agent, limits
        self.sent = None
        self.missing = 0
        if limits is not None:
            agent.mpc.set_command_limits(limits)

    def reset(self):
        import numpy as np
        self.agent.reset()
        self.sent = np.zeros(self.agent.robot.dof)
        self.missing = 0

    def __call__(self, q, qd, goal):
        import numpy as np
        res = self.agent.plan(q, qd, goal, last_action=self.sent)
        self.missing = self.missing + 1 if res.command is None else 0
        if self.missing > self.TIMEOUT_PERIODS:   # hold: dissipative, not rate-limited (as the filter)
            hold = -self.HOLD_DAMPING * np.asarray(qd, float)
            self.sent = hold if self.limits is None else np.clip(hold, -self.limits.effort, self.limits.effort)
            return self.sent.copy()
        u = self.sent if res.command is None else res.command
        self.sent = u if self.limits is None else self.limits.bound(u, self.sent)
        return self.sent.copy()


def run_ros_free(robot, model_dir: Path, chains: list, metrics, from_home: bool, settings: dict,
                 command_limits: dict | None) -> dict:
    """evaluate_reaching (MpcController on SimArm, true state, the command applied at once, wall-clock
    budget) on the same goals and start mode, within the limits the stack's filter announced."""
    import numpy as np

    from mbrl_ros.core.bundle import load_bundle
    from mbrl_ros.core.evaluation.reaching import evaluate_reaching
    from mbrl_ros.core.learning.agent import MpcAgent, planner_config
    from mbrl_ros.core.safety import CommandLimits

    bundle = load_bundle(model_dir, robot)
    planner = {k: v for k, v in settings.items() if v is not None and k not in ('propagation', 'delay_compensation')}
    limits = CommandLimits(**command_limits) if command_limits else None
    runs, times = [], []
    for seed, goals in chains:
        agent = MpcAgent(robot, bundle, planner_config(**planner), dt=bundle.dt,
                         propagation=settings.get('propagation') or 'expectation')
        res = evaluate_reaching(_FilteredMpc(agent, limits), robot, goals=goals, seed=seed,
                                settle_s=metrics.settle_s, goal_s=metrics.goal_s, tolerance_m=metrics.tolerance_m,
                                start='home' if from_home else 'chained', dt=CONTROL_PERIOD_S)
        per_goal = {'distance_at_settle_m': res.distance_at_settle_m.tolist(),
                    'final_distance_m': res.final_distance_m.tolist(),
                    'settle_time_s': res.settle_time_s.tolist(), 'stalled': res.stalled.tolist()}
        runs.append({'seed': seed, **summarize(per_goal, metrics), 'per_goal': per_goal, 'failures': res.failures})
        times.append(res.step_ms)
    t = np.concatenate(times)
    all_goals = {key: [v for r in runs for v in r['per_goal'][key]] for key in runs[0]['per_goal']}
    return {'runs': runs, 'overall': summarize(all_goals, metrics),
            'plan_ms': {'p50': float(np.percentile(t, 50)), 'p99': float(np.percentile(t, 99))}}
