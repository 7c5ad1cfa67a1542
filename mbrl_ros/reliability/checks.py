"""`mbrl-ros check <name>`: the long forms of the reliability harnesses, each against a live sim stack in
a ROS domain of its own (this machine only), set up before rclpy loads. Their short forms run in the
test suite (test_chaos, test_load, test_soak, test_fuzz_nodes, test_bad_bundles); docs/reliability.md
has what each measured.

- chaos: SIGKILL and restart each node in a seeded random order while the arm reaches random goals;
  per fault the mode the safety filter went to (against the designed one), the time to it and to
  recovery, commands outside the limits (must be 0). Exit 0 when every fault ended as designed.
- load: random goals (one every 3 s) while both cores are busy with other work; missed control
  periods, periods per mode, out-of-limit commands, success, MPC plan time. Exit 0 when no command
  left the limits.
- soak: a goal every 3 s for 30 min; crashes, memory growth per node, success per window, missed
  periods, out-of-limit commands. Exit 0 when nothing crashed or grew and no command left the limits.
- fuzz: hypothesis-generated messages on every subscribed topic of every node while the MPC drives
  the arm; crashes, out-of-limit commands, nodes that stop answering. Exit 0 when none.
- bad-bundles: corrupt or mismatched copies of a good bundle set live as world_model's model_dir;
  each must be refused with its check named and no node may change model. Exit 0 when so.

Exit status 2: the stack did not come up or the options were wrong.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from mbrl_ros.testing.isolation import describe_isolation, isolate_ros_session


def _say(line: str) -> None:
    print(line, flush=True)


# ---- chaos -----------------------------------------------------------------------------------------
def chaos_arguments(p) -> None:
    from mbrl_ros.reliability.harness import add_common_arguments
    add_common_arguments(p, 300.0)
    p.add_argument('--restart-delay', type=float, default=3.0, metavar='S',
                   help='seconds before a killed node is restarted')
    p.add_argument('--nodes', default=None, help='comma-separated nodes to kill (default: all six)')
    p.add_argument('--sequence', default=None, help='comma-separated: exactly these faults in this order')
    p.add_argument('--faults', type=int, default=None, help='stop after this many faults (default: fill --duration)')


def chaos(args) -> int:
    domain = isolate_ros_session()   # before rclpy loads: never touch a real robot's domain
    from mbrl_ros.reliability.chaos import NODES, ChaosRun, format_summary
    from mbrl_ros.reliability.harness import script_session, write_json
    nodes = tuple(args.nodes.split(',')) if args.nodes else NODES
    bad = (set(nodes) | set(args.sequence.split(',') if args.sequence else ())) - set(NODES)
    if bad:
        print(f'mbrl-ros check chaos: unknown nodes {sorted(bad)}; known: {", ".join(NODES)}')
        return 2
    with script_session('chaos', args, domain, restart_delay=args.restart_delay, liveness=True) as s:
        _say(f'[chaos] faulting for {args.duration:g} s')
        res = ChaosRun(s, say=_say).run(args.duration, args.seed, nodes, args.faults,
                                        args.sequence.split(',') if args.sequence else None)
    res['left_behind'] = s.left_behind
    _say(format_summary(res))
    if s.left_behind:
        print(f'[chaos] processes left behind (killed): {s.left_behind}')
    write_json(args.json, res)
    ok = res['out_of_limit_total'] == 0 and res['all_as_designed'] and res['all_recovered'] and not s.left_behind
    return 0 if ok else 1


# ---- load ------------------------------------------------------------------------------------------
def load_arguments(p) -> None:
    from mbrl_ros.reliability.harness import add_common_arguments
    add_common_arguments(p, 300.0)
    p.add_argument('--hogs', type=int, default=2, help='busy processes (2: one per core)')
    p.add_argument('--baseline', type=float, default=0.0, metavar='S',
                   help='first measure S seconds without the hogs (0: none)')


def load(args) -> int:
    domain = isolate_ros_session()
    from mbrl_ros.reliability.harness import script_session, write_json
    from mbrl_ros.reliability.load import CpuHogs, format_result, measure
    out = {}
    with script_session('load', args, domain) as s:
        if args.baseline > 0:
            out['baseline'] = measure(s, args.baseline, _say, 'baseline')
            _say(format_result(out['baseline'], 'baseline'))
        with CpuHogs(args.hogs) as hogs:
            cpu = hogs.cpu_percent()
            res = measure(s, args.duration, _say, 'load')
            res['hogs'], res['hog_cpu'] = args.hogs, [round(c) for c in cpu]
        out['load'] = res
    _say(format_result(res, 'load'))
    write_json(args.json, out)
    return 0 if res['out_of_limit'] == 0 and not s.left_behind else 1


# ---- soak ------------------------------------------------------------------------------------------
def soak_arguments(p) -> None:
    from mbrl_ros.reliability.harness import add_common_arguments
    add_common_arguments(p, 1800.0)
    p.add_argument('--goal-period', type=float, default=3.0, metavar='S', help='seconds per goal')
    p.add_argument('--window', type=float, default=300.0, metavar='S', help='success-rate window')
    p.add_argument('--memory-ref', type=float, default=120.0, metavar='S',
                   help='RSS reference time after the start (at most 30 %% of the run)')
    p.add_argument('--max-growth', type=float, default=0.05, help='allowed RSS growth per node')


def soak(args) -> int:
    domain = isolate_ros_session()
    from mbrl_ros.reliability.harness import script_session, write_json
    from mbrl_ros.reliability.soak import format_summary, run_soak
    with script_session('soak', args, domain, goal_period_s=args.goal_period) as s:
        _say(f'[soak] soaking for {args.duration:g} s')
        res = run_soak(s, args.duration, args.window, args.memory_ref, say=_say)
    res['left_behind'] = s.left_behind
    _say(format_summary(res))
    write_json(args.json, res)
    g = res['max_memory_growth']
    ok = res['no_crash'] and res['out_of_limit'] == 0 and g is not None and g < args.max_growth and not s.left_behind
    return 0 if ok else 1


# ---- fuzz ------------------------------------------------------------------------------------------
def fuzz_arguments(p) -> None:
    p.add_argument('--messages', type=int, default=10000, help='messages per topic')
    p.add_argument('--rate', type=float, default=1000.0, help='most messages per second (0: no limit)')
    p.add_argument('--seed', type=int, default=0, help='hypothesis seed')
    p.add_argument('--robot', default='arm3', help='robot of the stack')
    p.add_argument('--model-dir', default='', help="bundle for the stack ('': the shipped one)")
    p.add_argument('--topics', nargs='*', help='only these topics (default: all subscribed topics)')


def fuzz(args) -> int:
    isolate_ros_session()   # before rclpy: the stack and this probe share a private domain
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.testing.fuzz import STACK_ARGS, STACK_TOPICS, format_table, fuzz_stack
    from mbrl_ros.testing.pytest_plugin import LaunchedSystem

    robot = RobotModel.load(args.robot)
    launch_args = {**STACK_ARGS, 'robot': args.robot}
    if args.model_dir:
        launch_args['model_dir'] = args.model_dir
    _say(f'{describe_isolation()}; {args.messages} messages per topic, seed {args.seed}')
    t0 = time.monotonic()
    system = LaunchedSystem('sim_arm.launch.yaml', launch_args, STACK_TOPICS, timeout=180, echo=False)
    system.start()
    try:
        results = fuzz_stack(system, robot, args.messages, args.topics, args.rate, args.seed, log=_say)
    finally:
        left = system.stop(check=False)
    print()
    print(format_table(results))
    crashes = sum(len(r.crashed) for r in results)
    bad = sum(r.out_of_limit for r in results)
    cmds = sum(r.filter_commands for r in results)
    deaf = [f'{r.topic}: {n}' for r in results for n, v in r.responsive.items() if v != 'yes']
    print(f'\ntotal: {sum(r.sent for r in results)} messages in {time.monotonic() - t0:.0f} s; '
          f'crashes {crashes}; {cmds} safety-filter commands checked, {bad} outside limits; '
          f'unresponsive: {deaf or "none"}; processes left after shutdown: {left or "none"}')
    return 0 if crashes == 0 and bad == 0 and not deaf and cmds > 0 else 1


# ---- bad bundles -----------------------------------------------------------------------------------
def bad_bundles_arguments(p) -> None:
    p.add_argument('--count', type=int, default=100, help='bad bundles (the kinds cycled)')
    p.add_argument('--seed', type=int, default=0, help='random seed of the corruptions')
    p.add_argument('--robot', default='arm3', help='robot of the stack')
    p.add_argument('--good', default='', help="the good bundle (default: the shipped models/<robot>)")
    p.add_argument('--keep', action='store_true', help='keep the generated bundles (path printed)')
    p.add_argument('--launch-arg', action='append', default=[], metavar='NAME:=VALUE',
                   help='another sim_arm.launch.yaml argument, e.g. control_thread_priority:=20 (repeatable)')


def bad_bundles(args) -> int:
    isolate_ros_session()
    import psutil

    from mbrl_ros.resources import default_model_dir
    from mbrl_ros.testing.bad_bundles import format_report, make_bad_bundles, run_against_stack
    from mbrl_ros.testing.fuzz import STACK_TOPICS
    from mbrl_ros.testing.pytest_plugin import LaunchedSystem

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    work = Path(tempfile.mkdtemp(prefix='bad_bundles_'))
    try:
        # <work>/roots/good/<robot>: the stack starts from it, so <work>/roots/good is a model root
        # (the startup bundle's folder); bad bundles go under it, model_roots cases under <work>/outside.
        good = work / 'roots' / 'good' / args.robot
        shutil.copytree(Path(args.good) if args.good else default_model_dir(args.robot), good,
                        ignore=shutil.ignore_patterns('*.png'))
        bad = make_bad_bundles(good, good.parent / 'bad', args.count, outside=work / 'outside', seed=args.seed)
        _say(f'{describe_isolation()}; {len(bad)} bad bundles under {work}')
        extra = dict(a.split(':=', 1) for a in args.launch_arg)
        system = LaunchedSystem('sim_arm.launch.yaml', {'robot': args.robot, 'model_dir': str(good),
                                                        'respawn': False, **extra},   # a death must show
                                STACK_TOPICS, timeout=180, echo=False)
        system.start()
        try:
            report = run_against_stack(system, bad, log=_say)
            crashed = [n for n, pid in system.pids().items() if not alive(pid)]
        finally:
            system.stop(check=False)
        print()
        print(format_report(report))
        print(f'node processes that exited during the run: {crashed or "none"}')
        ok = (all(o.refused and o.check_named for o in report.outcomes) and not crashed
              and all(a == report.good_identity for a in report.active_models)
              and all(v == report.good_identity for v in report.models_in_use.values()))
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f'kept {work}')
        else:
            shutil.rmtree(work, ignore_errors=True)


# name -> (add_arguments, run, one-line help): `mbrl-ros check <name>` (mbrl_ros/commands/check.py)
CHECKS = {
    'chaos': (chaos_arguments, chaos, 'SIGKILL and restart each node while the arm reaches goals; modes, recovery, limits'),
    'load': (load_arguments, load, 'the stack under CPU hogs: missed periods, modes, limits, success, plan time'),
    'soak': (soak_arguments, soak, 'a goal every 3 s for 30 min: crashes, memory growth, success per window, limits'),
    'fuzz': (fuzz_arguments, fuzz, 'hypothesis messages on every subscribed topic: crashes, limits, responsiveness'),
    'bad-bundles': (bad_bundles_arguments, bad_bundles, 'corrupt and mismatched bundles set live: each refused, no model change'),
}
