"""`mbrl-ros bench plan-latency`: plan latency p50/p99 over horizon x samples on a bundle (no time
budget), and the planner's throughput against a pure batched-matmul run of the same layers.

Throughput is counted in model evaluations per second: rows x steps pushed through the ensemble
(every member evaluates each row with the `expectation` propagation) divided by the plan's wall
time. The reference ("roofline") is a graph of only the ensemble's MatMul nodes, with the same
weights taken from the bundle's ensemble.onnx, run by onnxruntime on one thread at the same batch
(the first iteration's population): what the hardware does with the layers alone, no activations,
normalisation, sampling or costs. roofline = planner rate / matmul rate.
"""
from __future__ import annotations

import json
import time


def add_arguments(p):
    p.add_argument('--model', default='arm7', help='bundle name or directory (default: the shipped arm7)')
    p.add_argument('--horizons', default='5,10,15,20', help='planning horizons of the grid')
    p.add_argument('--samples', default='100,200,400,800', help='samples per iteration of the grid')
    p.add_argument('--planner', default='icem', choices=('cem', 'icem'), help='optimiser')
    p.add_argument('--iterations', type=int, default=3, help='optimiser iterations per plan')
    p.add_argument('--plans', type=int, default=30, help='timed plans per cell (after 3 warm-up plans)')
    p.add_argument('--threads', type=int, default=1, help='onnxruntime intra-op threads')
    p.add_argument('--short', action='store_true', help='tiny grid (H 5,10 x N 50,100, 5 plans): a smoke run')
    p.add_argument('--json', action='store_true', help='print the results as JSON')


def matmul_graph(onnx_path):
    """(session, E, input width) of a graph holding only the ensemble's MatMul chain (same weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mbrl_ros.core.runtime.ensemble import make_session
    m = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    weights = [inits[n.input[1]] for n in m.graph.node if n.op_type == 'MatMul' and n.input[1] in inits
               and inits[n.input[1]].ndim == 3]
    if not weights:
        raise ValueError(f'{onnx_path}: no (E, in, out) MatMul weights found')
    E, d_in = weights[0].shape[:2]
    nodes, prev = [], 'x'
    for i, w in enumerate(weights):
        nodes.append(helper.make_node('MatMul', [prev, f'w{i}'], [f'h{i}']))
        prev = f'h{i}'
    graph = helper.make_graph(
        nodes, 'matmul_only',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [E, 'batch', d_in])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [E, 'batch', weights[-1].shape[-1]])],
        [numpy_helper.from_array(w.astype('float32'), f'w{i}') for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    import tempfile
    from pathlib import Path
    tmp = Path(tempfile.mkdtemp()) / 'matmul_only.onnx'
    onnx.save(model, str(tmp))
    return make_session(tmp, 1), E, d_in, [tuple(w.shape) for w in weights]


def matmul_rate(session, E: int, d_in: int, batch: int, min_s: float = 0.2) -> float:
    """Rows per second (each row through all E members' layers) of the matmul-only graph."""
    import numpy as np
    x = np.random.default_rng(0).standard_normal((E, batch, d_in)).astype(np.float32)
    session.run(None, {'x': x})
    n, t0 = 0, time.perf_counter()
    while True:
        session.run(None, {'x': x})
        n += 1
        el = time.perf_counter() - t0
        if el >= min_s and n >= 5:
            return n * batch / el


def run(args) -> int:
    from mbrl_ros.core.bundle import BundleError, load_bundle
    from mbrl_ros.core.planning import EnsembleDynamics, PlannerConfig
    from mbrl_ros.core.planning.bench import MeteredDynamics, benchmark_planner
    from mbrl_ros.core.robot import RobotModel
    from mbrl_ros.resources import find_resource

    try:
        hs = [5, 10] if args.short else [int(v) for v in args.horizons.split(',') if v]
        ns = [50, 100] if args.short else [int(v) for v in args.samples.split(',') if v]
        plans = 5 if args.short else args.plans
        bundle = load_bundle(find_resource('models', args.model), intra_op_threads=args.threads)
        robot = RobotModel.load(bundle.robot_name)
        mm, E, d_in, shapes = matmul_graph(bundle.path / 'ensemble.onnx')
    except (ValueError, FileNotFoundError, BundleError) as e:
        print(f'mbrl-ros bench plan-latency: {e}')
        return 2
    rows, rates = [], {}
    for h in hs:
        for n in ns:
            cfg = PlannerConfig(planner=args.planner, horizon=h, num_samples=n, num_iterations=args.iterations,
                                num_elites=max(2, n // 10), time_budget_ms=0.0).validated()
            dyn = MeteredDynamics(EnsembleDynamics(bundle.ensemble))
            r = benchmark_planner(robot, cfg, dynamics=dyn, plans=plans, warmup=3)
            evals_per_plan = dyn.evaluations / (plans + 3)
            if n not in rates:
                rates[n] = matmul_rate(mm, E, d_in, n)
            # Mean plan time for throughput (p50 for latency): total work / total time.
            planner_rate = evals_per_plan / (r['plan_p50_ms'] / 1e3)
            rows.append({'horizon': h, 'samples': n, 'iterations': r['iterations_mean'],
                         'plan_p50_ms': r['plan_p50_ms'], 'plan_p99_ms': r['plan_p99_ms'],
                         'model_p50_ms': r['dynamics_p50_ms'], 'evals_per_plan': evals_per_plan,
                         'planner_evals_per_s': planner_rate, 'matmul_evals_per_s': rates[n],
                         'roofline_fraction': planner_rate / rates[n]})
    if args.json:
        print(json.dumps({'bundle': bundle.identity, 'layers': shapes, 'rows': rows}, indent=1))
        return 0
    print(f'bundle {bundle.identity} ({bundle.path}), {args.planner} x{args.iterations} iterations, no budget, '
          f'{plans} plans per cell, onnxruntime {args.threads} thread(s)')
    print(f'matmul reference: layers {shapes} (E, in, out), same weights, batch = samples')
    print(f'{"H":>4}{"N":>6}{"p50 ms":>9}{"p99 ms":>9}{"model p50":>11}{"evals/plan":>12}'
          f'{"planner ev/s":>14}{"matmul ev/s":>13}{"roofline":>10}')
    for r in rows:
        print(f'{r["horizon"]:>4}{r["samples"]:>6}{r["plan_p50_ms"]:>9.2f}{r["plan_p99_ms"]:>9.2f}'
              f'{r["model_p50_ms"]:>11.2f}{r["evals_per_plan"]:>12.0f}{r["planner_evals_per_s"]:>14.3g}'
              f'{r["matmul_evals_per_s"]:>13.3g}{r["roofline_fraction"]:>10.1%}')
    return 0
