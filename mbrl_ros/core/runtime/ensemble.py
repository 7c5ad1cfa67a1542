"""onnxruntime inference of the PETS ensemble: the low-level wrapper under `core.world_model.WorldModel`.

No torch here. Shapes: E members, B rows, S state dims, A action dims; the model predicts the
next-state delta, so next_state = state + delta. Propagation (expectation, TS1, TS-inf) and the
disagreement are `core.world_model`'s; this module runs the graphs: every member on every row
(`predict`), or member e on row block e only (`predict_partitioned`, for trajectory sampling).

Mean-only graphs: the planner (expectation, and trajectory sampling without aleatoric noise) and the
disagreement need only the members' means, but onnxruntime runs every node of a graph whatever
outputs are asked for, and the log-variance head (two Softplus soft bounds) is ~18 % of a batch-100
call on arm7. So a copy of each graph cut to its `mean` output (the nodes `mean` depends on, the same
weights) gets its own session: 0.64 -> 0.48 ms per call at batch 100 (docs/results). Its output head
is then folded (`_fold_mean_head`: no log-variance columns, the gain product and de-normalisation in
one multiply and one sum): 0.94 -> 0.80 ms at batch 200 on arm7.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
# At import, not inside mean_only_graph: importing onnx (its ml_dtypes extension) holds the GIL for
# 1.3 s on a 2-core VM, and a node's bundle loader thread that imported it lazily froze the node's
# executor and control loop that long (its hang watchdog ended it). Nodes import this module at start.
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def make_session(model, intra_op_threads: int = 1) -> ort.InferenceSession:
    """A one-process CPU session for an ONNX file path or serialized model bytes."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(intra_op_threads)   # 0 = onnxruntime's choice (all cores)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                providers=['CPUExecutionProvider'])


def mean_only_graph(path, fold: bool = True) -> bytes:
    """The ONNX graph at `path` cut to its `mean` output: only the nodes and weights `mean` needs.

    `fold`: where the graph has our exporter's output head (mbrl_ros.core.dynamics.export), its tail is
    also folded into fewer, cheaper nodes with the same result (`_fold_mean_head`)."""
    model = onnx.load(str(path))
    _cut_to_mean(model)
    if fold:
        _fold_mean_head(model)
        _cut_to_mean(model)
    return model.SerializeToString()


def _cut_to_mean(model) -> None:
    g = model.graph
    need, keep = {'mean'}, []
    for node in reversed(list(g.node)):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(i for i in node.input if i)
    keep.reverse()
    outputs = [o for o in g.output if o.name == 'mean']
    inits = [i for i in g.initializer if i.name in need]
    inputs = [i for i in g.input if i.name in need]
    for field, items in ((g.node, keep), (g.output, outputs), (g.initializer, inits), (g.input, inputs)):
        del field[:]
        field.extend(items)


