"""`mbrl-ros bench policy`: per-call latency of the distilled policy (onnxruntime, one state, as the
`policy` node calls it each period), and — with --compare-mpc — the MPC's time per plan on the same
bundle and states, so the speed-up is measured on one machine under one load.

--bundle DIR|NAME (default: the shipped bundle of --robot) must hold policy.onnx; --untrained uses
a freshly initialised network of the given sizes instead (needs torch; latency does not depend on
the weights).
"""
from __future__ import annotations

import json
import time

import numpy as np


def add_arguments(p):
    p.add_argument('--robot', default='arm7', help='arm7, arm3 or an MJCF path')
    p.add_argument('--bundle', default='', help='bundle dir or name under models/ (default: the robot\'s)')
    p.add_argument('--untrained', action='store_true', help='time an untrained network (needs torch)')
    p.add_argument('--hidden', default='256,256', help='hidden sizes with --untrained')
    p.add_argument('--calls', type=int, default=5000, help='timed single-state policy calls')
    p.add_argument('--compare-mpc', action='store_true', help='also time MpcController plans on the bundle')
    p.add_argument('--plans', type=int, default=100, help='MPC plans with --compare-mpc')
    p.add_argument('--budget-ms', type=float, default=14.5, help="MPC time budget (ms; the node's default)")
    p.add_argument('--json', action='store_true', help='print the results as JSON')


def _pct(t: np.ndarray) -> dict:
    return {'p50': float(np.percentile(t, 50)), 'p90': float(np.percentile(t, 90)),
            'p99': float(np.percentile(t, 99)), 'max': float(t.max()), 'mean': float(t.mean())}


def _load():
    import os
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _untrained(robot, hidden, path):
    from mbrl_ros.core.policy.network import PolicyConfig, PolicyNet, export_policy, fk_chain
    net = PolicyNet(PolicyConfig(robot.dof, [float(v) for v in robot.effort_max], hidden, fk=fk_chain(robot)))
    export_policy(net.eval(), path)


def run(args) -> int:
    import tempfile
    from pathlib import Path

    from mbrl_ros.core.bundle import BundleError, load_bundle
    from mbrl_ros.core.policy import PolicyRuntime
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.ros.model_source import resolve_model_dir

    robot = RobotModel.load(args.robot)
    bundle = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.untrained:
            path = Path(tmp) / 'policy.onnx'
            _untrained(robot, [int(h) for h in args.hidden.split(',')], path)
            source = f'untrained {args.hidden}'
        else:
            try:
                bundle = load_bundle(resolve_model_dir(args.bundle, robot.name), robot)
            except BundleError as e:
                print(f'bench policy: {e}')
                return 2
            if bundle.policy_path is None:
                print(f'bench policy: {bundle.path} has no policy.onnx (mbrl-ros distill, or --untrained)')
                return 2
            path, source = bundle.policy_path, str(bundle.policy_path)
        rt = PolicyRuntime(path)
        rng = np.random.default_rng(0)
        q = robot.sample_configurations(rng, args.calls)
        qd = rng.uniform(-0.5, 0.5, q.shape) * robot.qd_max
        goals = robot.fk(robot.sample_configurations(rng, args.calls))
        for i in range(min(100, args.calls)):
            rt.act(q[i], qd[i], goals[i])
        t, c = np.empty(args.calls), np.empty(args.calls)
        for i in range(args.calls):
            c0, t0 = time.thread_time(), time.perf_counter()
            rt.act(q[i], qd[i], goals[i])
            t[i], c[i] = time.perf_counter() - t0, time.thread_time() - c0
        # Wall time includes preemption by other processes (a shared, loaded machine); the thread's
        # CPU time is the compute itself. Both are reported.
        out = {'robot': robot.name, 'policy': source, 'calls': args.calls, 'policy_ms': _pct(1e3 * t),
               'policy_cpu_ms': _pct(1e3 * c), 'load_average_1min': _load()}
        if args.compare_mpc and bundle is not None:
            from mbrl_ros.core.planning import EnsembleDynamics, MpcController, PlannerConfig
            pc = PlannerConfig(time_budget_ms=args.budget_ms)
            mpc = MpcController(robot, EnsembleDynamics(bundle.ensemble), pc, dt=bundle.dt)
            tm = np.empty(args.plans)
            for i in range(args.plans):
                mpc.set_goal(goals[i])
                t0 = time.perf_counter()
                mpc.compute(q[i], qd[i])
                tm[i] = time.perf_counter() - t0
            out['mpc_ms'] = _pct(1e3 * tm)
            out['mpc_config'] = (f'node defaults ({pc.planner}, H={pc.horizon}, N={pc.num_samples}, '
                                 f'{pc.num_iterations} iterations, budget {args.budget_ms:g} ms)')
            out['speedup_p50'] = out['mpc_ms']['p50'] / out['policy_ms']['p50']
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    p, c = out['policy_ms'], out['policy_cpu_ms']
    print(f"policy {source} ({robot.name}), {args.calls} single-state calls, load average {out['load_average_1min']}:")
    print(f"  wall: p50 {p['p50'] * 1e3:.1f} us, p90 {p['p90'] * 1e3:.1f} us, p99 {p['p99'] * 1e3:.1f} us, "
          f"max {p['max'] * 1e3:.1f} us (target p99 <= 200 us: {'ok' if p['p99'] <= 0.2 else 'MISSED'})")
    print(f"  thread CPU: p50 {c['p50'] * 1e3:.1f} us, p99 {c['p99'] * 1e3:.1f} us, max {c['max'] * 1e3:.1f} us")
    if 'mpc_ms' in out:
        m = out['mpc_ms']
        print(f"mpc ({out['mpc_config']}), {args.plans} plans: p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms; "
              f"policy is {out['speedup_p50']:.0f}x faster (p50)")
    return 0
