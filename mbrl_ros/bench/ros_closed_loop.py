"""`mbrl-ros bench ros-closed-loop`: the reaching benchmark through the whole ROS stack.

The ROS counterpart of `mbrl-ros bench closed-loop`: `sim_arm.launch.yaml` runs headless (every
node its own process, in a ROS domain of its own); for each goal of `sample_goals(robot, N, seed)`
(the same goals as the ROS-free bench) the bench sends the goal on /mbrl/goal and resets the
simulated arm to its start pose (`/sim_robot/reset`), then judges the end effector
(/mbrl/sim/ee_position, simulator ground truth) `--settle` s later: success = within 2 cm.

Every goal starts from the sim_robot's start pose (the home keyframe; the reset service cannot set
another), so `--compare` runs the ROS-free loop (MpcController on SimArm, planning from the true
state, the command applied at once, the same planner and budget) on the same (home, goal) pairs: the
difference between the two rows is what the ROS stack costs.

Printed: success, final distance median/p90, the mpc_controller's plan time p50/p99 (its own
/diagnostics), the safety filter's periods per mode (its counters), missed periods (gaps in
/mbrl/mpc/command and in /forward_effort_controller/commands of more than 1.5 periods, counted in
periods), and the state-to-actuator delay: for each command the filter sent, its receive time minus
the stamp of the state the MPC command it forwarded was planned from (the real delay adds the
robot's own command pickup).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

SUCCESS_RADIUS_M = 0.02
CONTROL_PERIOD_S = 0.02


def add_arguments(p):
    p.add_argument('--robot', default='arm7', help='built-in robot (default arm7)')
    p.add_argument('--model-dir', default=None, help='bundle directory (default: the shipped models/<robot>)')
    p.add_argument('--goals', type=int, default=10, help='number of goals (default 10)')
    p.add_argument('--seed', type=int, default=1000, help='goal seed (default 1000, as bench closed-loop)')
    p.add_argument('--settle', type=float, default=3.0, help='seconds per goal; success judged at the end')
    p.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE',
                   help='set a parameter on a running node before the goals (as `ros2 param set`), '
                        'e.g. safety_filter.max_effort_step=0.5; repeatable')
    p.add_argument('--compare', action='store_true',
                   help='also run the ROS-free loop on the same (start, goal) pairs')
    p.add_argument('--launch-file', default='sim_arm.launch.yaml')
    p.add_argument('--launch-arg', action='append', default=[], metavar='NAME:=VALUE',
                   help='another launch argument, e.g. control_thread_priority:=20; repeatable')
    p.add_argument('--log', default=None, metavar='FILE', help="the stack's output (default: a temp file)")
    p.add_argument('--startup-timeout', type=float, default=120.0)
    p.add_argument('--json', action='store_true')


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


def run(args) -> int:
    import numpy as np

    from mbrl_ros.core.evaluation.reaching import sample_goals
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.resources import default_model_dir

    try:
        if args.goals < 1 or not args.settle > 0:
            raise ValueError('--goals must be >= 1 and --settle > 0')
        sets = _parse_sets(args.set)
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
    _, _, goals = sample_goals(robot, args.goals, args.seed)
    bad = [a for a in args.launch_arg if ':=' not in a]
    if bad:
        print(f'mbrl-ros bench ros-closed-loop: --launch-arg takes NAME:=VALUE, got {bad[0]!r}')
        return 2
    result = run_ros(robot, model_dir, goals, args.settle, sets, args.launch_file, args.log,
                     args.startup_timeout, args.launch_arg)
    if 'error' in result:
        print(f"mbrl-ros bench ros-closed-loop: {result['error']}")
        return 1
    rows = {'ros': result}
    if args.compare:
        rows['ros-free'] = run_ros_free(robot, model_dir, goals, args.settle, result['mpc_settings'])
    if args.json:
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'per_goal'} | {'final_distance_m': v['per_goal']}
                          for k, v in rows.items()}, indent=1, default=float))
        return 0
    s = result['mpc_settings']
    print(f"{robot.name}, bundle {model_dir}, {args.goals} goals (seed {args.seed}) from the start pose, "
          f"success = EE within 2 cm after {args.settle:g} s; planner {s.get('planner')} H={s.get('horizon')} "
          f"N={s.get('num_samples')} elites={s.get('num_elites')} budget {s.get('time_budget_ms')} ms"
          + (f"; set: {', '.join(args.set)}" if args.set else ''))
    print(f'{"loop":>9}{"success":>9}{"dist med cm":>13}{"dist p90 cm":>13}{"plan p50":>10}{"plan p99":>10}'
          f'{"mpc %":>7}{"hold %":>8}{"missed mpc":>12}{"missed out":>12}{"delay p50/p99 ms":>18}')
    for name, r in rows.items():
        d = np.asarray(r['per_goal'])
        modes = r.get('filter_periods', {})
        tot = max(sum(modes.values()), 1)
        delay = r.get('state_to_output_ms')
        print(f'{name:>9}{(d <= SUCCESS_RADIUS_M).mean():>9.0%}{100 * np.median(d):>13.2f}'
              f'{100 * np.percentile(d, 90):>13.2f}{r["plan_ms"]["p50"]:>10.2f}{r["plan_ms"]["p99"]:>10.2f}'
              + (f'{100 * modes.get("mpc", 0) / tot:>7.0f}{100 * modes.get("hold", 0) / tot:>8.0f}'
                 f'{r["missed_mpc_periods"]:>12}{r["missed_output_periods"]:>12}'
                 f'{delay["p50"]:>9.1f}/{delay["p99"]:<8.1f}' if name == 'ros' else ''))
    print('per goal final distance cm: ' + '  '.join(
        f"{name}: " + ' '.join(f'{100 * v:.1f}' for v in r['per_goal']) for name, r in rows.items()))
    cpu = result.get('cpu_s_per_s', {})
    if cpu:
        print(f"stack CPU (cores busy during the goals): {sum(cpu.values()):.2f} = "
              + ', '.join(f'{k} {v:.2f}' for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
    own = result.get('mpc_missed_periods_own')
    print(f"mpc_controller's own count of periods without a command (its send times): "
          f"{'n/a' if own is None else own}; 'missed mpc/out' above are the gaps at this process's receive times")
    fp = result['filter_periods']
    print(f"safety filter: {sum(fp.values())} periods, rate-limited {result['rate_limited_periods']}; "
          f"MPC {result['mpc_commands_per_s']:.1f} commands/s")
    if result.get('reasons'):
        print('reasons (diagnostics samples): ' + '; '.join(f'{k} ({n})' for k, n in result['reasons'].items()))
    return 0


# ---- the ROS run ----------------------------------------------------------------------------------
def run_ros(robot, model_dir: Path, goals, settle_s: float, sets: list, launch_file: str, log_path,
            startup_timeout: float, launch_args: list = ()) -> dict:
    import subprocess
    import tempfile

    from mbrl_ros.commands.demo import _stop, _tail
    from mbrl_ros.testing.isolation import isolate_ros_session

    isolate_ros_session()
    log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix='ros_closed_loop_')) / 'launch.log'
    cmd = [sys.executable, '-m', 'mbrl_ros.cli', 'launch', launch_file, f'robot:={robot.name}',
           f'model_dir:={model_dir.resolve()}', *launch_args, '--log-dir', str(log_path.parent / 'logs')]
    print(f'[bench] starting {launch_file} (output: {log_path})', file=sys.stderr, flush=True)
    with open(log_path, 'wb') as log:
        stack = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        try:
            result = _drive(robot, goals, settle_s, sets, stack, startup_timeout)
            if 'error' not in result:
                result['cpu_s_per_s'] = result.pop('cpu_probe')()
        finally:
            _stop(stack)
    if 'error' in result:
        result['error'] += '\n' + _tail(log_path)
    return result


class _Recorder:
    """Collects what the bench judges, from the probe's executor thread."""

    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.ee: list = []             # (stamp s, xyz)
        self.mpc: list = []            # (receive s, state stamp s)
        self.out: list = []            # receive s of each /forward_effort_controller/commands
        self.out_delay_ms: list = []   # receive - stamp of the MPC command last received before it
        self.diag: dict = {}           # node -> values (latest)
        self.reasons: dict = {}
        self.active_model = None
        self.mode = None

    def on_ee(self, msg, t):
        with self.lock:
            self.ee.append((msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec,
                            (msg.point.x, msg.point.y, msg.point.z)))

    def on_mpc(self, msg, t):
        with self.lock:
            self.mpc.append((t, msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec))

    def on_out(self, msg, t):
        with self.lock:
            self.out.append(t)
            if self.mpc and t - self.mpc[-1][0] < 0.1:
                self.out_delay_ms.append(1e3 * (t - self.mpc[-1][1]))

    def on_diag(self, msg, t):
        import re
        for st in msg.status:
            name = st.name.lstrip('/').split(':')[-1].strip()
            values = {kv.key: kv.value for kv in st.values}
            self.diag[name] = values
            for key in ('last_refusal', 'last_no_command'):
                v = values.get(key)
                if v and v not in ('none', 'no goal'):
                    k = f"{name}: {re.sub(r'[0-9]+(.[0-9]+)?', 'N', v)}"
                    self.reasons[k] = self.reasons.get(k, 0) + 1


