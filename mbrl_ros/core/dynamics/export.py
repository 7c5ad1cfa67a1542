"""ONNX export of the ensemble, with a parity check against torch.

The graph is written directly with `onnx.helper` rather than traced with `torch.onnx.export`: the
network is a handful of MatMul/Add/Sigmoid ops, the resulting graph is exactly what we ask for
(normalisation inside, a dynamic batch axis, broadcasting batched matmuls for the members), and it
does not depend on the torch exporter of the day (the dynamo exporter needs onnxscript).

Two graphs come from the same weights:
- `ensemble.onnx`: state (B,S), action (B,A) -> mean, logvar (E,B,S): every member sees every row.
- `ensemble_partitioned.onnx`: state (E,b,S), action (E,b,A) -> (E,b,S): member e sees only its own
  rows. Trajectory sampling (TS1/TS-inf) needs one member per particle, so this is E times less work.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from mbrl_ros.core.bundle import ENSEMBLE_FILE, PARTITIONED_FILE, sha256_file

from .ensemble import ProbabilisticEnsemble

OPSET = 17


class ExportError(RuntimeError):
    pass


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def build_graph(model: ProbabilisticEnsemble, partitioned: bool = False) -> onnx.ModelProto:
    cfg = model.config
    E, S, A = cfg.ensemble_size, cfg.state_dim, cfg.action_dim
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    lead = [E, 'batch'] if partitioned else ['batch']
    inputs = [helper.make_tensor_value_info('state', TensorProto.FLOAT, lead + [S]),
              helper.make_tensor_value_info('action', TensorProto.FLOAT, lead + [A])]
    outputs = [helper.make_tensor_value_info('mean', TensorProto.FLOAT, [E, 'batch', S]),
               helper.make_tensor_value_info('logvar', TensorProto.FLOAT, [E, 'batch', S])]

    feats = ['state', 'action']
    k = cfg.angle_features
    if k:
        q = f'q_{k}'
        nodes.append(helper.make_node('Slice', ['state', const_i64(inits, 'q_start', [0]),
                                                const_i64(inits, 'q_end', [k]), const_i64(inits, 'q_axis', [-1])],
                                      [q], name='slice_q'))
        feats += [node('Sin', [q], 'sin_q'), node('Cos', [q], 'cos_q')]
    x = node('Concat', feats, 'x', axis=-1)
    x = node('Sub', [x, const('in_mean', _np(model.in_mean))], 'x_centered')
    # Masked inputs (EnsembleConfig.input_mask) get a zero scale: same graph, the input is ignored.
    h = x_norm = node('Mul', [x, const('in_inv_std', _np(model.in_mask) / _np(model.in_std))], 'x_norm')
    for i, layer in enumerate(model.hidden):
        # (B,in) @ (E,in,out) broadcasts to (E,B,out); (E,b,in) @ (E,in,out) is a batched matmul.
        h = node('MatMul', [h, const(f'w{i}', _np(layer.weight))], f'mm{i}')
        h = node('Add', [h, const(f'b{i}', _np(layer.bias))], f'pre{i}')
        if cfg.activation == 'silu':
            sg = node('Sigmoid', [h], f'sig{i}')
            h = node('Mul', [h, sg], f'h{i}')
        elif cfg.activation == 'relu':
            h = node('Relu', [h], f'h{i}')
        else:
            h = node('Tanh', [h], f'h{i}')
    o = node('MatMul', [h, const('w_out', _np(model.out.weight))], 'mm_out')
    o = node('Add', [o, const('b_out', _np(model.out.bias))], 'out')
    if cfg.control_affine:
        Z = cfg.affine_dim
        nodes.append(helper.make_node('Split', [o, const_i64(inits, 'split', [S, S, S * Z])],
                                      ['mean_f', 'logvar_raw', 'gain_flat'], axis=-1, name='split'))
        gain = node('Reshape', ['gain_flat', const_i64(inits, 'gain_shape', [0, 0, S, Z])], 'gain')
        parts = []
        for i, (lo, hi) in enumerate(cfg.affine_slices()):
            nodes.append(helper.make_node('Slice', [x_norm, const_i64(inits, f'z{i}_start', [lo]),
                                                    const_i64(inits, f'z{i}_end', [hi]),
                                                    const_i64(inits, f'z{i}_axis', [-1])],
                                          [f'z{i}'], name=f'slice_z{i}'))
            parts.append(f'z{i}')
        pi, pj = cfg.velocity_pairs()
        if len(pi):   # rigid_body: the products qd_i qd_j of the normalised joint velocities
            nodes.append(helper.make_node('Slice', [x_norm, const_i64(inits, 'qd_start', [S // 2]),
                                                    const_i64(inits, 'qd_end', [S]),
                                                    const_i64(inits, 'qd_axis', [-1])], ['qd_n'], name='slice_qd'))
            qi = node('Gather', ['qd_n', const_i64(inits, 'pair_i', pi)], 'qd_i', axis=-1)
            qj = node('Gather', ['qd_n', const_i64(inits, 'pair_j', pj)], 'qd_j', axis=-1)
            parts.append(node('Mul', [qi, qj], 'qd_pairs'))
        z = parts[0] if len(parts) == 1 else node('Concat', parts, 'z', axis=-1)
        z_row = node('Unsqueeze', [z, const_i64(inits, 'row_axis', [-2])], 'z_row')   # (..., 1, Z)
        ga = node('Mul', [gain, z_row], 'gain_z')                 # (E,B,S,Z) * (B,1,Z)
        ga = node('ReduceSum', [ga, const_i64(inits, 'last_axis', [-1])], 'gain_z_sum', keepdims=0)
        node('Add', ['mean_f', ga], 'mean_n')
    else:
        nodes.append(helper.make_node('Split', [o, const_i64(inits, 'split', [S, S])],
                                      ['mean_n', 'logvar_raw'], axis=-1, name='split'))
    # PETS soft bounds: max - softplus(max - lv), then min + softplus(lv - min).
    mx, mn = const('max_logvar', _np(model.max_logvar)), const('min_logvar', _np(model.min_logvar))
    t = node('Sub', [mx, 'logvar_raw'], 'lv_a')
    t = node('Softplus', [t], 'lv_b')
    lv = node('Sub', [mx, t], 'lv_c')
    t = node('Sub', [lv, mn], 'lv_d')
    t = node('Softplus', [t], 'lv_e')
    lv = node('Add', [mn, t], 'logvar_bounded')
    lv = node('Add', [lv, const('logvar_offset', _np(model.logvar_offset))], 'logvar_n')
    # Denormalise: delta = mean_n * std + mean; logvar += 2 log std.
    m = node('Mul', ['mean_n', const('out_std', _np(model.out_std))], 'mean_scaled')
    node('Add', [m, const('out_mean', _np(model.out_mean))], 'mean')
    node('Add', [lv, const('two_log_out_std', 2.0 * np.log(_np(model.out_std)))], 'logvar')

    graph = helper.make_graph(nodes, 'pets_ensemble_partitioned' if partitioned else 'pets_ensemble',
                              inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='mbrl_ros')
    proto.ir_version = 8   # readable by every onnxruntime >= 1.14
    # The runtime needs the delta scale for disagreement in normalised units (see runtime/ensemble.py).
    helper.set_model_props(proto, {
        'mbrl_ros.kind': 'ensemble_partitioned' if partitioned else 'ensemble',
        'mbrl_ros.ensemble_size': str(E),
        'mbrl_ros.delta_std': json.dumps([float(v) for v in _np(model.out_std)]),
        'mbrl_ros.architecture': json.dumps(cfg.to_dict()),
    })
    onnx.checker.check_model(proto, full_check=True)
    return proto


def const_i64(inits, name, values):
    inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


@torch.no_grad()
def verify_parity(model: ProbabilisticEnsemble, onnx_path, partitioned: bool = False,
                  n: int = 257, atol: float = 1e-5, seed: int = 0) -> float:
    """Run onnxruntime and torch on the same random inputs; raise ExportError past `atol`.

    Inputs are drawn around the training distribution (3 std) so the check covers where the model
    is used. The error is relative to each output's own scale: for a mean delta, the larger of its
    training std and its largest magnitude in the batch; for a log-variance (log units), the larger
    of 1 and its largest magnitude. So the same tolerance means the same on an arm whose deltas are
    1e-4 (where an absolute 1e-5 would pass anything) or 1e3 (where float32 rounding alone exceeds it).
    """
    import onnxruntime as ort
    cfg = model.config
    rng = np.random.default_rng(seed)
    lead = (cfg.ensemble_size, n) if partitioned else (n,)
    SA = cfg.state_dim + cfg.action_dim
    z = rng.standard_normal(lead + (SA,)).astype(np.float32) * 3.0
    x = z * _np(model.in_std)[:SA] + _np(model.in_mean)[:SA]
    s, a = np.ascontiguousarray(x[..., :cfg.state_dim]), np.ascontiguousarray(x[..., cfg.state_dim:])
    sess = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    got = sess.run(['mean', 'logvar'], {'state': s, 'action': a})
    model = model.eval()
    xt = model.normalise_inputs(torch.from_numpy(s), torch.from_numpy(a))
    mn, lv = model.forward_normalised(xt)
    want = [_np(mn * model.out_std + model.out_mean), _np(lv + 2.0 * torch.log(model.out_std))]
    out_std = _np(model.out_std).astype(np.float64)
    worst = 0.0
    for name, g, w in zip(['mean', 'logvar'], got, want):
        if g.shape != w.shape:
            raise ExportError(f'ONNX {name} has shape {g.shape}, torch {w.shape}')
        peak = np.max(np.abs(w.reshape(-1, w.shape[-1])), axis=0).astype(np.float64)  # per output
        scale = np.maximum(out_std if name == 'mean' else 1.0, peak)
        per_out = np.max(np.abs(g - w).reshape(-1, w.shape[-1]), axis=0) / scale
        err = float(np.max(per_out))
        worst = max(worst, err)
        if not err <= atol:
            k = int(np.argmax(per_out))
            raise ExportError(f'ONNX/torch parity failed for {name}: max error {err:.3g} > {atol:g} of the '
                              f'output\'s scale (output {k}, scale {scale[k]:.3g}) ({onnx_path})')
    return worst


def export_ensemble(model: ProbabilisticEnsemble, out_dir, partitioned: bool = True) -> dict:
    """Write ensemble.onnx (and ensemble_partitioned.onnx), verify parity; return {file: sha256}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, name in [(False, ENSEMBLE_FILE)] + ([(True, PARTITIONED_FILE)] if partitioned else []):
        path = out_dir / name
        onnx.save_model(build_graph(model, partitioned=part), str(path))
        err = verify_parity(model, path, partitioned=part)
        files[name] = {'sha256': sha256_file(path), 'parity_max_error': err}
    return files


