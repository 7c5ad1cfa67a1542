"""`mbrl-ros bench <name>`: benchmark programs that print numbers (timed unit tests don't).

Add a benchmark with one line in BENCHES: name -> (module, one-line help); the module provides
`add_arguments(parser)` and `run(args) -> int` and keeps heavy imports inside `run`.
"""
from __future__ import annotations

import argparse
import importlib

from mbrl_ros.commands.options import HelpFormatter

BENCHES = {
    'sim': ('mbrl_ros.bench.sim', 'sim_robot + state_estimator: real-time factor, '
                                  '/joint_states rate and jitter, /mbrl/state latency'),
    'model': ('mbrl_ros.bench.model', 'world-model ensemble latency/throughput: onnxruntime vs torch eager'),
    'planner': ('mbrl_ros.bench.planner', 'CEM/iCEM time per plan and the planner overhead (trivial or ONNX model)'),
    'policy': ('mbrl_ros.bench.policy', 'distilled policy per-call latency (onnxruntime), optionally vs the MPC'),
    'plan-latency': ('mbrl_ros.bench.plan_latency', 'plan p50/p99 over horizon x samples on a bundle; throughput vs a matmul-only roofline'),
    'closed-loop': ('mbrl_ros.bench.closed_loop', 'reaching on chained goals: mpc, osc_pd, policy side by side on the same goals (payload, friction)'),
    'osc-tune': ('mbrl_ros.bench.osc_tune', 'coarse gain sweep of the operational-space PD baseline on chained goals (config/osc_pd.yaml)'),
    'ros-closed-loop': ('mbrl_ros.bench.ros_closed_loop', 'reaching success through the whole ROS stack (launch file, headless) on the closed-loop goals'),
    'mppi-compare': ('mbrl_ros.bench.mppi_compare', 'our CEM/iCEM vs pytorch-mppi on the same ensemble: per-plan time and success'),
    'results': ('mbrl_ros.bench.results', 'rerun the benches behind the README and write docs/results.md, stamped with '
                                          'date, commit and machine'),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest='bench', metavar='BENCH')
    sub.required = True
    for name, (module, help_) in BENCHES.items():
        bp = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # e.g. a training-only dependency missing on a robot
            bp.set_defaults(_bench_error=f"bench '{name}' unavailable: {exc}")
            continue
        mod.add_arguments(bp)
        bp.set_defaults(_bench_run=mod.run)


def run(args) -> int:
    error = getattr(args, '_bench_error', None)
    if error:
        print(error)
        return 2
    return int(args._bench_run(args) or 0)