def _fold_mean_head(model) -> bool:
    """Rewrite the mean tail of our exporter's graph in place; False (unchanged) where it is not that graph.

    The exported tail: out = h @ W + b, split into mean_f (S), logvar (S) and, for the control-affine
    head, a gain G (S x Z) applied to z (Z inputs): mean = (mean_f + G z) * out_std + out_mean. On arm7
    at batch 200, the gain product (a (E,B,S,Z) tensor broadcast against z in its middle axis), the split
    and the de-normalisation were ~20 % of a call. Folded: z' = [z, 1] tiled S times, and W', b' hold,
    per output s, the gain columns and then the mean_f column, scaled by out_std[s] (out_mean[s] goes in
    the bias of the mean_f column), so mean = ReduceSum(reshape((h @ W' + b') * z', S x (Z+1))): one
    matmul without the log-variance columns, one plain broadcast multiply, one reduction. Without the
    gain: mean = h @ W'[:, :S] + b'. The same numbers up to float32 rounding (checked at load)."""
    g = model.graph
    nodes = {n.name: n for n in g.node}
    init = {i.name: i for i in g.initializer}
    if not {'mm_out', 'out', 'split', 'mean_scaled', 'mean'} <= set(nodes) \
            or not {'w_out', 'b_out', 'split', 'out_std', 'out_mean'} <= set(init):
        return False
    w, b = numpy_helper.to_array(init['w_out']), numpy_helper.to_array(init['b_out'])
    std, mu = numpy_helper.to_array(init['out_std']), numpy_helper.to_array(init['out_mean'])
    sizes = [int(v) for v in numpy_helper.to_array(init['split'])]
    S = len(std)
    if w.ndim != 3 or b.ndim != 3 or sizes[:2] != [S, S] or w.shape[-1] != sum(sizes):
        return False
    h = nodes['mm_out'].input[0]
    affine = len(sizes) == 3
    if affine:
        if 'z_row' not in nodes or sizes[2] % S:
            return False
        Z = sizes[2] // S
        # columns [s][j]: the gain's row s (j < Z), then mean_f[s] (j = Z)
        wg = w[..., 2 * S:].reshape(*w.shape[:-1], S, Z)
        bg = b[..., 2 * S:].reshape(*b.shape[:-1], S, Z)
        w2 = np.concatenate([wg, w[..., :S, None]], -1) * std[:, None]
        b2 = np.concatenate([bg, b[..., :S, None]], -1) * std[:, None]
        b2[..., Z] += mu
        w2, b2 = w2.reshape(*w.shape[:-1], -1), b2.reshape(*b.shape[:-1], -1)
    else:
        w2, b2 = w[..., :S] * std, b[..., :S] * std + mu
    state_rank = next(len(i.type.tensor_type.shape.dim) for i in g.input if i.name == 'state')
    new_inits = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n)
                 for n, a in (('w_mean', w2), ('b_mean', b2))]
    if not affine:
        tail = [helper.make_node('MatMul', [h, 'w_mean'], ['mm_mean'], name='mm_mean'),
                helper.make_node('Add', ['mm_mean', 'b_mean'], ['mean'], name='mean')]
    else:
        z = nodes['z_row'].input[0]
        lead = [0] * (state_rank - 1)
        new_inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (
            ('z_one_pads', lead + [0] + lead + [1]), ('z_one_tile', [1] * (state_rank - 1) + [S]),
            ('mean_terms_shape', [0, 0, S, Z + 1]), ('mean_terms_axis', [-1]))]
        new_inits.append(numpy_helper.from_array(np.array(1.0, np.float32), 'one'))
        tail = [helper.make_node('Pad', [z, 'z_one_pads', 'one'], ['z_one'], name='z_one', mode='constant'),
                helper.make_node('Tile', ['z_one', 'z_one_tile'], ['z_one_tiled'], name='z_one_tiled'),
                helper.make_node('MatMul', [h, 'w_mean'], ['mm_mean'], name='mm_mean'),
                helper.make_node('Add', ['mm_mean', 'b_mean'], ['gain_mean'], name='gain_mean'),
                helper.make_node('Mul', ['gain_mean', 'z_one_tiled'], ['mean_terms_flat'], name='mean_terms_flat'),
                helper.make_node('Reshape', ['mean_terms_flat', 'mean_terms_shape'], ['mean_terms'],
                                 name='mean_terms'),
                helper.make_node('ReduceSum', ['mean_terms', 'mean_terms_axis'], ['mean'], name='mean_sum',
                                 keepdims=0)]
    head = [n for n in g.node if 'mean' not in n.output]
    del g.node[:]
    g.node.extend(head + tail)   # the cut that follows drops the old tail
    g.initializer.extend(new_inits)
    return True