def model_from_onnx(path) -> ProbabilisticEnsemble:
    """The torch module back from an exported ensemble.onnx (its weights are the graph's initialisers).

    Used to compare the same model in torch and onnxruntime (bench, tests).
    """
    from .ensemble import EnsembleConfig
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    cfg = EnsembleConfig(**json.loads(props['mbrl_ros.architecture']))
    w = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    model = ProbabilisticEnsemble(cfg)
    with torch.no_grad():
        for i, layer in enumerate(model.hidden):
            layer.weight.copy_(w[f'w{i}'])
            layer.bias.copy_(w[f'b{i}'])
        model.out.weight.copy_(w['w_out'])
        model.out.bias.copy_(w['b_out'])
        model.max_logvar.copy_(w['max_logvar'])
        model.min_logvar.copy_(w['min_logvar'])
        model.in_mean.copy_(w['in_mean'])
        inv = w['in_inv_std']
        model.in_std.copy_(torch.where(inv == 0, torch.ones_like(inv), 1.0 / inv))
        model.in_mask.copy_((inv != 0).float())
        model.out_mean.copy_(w['out_mean'])
        model.out_std.copy_(w['out_std'])
        if 'logvar_offset' in w:
            model.logvar_offset.copy_(w['logvar_offset'])
    return model.eval()