def _drive(robot, goals, settle_s, sets, stack, startup_timeout) -> dict:
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger

    from mbrl_ros.ros.conversions import LATCHED
    from mbrl_ros.testing.goals import goal_msg
    from mbrl_ros.testing.ros_probe import RosProbe

    rec = _Recorder()
    with RosProbe('ros_closed_loop_bench') as probe:
        probe.subscribe('/mbrl/sim/ee_position', PointStamped, 50, rec.on_ee)
        probe.subscribe('/mbrl/mpc/command', JointState, 50, rec.on_mpc)
        probe.subscribe('/forward_effort_controller/commands', Float64MultiArray, 50, rec.on_out)
        probe.subscribe('/diagnostics', DiagnosticArray, 50, rec.on_diag)
        probe.subscribe('/mbrl/world_model/active_model', String, LATCHED,
                        lambda m, t: setattr(rec, 'active_model', m.data))
        probe.subscribe('/mbrl/safety/mode', String, LATCHED, lambda m, t: setattr(rec, 'mode', m.data))
        t_start = time.monotonic()

        def ready():
            mpc = rec.diag.get('mpc_controller', {})
            return (rec.ee and rec.active_model is not None and rec.mode is not None
                    and mpc.get('model', 'none') != 'none' and probe.node.count_subscribers('/mbrl/goal') > 0)
        while not ready():
            if stack.poll() is not None:
                return {'error': f'the stack exited (code {stack.returncode}) before it was ready'}
            if time.monotonic() - t_start > startup_timeout:
                return {'error': f'the stack was not ready after {startup_timeout:g} s'}
            time.sleep(0.1)
        print(f'[bench] stack ready after {time.monotonic() - t_start:.1f} s', file=sys.stderr, flush=True)
        for node, name, value in sets:
            ok, why = probe.set_param(node, name, value)
            if not ok:
                return {'error': f'{node} refused {name}={value!r}: {why}'}
        settings = {k: probe.get_param('/mpc_controller', k)
                    for k in ('planner', 'horizon', 'num_samples', 'num_elites', 'num_iterations', 'time_budget_ms',
                              'propagation')}
        pub = probe.publisher('/mbrl/goal', PointStamped, 10)
        reset = probe.node.create_client(Trigger, '/sim_robot/reset')  # one client: no discovery per goal
        if not reset.wait_for_service(timeout_sec=10.0):
            return {'error': '/sim_robot/reset is not available'}
        time.sleep(0.5)  # the goal publisher is discovered
        per_goal, t_goals = [], []
        with rec.lock:
            rec.mpc.clear(), rec.out.clear(), rec.out_delay_ms.clear(), rec.reasons.clear()
        filter0 = _filter_periods(rec.diag.get('safety_filter', {}))
        own0 = _int(rec.diag.get('mpc_controller', {}).get('missed_periods'))
        cpu_probe = _CpuProbe(stack.pid)
        for k, g in enumerate(goals):
            pub.publish(goal_msg(g))
            fut = reset.call_async(Trigger.Request())
            resp = fut.result() if probe.wait_until(fut.done, 5.0) else None
            if resp is None or not resp.success:
                return {'error': f'/sim_robot/reset failed: {getattr(resp, "message", "no answer")}'}
            t0 = time.time()
            t_goals.append(t0)
            print(f'[bench] goal {k + 1}/{len(goals)}', file=sys.stderr, flush=True)
            while time.time() < t0 + settle_s + 0.05:
                if stack.poll() is not None:
                    return {'error': f'the stack exited (code {stack.returncode}) during goal {k + 1}'}
                time.sleep(0.02)
            with rec.lock:
                after = [(s, p) for s, p in rec.ee if s >= t0 + settle_s]
                last = after[0][1] if after else rec.ee[-1][1]
            per_goal.append(float(np.linalg.norm(np.asarray(last) - g)))
        t_end = time.time()
        cpu_probe.stop()
        time.sleep(1.2)  # one more /diagnostics of each node
        filter1 = _filter_periods(rec.diag.get('safety_filter', {}))
        mpc_diag = rec.diag.get('mpc_controller', {})
        own1 = _int(mpc_diag.get('missed_periods'))
        with rec.lock:
            mpc_t = np.array([t for t, _ in rec.mpc if t_goals[0] <= t <= t_end])
            out_t = np.array([t for t in rec.out if t_goals[0] <= t <= t_end])
            delay = np.array(rec.out_delay_ms)
            reasons = dict(sorted(rec.reasons.items(), key=lambda kv: -kv[1])[:4])

    def missed(ts):
        if len(ts) < 2:
            return int(round((t_end - t_goals[0]) / CONTROL_PERIOD_S))
        gaps = np.diff(ts)
        return int(np.sum(np.maximum(np.round(gaps / CONTROL_PERIOD_S) - 1, 0)[gaps > 1.5 * CONTROL_PERIOD_S]))

    def pct(v, p):
        try:
            return float(v[p])
        except (KeyError, ValueError, TypeError):
            return float('nan')
    return {
        'per_goal': per_goal, 'mpc_settings': settings,
        'plan_ms': {'p50': pct(mpc_diag, 'plan_ms_p50'), 'p99': pct(mpc_diag, 'plan_ms_p99')},
        'filter_periods': {m: filter1.get(m, 0) - filter0.get(m, 0) for m in ('mpc', 'policy', 'hold')},
        'rate_limited_periods': filter1.get('rate_limited', 0) - filter0.get('rate_limited', 0),
        'mpc_commands_per_s': len(mpc_t) / max(t_end - t_goals[0], 1e-9),
        'missed_mpc_periods': missed(mpc_t), 'missed_output_periods': missed(out_t),
        # The MPC's own count, from its send times: the probe's receive delays (a normal-priority
        # process beside five real-time ones) are not in it.
        'mpc_missed_periods_own': None if own0 is None or own1 is None else own1 - own0,
        'state_to_output_ms': {'p50': float(np.percentile(delay, 50)) if len(delay) else float('nan'),
                               'p99': float(np.percentile(delay, 99)) if len(delay) else float('nan')},
        'reasons': reasons, 'cpu_probe': cpu_probe.result,
    }


