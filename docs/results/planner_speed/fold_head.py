"""The mean-only graph's output head, plain cut against folded (runtime.ensemble._fold_mean_head):
the largest difference of their outputs, the median time per call (interleaved), and with --nodes
onnxruntime's own per-node times (its profiler) for both.

    .venv/bin/python docs/results/planner_speed/fold_head.py models/arm7 --batch 200 --nodes
"""
import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort

from mbrl_ros.core.runtime.ensemble import make_session, mean_only_graph


def per_node_us(graph: bytes, feed: dict, runs: int = 300) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), 'ort')
    s = ort.InferenceSession(graph, opts, providers=['CPUExecutionProvider'])
    for _ in range(runs):
        s.run(['mean'], feed)
    with open(s.end_profiling()) as f:
        events = json.load(f)
    times = collections.defaultdict(list)
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            times[f"{e['name'][:-12]} ({e['args'].get('op_name')})"].append(e['dur'])
    return {k: float(np.median(v[runs // 5:])) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('bundle')
    ap.add_argument('--batch', type=int, default=200)
    ap.add_argument('--calls', type=int, default=300)
    ap.add_argument('--nodes', action='store_true')
    args = ap.parse_args()
    for name in ('ensemble.onnx', 'ensemble_partitioned.onnx'):
        path = os.path.join(args.bundle, name)
        if not os.path.exists(path):
            continue
        graphs = {'plain cut': mean_only_graph(path, fold=False), 'folded': mean_only_graph(path)}
        sessions = {k: make_session(g) for k, g in graphs.items()}
        shape = sessions['folded'].get_inputs()[0].shape
        e = sessions['folded'].get_outputs()[0].shape[0]
        lead = (args.batch,) if len(shape) == 2 else (e, args.batch // e)
        rng = np.random.default_rng(0)
        feed = {i.name: rng.standard_normal((*lead, i.shape[-1]), dtype=np.float32)
                for i in sessions['folded'].get_inputs()}
        out = {k: s.run(['mean'], feed)[0] for k, s in sessions.items()}
        times = {k: [] for k in sessions}
        for _ in range(args.calls):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(['mean'], feed)
                times[k].append(time.perf_counter() - t0)
        print(f'{name}, rows {lead}: max |folded - plain| {np.abs(out["folded"] - out["plain cut"]).max():.2e} '
              f'(outputs up to {np.abs(out["plain cut"]).max():.3g}); per call '
              + ', '.join(f'{k} {1e3 * np.median(v):.3f} ms' for k, v in times.items()))
        if args.nodes:
            for k, g in graphs.items():
                nodes = per_node_us(g, feed)
                print(f'  {k}: {sum(nodes.values()):.0f} us in nodes; ' + ', '.join(
                    f'{n} {t:.0f}' for n, t in sorted(nodes.items(), key=lambda kv: -kv[1])[:8]))


if __name__ == '__main__':
    main()