def means_agree(got, want, delta_std=None) -> bool:
    """Two graphs' member means agree up to float32 rounding: within 1e-3 of each output dim's delta std
    (a typical one-step change; the disagreement's unit) plus 1e-6. A folded head sums in another order:
    measured up to 1.8e-5 of the std on shipped and trained arm7 bundles. A different or changed model
    is off by the order of the std itself."""
    if got.shape != want.shape:
        return False
    scale = 1.0 if delta_std is None else np.asarray(delta_std, np.float64)
    return bool(np.all(np.abs(np.asarray(got, np.float64) - want) <= 1e-3 * scale + 1e-6))


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class EnsembleRuntime:
    """`predict(states (B,S), actions (B,A)) -> (mean, logvar)`, each (E,B,S), float32."""

    def __init__(self, onnx_path, intra_op_threads: int = 1, partitioned_path=None, mean_only: bool = True):
        """`mean_only`: also build the mean-only sessions now (else `prepare_mean_only()` later; until
        then the mean comes from the full graphs)."""
        self.path = Path(onnx_path)
        self.partitioned_path = None if partitioned_path is None else Path(partitioned_path)
        self._threads = int(intra_op_threads)
        self.session = make_session(self.path, intra_op_threads)
        ins = {i.name: i.shape for i in self.session.get_inputs()}
        outs = {o.name: o.shape for o in self.session.get_outputs()}
        if set(ins) != {'state', 'action'} or not {'mean', 'logvar'} <= set(outs):
            raise ValueError(f'{self.path}: expected inputs state, action and outputs mean, logvar; '
                             f'got inputs {sorted(ins)} outputs {sorted(outs)}')
        self.input_shapes, self.output_shapes = ins, outs
        self.state_dim = _static(ins['state'][-1])
        self.action_dim = _static(ins['action'][-1])
        self.ensemble_size = _static(outs['mean'][0])
        props = self.session.get_modelmeta().custom_metadata_map
        std = json.loads(props['mbrl_ros.delta_std']) if 'mbrl_ros.delta_std' in props else None
        self.delta_std = _f32(std) if std is not None else None
        self.partitioned = None
        if partitioned_path is not None:
            self.partitioned = make_session(partitioned_path, intra_op_threads)
        self.mean_session = self.partitioned_mean = None
        if mean_only:
            self.prepare_mean_only()

    def prepare_mean_only(self, pace=lambda: None) -> None:
        """Build the mean-only sessions (`pace()` is called before each: see load_bundle)."""
        pace()
        self.mean_session = self._mean_session(self.path, self.session, (16,))
        if self.partitioned is not None:
            pace()
            self.partitioned_mean = self._mean_session(self.partitioned_path, self.partitioned,
                                                       (self.ensemble_size, 4))

    def _mean_session(self, path, full: ort.InferenceSession, lead: tuple) -> ort.InferenceSession:
        """The folded mean-only graph, or the plain cut where folding changed the numbers beyond
        float32 rounding (`means_agree`, load_bundle's check too)."""
        folded = make_session(mean_only_graph(path), self._threads)
        rng = np.random.default_rng(0)
        feed = {'state': rng.standard_normal((*lead, self.state_dim), dtype=np.float32),
                'action': rng.standard_normal((*lead, self.action_dim), dtype=np.float32)}
        if means_agree(folded.run(['mean'], feed)[0], full.run(['mean'], feed)[0], self.delta_std):
            return folded
        return make_session(mean_only_graph(path, fold=False), self._threads)

    # --- raw inference -----------------------------------------------------------------------
    def predict(self, states, actions) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self.session.run(['mean', 'logvar'], {'state': _f32(states), 'action': _f32(actions)})
        return mean, logvar

    def predict_mean(self, states, actions) -> np.ndarray:
        """The members' means only, (E,B,S): the same numbers as predict()[0], without the log-variance head."""
        if self.mean_session is None:
            return self.predict(states, actions)[0]
        return self.mean_session.run(['mean'], {'state': _f32(states), 'action': _f32(actions)})[0]

    def predict_partitioned_mean(self, states, actions) -> np.ndarray:
        """predict_partitioned()[0] without the log-variance head."""
        if self.partitioned_mean is None:
            return self.predict_partitioned(states, actions)[0]
        return self.partitioned_mean.run(['mean'], {'state': _f32(states), 'action': _f32(actions)})[0]

    def predict_partitioned(self, states, actions) -> tuple[np.ndarray, np.ndarray]:
        """states (E,b,S), actions (E,b,A): member e evaluates row block e only -> (E,b,S) each."""
        if self.partitioned is None:
            # Fallback: evaluate every member on every row, keep the diagonal blocks.
            E, b = states.shape[:2]
            mean, logvar = self.predict(np.reshape(states, (E * b, -1)), np.reshape(actions, (E * b, -1)))
            e = np.arange(E)
            return (mean.reshape(E, E, b, -1)[e, e], logvar.reshape(E, E, b, -1)[e, e])
        return tuple(self.partitioned.run(['mean', 'logvar'], {'state': _f32(states), 'action': _f32(actions)}))


def _static(dim) -> int:
    if not isinstance(dim, int):
        raise ValueError(f'expected a fixed dimension in the ONNX graph, got {dim!r}')
    return dim