class _CpuProbe:
    """CPU seconds per wall second of each node process during the goals: what the stack demands
    of the machine (work done, so much less sensitive to other load than timings are)."""

    def __init__(self, pid: int):
        import psutil
        self.t0 = time.monotonic()
        self.procs = {}
        for p in psutil.Process(pid).children(recursive=True):
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


# ---- the ROS-free reference on the same (start, goal) pairs ---------------------------------------
def run_ros_free(robot, model_dir: Path, goals, settle_s: float, settings: dict) -> dict:
    """MpcController on SimArm from the home pose, as `bench closed-loop` runs it (true state,
    command applied at once, wall-clock budget), on the same goals."""
    import numpy as np

    from mbrl_ros.core.learning.agent import MpcAgent, planner_config
    from mbrl_ros.core.runtime.bundle import load_bundle
    from mbrl_ros.core.sim import SimArm

    bundle = load_bundle(model_dir, robot)
    planner = {k: v for k, v in settings.items() if v is not None and k != 'propagation'}
    agent = MpcAgent(robot, bundle, planner_config(**planner), dt=bundle.dt,
                     propagation=settings.get('propagation') or 'expectation')
    sim = SimArm(robot, physics_rate_hz=500.0)
    substeps = int(round(bundle.dt * 500.0))
    per_goal, times = [], []
    for g in goals:
        sim.reset(robot.home_q)
        agent.reset()
        for _ in range(int(round(settle_s / bundle.dt))):
            q, qd, _ = sim.observe()
            t0 = time.perf_counter()
            u = agent(q, qd, g)
            times.append(1e3 * (time.perf_counter() - t0))
            sim.set_command(u)
            sim.step(substeps)
        per_goal.append(float(np.linalg.norm(sim.ee_position() - g)))
    return {'per_goal': per_goal, 'plan_ms': {'p50': float(np.percentile(times, 50)),
                                              'p99': float(np.percentile(times, 99))}}
