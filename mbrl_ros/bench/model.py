"""`mbrl-ros bench model`: ensemble inference latency and throughput, onnxruntime vs torch eager.

Rows: `ort` (every member on every row: what predict() and the disagreement need), `ort-part`
(the partitioned graph: each member only its B/E rows, as TS1/TS-inf use it), `torch` (the same
weights in torch eager, no_grad). Latency is per call; throughput is rows (state, action pairs) per
second, each row evaluated by every member (ort, torch) or by one member (ort-part; B rows are
spread over the members, ceil(B/E) each).
"""
from __future__ import annotations

import json
import time

DEFAULT_BATCHES = '1,4,16,64,256,1024,4096'


def add_arguments(p):
    p.add_argument('bundle', nargs='?', default='arm7', help='bundle directory or name under models/')
    p.add_argument('--batches', default=DEFAULT_BATCHES, help='batch sizes')
    p.add_argument('--threads', type=int, default=1, help='intra-op threads for onnxruntime and torch')
    p.add_argument('--min-time', type=float, default=0.3, help='seconds of timed calls per cell')
    p.add_argument('--no-torch', action='store_true', help='onnxruntime only')
    p.add_argument('--json', action='store_true', help='print the results as JSON')


def _time_calls(fn, min_time: float, max_calls: int = 20000):
    import numpy as np
    for _ in range(3):
        fn()                              # warm-up (allocations, thread pools)
    times, t_end = [], time.perf_counter() + min_time
    while (time.perf_counter() < t_end or len(times) < 20) and len(times) < max_calls:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    t = np.asarray(times) * 1e3
    return float(np.median(t)), float(np.percentile(t, 99)), len(t)


def run(args) -> int:
    import numpy as np

    from mbrl_ros.core.bundle import BundleError, load_bundle
    from mbrl_ros.resources import find_resource
    try:
        batches = [int(b) for b in args.batches.split(',') if b.strip()]
        bundle = load_bundle(find_resource('models', args.bundle), intra_op_threads=args.threads)
    except (ValueError, FileNotFoundError, BundleError) as e:
        print(f'mbrl-ros bench model: {e}')
        return 2
    rt = bundle.ensemble
    E, S, A = rt.ensemble_size, rt.state_dim, rt.action_dim
    model = None
    if not args.no_torch:
        import torch

        from mbrl_ros.core.dynamics.export import model_from_onnx
        torch.set_num_threads(args.threads)
        model = model_from_onnx(bundle.path / 'ensemble.onnx')

    rng = np.random.default_rng(0)
    rows = []
    arch = bundle.meta['ensemble'].get('architecture', {})
    print(f'bundle {bundle.identity}\nE={E} S={S} A={A} hidden={arch.get("hidden_sizes")} '
          f'{arch.get("activation")}, threads={args.threads}')
    for B in batches:
        s = rng.standard_normal((B, S)).astype(np.float32)
        a = rng.standard_normal((B, A)).astype(np.float32)
        cells = [('ort', lambda: rt.predict(s, a))]
        # Partitioned: B particles spread over the members, ceil(B/E) rows each (padded).
        b = -(-B // E)
        sp = np.resize(s, (E * b, S)).reshape(E, b, S)
        ap = np.resize(a, (E * b, A)).reshape(E, b, A)
        cells.append(('ort-part', lambda: rt.predict_partitioned(sp, ap)))
        if model is not None:
            ts, ta = torch.from_numpy(s), torch.from_numpy(a)

            def torch_call():
                with torch.no_grad():
                    return model(ts, ta)
            cells.append(('torch', torch_call))
        for name, fn in cells:
            med, p99, n = _time_calls(fn, args.min_time)
            rows.append({'backend': name, 'batch': B, 'median_ms': med, 'p99_ms': p99,
                         'rows_per_s': B / (med * 1e-3), 'calls': n})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f'{"backend":<9}{"batch":>7}{"median ms":>12}{"p99 ms":>10}{"rows/s":>12}')
    for r in rows:
        print(f'{r["backend"]:<9}{r["batch"]:>7}{r["median_ms"]:>12.3f}{r["p99_ms"]:>10.3f}{r["rows_per_s"]:>12.0f}')
    return 0
