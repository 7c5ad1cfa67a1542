"""The distilled policy network (torch) and its ONNX export.

Goal-conditioned MLP: state [q, qd] (S = 2·dof) and goal xyz (3) -> effort (dof, Nm on top of
gravity compensation). Inputs are [q, qd, goal, sin q, cos q, ee, goal - ee] standardised with the
training-set statistics, where ee = fk(q) is the robot's forward kinematics computed inside the
graph (the chain of `RobotModel`: per joint a rotation about z, or a slide, then a fixed transform).
Why FK: the expert's action depends mostly on the end-effector error; handing it to the network
makes the map far simpler than learning FK from a few hundred goals (it generalises across goals); the output is effort_max · tanh(z), so whatever the weights, the command is within
the robot's effort limits. Normalisation and squashing are inside the exported graph, so the
robot side feeds raw SI values and gets raw efforts.

As for the ensemble (core/dynamics/export.py) the graph is written with `onnx.helper`: a handful
of ops, a dynamic batch axis, no dependence on the torch exporter of the day.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

OPSET = 17
INPUTS = ('state', 'goal')
OUTPUT = 'action'


@dataclass
class PolicyConfig:
    dof: int
    effort_max: list
    hidden_sizes: list = field(default_factory=lambda: [256, 256])
    activation: str = 'silu'
    fk: Optional[dict] = None   # chain of the robot (fk_chain(robot)); None: no FK features
    jacobian: bool = True       # with fk: J^T (goal - ee) and J^T (ee velocity) as inputs too
    # 'direct': the MLP outputs the effort. 'passive' (needs fk and jacobian): the MLP outputs per-joint
    # gains G >= 0 (3·dof, softplus) of effort = G1·J^T(goal - ee) - G2·qd - G3·J^T(ee velocity): a
    # gain-scheduled task-space spring and damper, zero at the goal at rest whatever the weights.
    output: str = 'direct'
    # passive only: [q_min, q_max]; adds a joint-limit spring G4 >= 0 pushing out of a LIMIT_MARGIN band
    # at each limit (zero outside it, so the goal stays an equilibrium unless it lies in the band)
    joint_limits: Optional[list] = None

    @property
    def state_dim(self) -> int:
        return 2 * self.dof

    @property
    def out_dim(self) -> int:
        if self.output != 'passive':
            return self.dof
        return (4 if self.joint_limits else 3) * self.dof

    @property
    def feature_dim(self) -> int:
        # q, qd, goal, sin q, cos q (+ ee, goal - ee, ee velocity (+ J^T (goal - ee), J^T ee velocity))
        return 2 * self.dof + 3 + 2 * self.dof + ((9 + (2 * self.dof if self.jacobian else 0)) if self.fk else 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d['fk'] = 'in graph' if self.fk else None   # the chain itself is in the weights
        return d


def fk_chain(robot) -> dict:
    """The robot's forward kinematics as plain lists (see RobotModel._build_fk): p = tip, then for
    k = dof-1..0: rotate p about z by q_k - qpos0_k (or slide along z), p = R_k p + t_k."""
    return {'R': [np.asarray(r, float).tolist() for r in robot._fk_R],
            't': [np.asarray(t, float).tolist() for t in robot._fk_t],
            'tip': np.asarray(robot._fk_tip, float).tolist(), 'qpos0': np.asarray(robot._qpos0, float).tolist(),
            'slide': [bool(x) for x in robot._fk_slide]}


# Features whose training-set std is below this are left unscaled (see set_normalisation).
STD_FLOOR = 1e-2

# EE velocity as a forward difference over VEL_H seconds: (fk(q + h qd) - fk(q)) / h ≈ J(q) qd,
# the damping term of a task-space law, which an MLP would otherwise have to learn as a product.
VEL_H = 0.05

OUTPUTS = ('direct', 'passive')
LIMIT_MARGIN = 0.15   # rad: the band at each joint limit where the joint-limit spring acts
# softplus(PASSIVE_BIAS) ~ 0.05: untrained, the passive head is a very soft spring and damper (whatever
# the policy does comes from the labels, not from a hand-picked spring)
PASSIVE_BIAS = -2.97

# Units of the passive head's gains (so the MLP works with O(1) numbers): stiffness on J^T (goal - ee)
# [N/m], joint damping as a fraction of effort_max per rad/s, task-space damping [N s/m].
# Why gains: a gain is a smooth function of the state, estimated from all the labels of a region, where
# a direct head must fit one effort per state; near the goal the sampling planner's labels are mostly
# noise (their spread is 2x their mean on arm7) and a direct head then lands centimetres short.
# Why >= 0: with signed gains (tried) the DAgger rounds degraded fast (87 % -> 33 % of goals by round
# 7); a signed residual scaled by |goal - ee| (tried, to push out of joint limits) learned slower.
GAIN_SCALES = (300.0, 0.03, 30.0)

# p -> (y, x, 0): with it a rotation about z is p*(c,c,1) + swap(p)*(-s,s,0), one form for torch and ONNX.
_SWAP = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
_E110, _E001, _EM110, _E1M10 = (np.array(v, dtype=np.float32) for v in ([1, 1, 0], [0, 0, 1], [-1, 1, 0], [1, -1, 0]))


def _fk_parts(q: torch.Tensor, chain: dict):
    """(ee, cos, sin, p_in): p_in[k] is the tip expressed in the frame of joint k before its motion."""
    t32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))
    qf = q - t32(chain['qpos0'])
    c, s = torch.cos(qf), torch.sin(qf)
    p = t32(chain['tip']).expand(q.shape[:-1] + (3,))
    p_in = [None] * len(chain['R'])
    for k in range(len(chain['R']) - 1, -1, -1):
        p_in[k] = p
        if chain['slide'][k]:
            p = p + qf[..., k:k + 1] * t32(_E001)
        else:
            p = p * (c[..., k:k + 1] * t32(_E110) + t32(_E001)) + (p @ t32(_SWAP)) * (s[..., k:k + 1] * t32(_EM110))
        p = p @ t32(chain['R'][k]).T + t32(chain['t'][k])
    return p, c, s, p_in


def fk_torch(q: torch.Tensor, chain: dict) -> torch.Tensor:
    return _fk_parts(q, chain)[0]


def jt_torch(e: torch.Tensor, c: torch.Tensor, s: torch.Tensor, p_in: list, chain: dict) -> torch.Tensor:
    """J(q)^T e (..., dof) without forming J: with L_k = R_k Rz(q_k) the linear part of joint k's
    transform, d ee/d q_k = L_0..L_k (z x p_in[k]), so e . d ee/d q_k = (L_k^T..L_0^T e) . (z x p_in[k]):
    one pass from the base carrying w = L_k^T w (a slide joint: R_k^T w, and e . d ee/d q_k = w_z)."""
    t32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))
    w, out = e, []
    for k in range(len(chain['R'])):
        w = w @ t32(chain['R'][k])                       # R_k^T w (row vectors)
        if chain['slide'][k]:
            out.append((w * t32(_E001)).sum(-1, keepdim=True))
        else:
            w = w * (c[..., k:k + 1] * t32(_E110) + t32(_E001)) + (w @ t32(_SWAP)) * (s[..., k:k + 1] * t32(_E1M10))
            out.append(((p_in[k] @ t32(_SWAP)) * t32(_EM110) * w).sum(-1, keepdim=True))
    return torch.cat(out, dim=-1)


def features(state: torch.Tensor, goal: torch.Tensor, dof: int, chain: Optional[dict] = None,
             jacobian: bool = False) -> torch.Tensor:
    q = state[..., :dof]
    f = [state, goal, torch.sin(q), torch.cos(q)]
    if chain:
        ee, c, s, p_in = _fk_parts(q, chain)
        ee_ahead = fk_torch(q + VEL_H * state[..., dof:], chain)
        ee_vel = (ee_ahead - ee) / VEL_H
        f += [ee, goal - ee, ee_vel]
        if jacobian:
            # The joint torques of a task-space spring and damper (J^T F): a reaching law is then
            # nearly linear in the inputs instead of a product the MLP would have to learn.
            f += [jt_torch(goal - ee, c, s, p_in, chain), jt_torch(ee_vel, c, s, p_in, chain)]
    return torch.cat(f, dim=-1)


class PolicyNet(nn.Module):
    def __init__(self, config: PolicyConfig):
        super().__init__()
        if config.activation not in ('silu', 'tanh', 'relu'):
            raise ValueError(f'activation must be silu, tanh or relu, got {config.activation!r}')
        if config.output not in OUTPUTS:
            raise ValueError(f"output must be 'direct' or 'passive', got {config.output!r}")
        if config.output == 'passive' and not (config.fk and config.jacobian):
            raise ValueError(f"output {config.output!r} needs the FK and Jacobian features (fk chain, jacobian=True)")
        self.config = config
        sizes = [config.feature_dim, *config.hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], config.out_dim)
        if config.output == 'passive':
            with torch.no_grad():
                self.out.weight.mul_(0.1)
                self.out.bias.fill_(PASSIVE_BIAS)
        self.act = {'silu': nn.SiLU(), 'tanh': nn.Tanh(), 'relu': nn.ReLU()}[config.activation]
        self.register_buffer('in_mean', torch.zeros(config.feature_dim))
        self.register_buffer('in_std', torch.ones(config.feature_dim))
        self.register_buffer('effort_max', torch.as_tensor(config.effort_max, dtype=torch.float32))
        if config.joint_limits:   # the joint-limit spring's band edges
            lo, hi = (torch.as_tensor(v, dtype=torch.float32) for v in config.joint_limits)
            self.register_buffer('band_lo', lo + LIMIT_MARGIN)
            self.register_buffer('band_hi', hi - LIMIT_MARGIN)

    def set_normalisation(self, states: np.ndarray, goals: np.ndarray) -> None:
        with torch.no_grad():
            f = features(torch.as_tensor(states, dtype=torch.float32), torch.as_tensor(goals, dtype=torch.float32),
                         self.config.dof, self.config.fk, self.config.jacobian)
            self.in_mean.copy_(f.mean(0))
            # A (nearly) constant feature, e.g. the velocity of a joint that never moved in a tiny data
            # set, carries no information: scale it by 1 (as sklearn's StandardScaler). Dividing by a
            # floor like 1e-3 instead blew moving states up 1000x and with them float32 rounding
            # (ONNX vs torch parity 2e-5 on 2 episodes).
            std = f.std(0) if len(f) > 1 else torch.zeros(f.shape[-1])
            self.in_std.copy_(torch.where(std < STD_FLOOR, torch.ones_like(std), std))

    def features(self, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The raw inputs of the MLP (weight-free: training computes them once per data set)."""
        return features(state, goal, self.config.dof, self.config.fk, self.config.jacobian)

    def normalised(self, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """tanh output in [-1, 1]: the action as a fraction of effort_max (what the loss compares)."""
        return self.head(self.features(state, goal))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """`normalised` from precomputed `features`."""
        h = (f - self.in_mean) / self.in_std
        for layer in self.hidden:
            h = self.act(layer(h))
        z = self.out(h)
        if self.config.output == 'passive':
            d = self.config.dof
            g = torch.nn.functional.softplus(z)
            kp, kd, kdx = GAIN_SCALES
            # f's layout (features()): [q, qd, ...,  J^T(goal - ee), J^T ee velocity]
            qd, jte, jtv = f[..., d:2 * d], f[..., -2 * d:-d], f[..., -d:]
            z = (kp * g[..., :d] * jte - kdx * g[..., 2 * d:3 * d] * jtv) / self.effort_max - kd * g[..., d:2 * d] * qd
            if self.config.joint_limits:
                # depth into the band at the lower limit minus at the upper, in margins: in [-1, 1]
                q = f[..., :d]
                push = (torch.relu(self.band_lo - q) - torch.relu(q - self.band_hi)) / LIMIT_MARGIN
                z = z + g[..., 3 * d:] * push
        return torch.tanh(z)

    def forward(self, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.normalised(state, goal) * self.effort_max


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def build_graph(net: PolicyNet, metadata: dict | None = None) -> onnx.ModelProto:
    """state (B,S), goal (B,3) -> action (B,dof), the same arithmetic as `PolicyNet.forward`."""
    cfg = net.config
    S, A = cfg.state_dim, cfg.dof
    inits, nodes = [], []

    def const(name, arr, dtype=np.float32):
        if name not in {i.name for i in inits}:   # shared constants (e.g. the FK's unit vectors) once
            inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    inputs = [helper.make_tensor_value_info('state', TensorProto.FLOAT, ['batch', S]),
              helper.make_tensor_value_info('goal', TensorProto.FLOAT, ['batch', 3])]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ['batch', A])]
    nodes.append(helper.make_node('Slice', ['state', const('q_start', [0], np.int64), const('q_end', [A], np.int64),
                                            const('q_axis', [-1], np.int64)], ['q'], name='slice_q'))
    feats = ['state', 'goal', node('Sin', ['q'], 'sin_q'), node('Cos', ['q'], 'cos_q')]
    if cfg.fk:
        ee, c, s, p_in = _fk_nodes(cfg.fk, A, const, node, 'q', 'fk_')
        qd = node('Slice', ['state', const('qd_start', [A], np.int64), const('qd_end', [2 * A], np.int64),
                            const('q_axis', [-1], np.int64)], 'qd')
        q_ahead = node('Add', ['q', node('Mul', [qd, const('vel_h', [VEL_H])], 'qd_h')], 'q_ahead')
        ee_ahead = _fk_nodes(cfg.fk, A, const, node, q_ahead, 'fka_')[0]
        ee_vel = node('Mul', [node('Sub', [ee_ahead, ee], 'ee_step'), const('inv_vel_h', [1.0 / VEL_H])], 'ee_vel')
        feats += [ee, node('Sub', ['goal', ee], 'ee_error'), ee_vel]
        if cfg.jacobian:
            jte = _jt_nodes(cfg.fk, A, const, node, 'ee_error', c, s, p_in, 'jte_')
            jtv = _jt_nodes(cfg.fk, A, const, node, ee_vel, c, s, p_in, 'jtv_')
            feats += [jte, jtv]
    x = node('Concat', feats, 'x', axis=-1)
    x = node('Sub', [x, const('in_mean', _np(net.in_mean))], 'x_centered')
    h = node('Mul', [x, const('in_inv_std', 1.0 / _np(net.in_std))], 'x_norm')
    for i, layer in enumerate(net.hidden):
        h = node('Gemm', [h, const(f'w{i}', _np(layer.weight)), const(f'b{i}', _np(layer.bias))], f'pre{i}', transB=1)
        if cfg.activation == 'silu':
            h = node('Mul', [h, node('Sigmoid', [h], f'sig{i}')], f'h{i}')
        elif cfg.activation == 'relu':
            h = node('Relu', [h], f'h{i}')
        else:
            h = node('Tanh', [h], f'h{i}')
    z = node('Gemm', [h, const('w_out', _np(net.out.weight)), const('b_out', _np(net.out.bias))], 'z', transB=1)
    if cfg.output == 'passive':
        kp, kd, kdx = GAIN_SCALES
        gains = node('Softplus', [z], 'gains')
        g = [node('Slice', [gains, const(f'g{i}_lo', [i * A], np.int64), const(f'g{i}_hi', [(i + 1) * A], np.int64),
                            const('q_axis', [-1], np.int64)], f'gain{i}') for i in range(cfg.out_dim // A)]
        inv_em = 1.0 / _np(net.effort_max)
        spring = node('Mul', [node('Mul', [g[0], jte], 'g_jte'), const('kp_inv_em', kp * inv_em)], 'spring')
        damp_x = node('Mul', [node('Mul', [g[2], jtv], 'g_jtv'), const('kdx_inv_em', kdx * inv_em)], 'damp_task')
        damp_q = node('Mul', [node('Mul', [g[1], qd], 'g_qd'), const('kd', [kd])], 'damp_joint')
        z = node('Sub', [node('Sub', [spring, damp_x], 'spring_damp'), damp_q], 'z_passive')
        if cfg.joint_limits:
            below = node('Relu', [node('Sub', [const('band_lo', _np(net.band_lo)), 'q'], 'lo_depth')], 'lo_push')
            above = node('Relu', [node('Sub', ['q', const('band_hi', _np(net.band_hi))], 'hi_depth')], 'hi_push')
            push = node('Mul', [node('Sub', [below, above], 'limit_depth'), const('inv_margin', [1.0 / LIMIT_MARGIN])],
                        'limit_push')
            z = node('Add', [z, node('Mul', [g[3], push], 'limit_spring')], 'z_limits')
    t = node('Tanh', [z], 'action_normalised')
    # Squashed to ±effort_max inside the graph: no weights can command more than the limits.
    node('Mul', [t, const('effort_max', _np(net.effort_max))], OUTPUT)
    graph = helper.make_graph(nodes, 'distilled_policy', inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)], producer_name='mbrl_ros')
    proto.ir_version = 8
    helper.set_model_props(proto, {'mbrl_ros.kind': 'policy',
                                   'mbrl_ros.architecture': json.dumps(cfg.to_dict()),
                                   **{f'mbrl_ros.{k}': str(v) for k, v in (metadata or {}).items()}})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _fk_nodes(chain: dict, dof: int, const, node, q: str, prefix: str):
    """The same arithmetic as _fk_parts, as ONNX nodes: q (B,dof) -> (ee (B,3), cos, sin, p_in). Node
    names start with `prefix`; constants (names starting fk_) are shared between calls."""
    qf = node('Sub', [q, const('fk_qpos0', chain['qpos0'])], prefix + 'qf')
    c, s = node('Cos', [qf], prefix + 'cos'), node('Sin', [qf], prefix + 'sin')
    # the tip broadcast to (B,3): 0 * q[:, :1] + tip keeps the batch axis
    zero = node('Mul', [node('Slice', [qf, const('fk_first0', [0], np.int64), const('fk_first1', [1], np.int64),
                                        const('fk_ax', [1], np.int64)], prefix + 'q0'), const('fk_zero', [0.0])], prefix + 'zcol')
    p = node('Add', [zero, const('fk_tip', chain['tip'])], prefix + 'p_tip')
    p_in = [None] * dof
    for k in range(dof - 1, -1, -1):
        p_in[k] = p
        lo, hi = const(f'fk_lo{k}', [k], np.int64), const(f'fk_hi{k}', [k + 1], np.int64)
        if chain['slide'][k]:
            qk = node('Slice', [qf, lo, hi, 'fk_ax'], f'{prefix}q{k}_')
            p = node('Add', [p, node('Mul', [qk, const('fk_e001', _E001)], f'{prefix}slide{k}')], f'{prefix}ps{k}')
        else:
            p = _rot_z_nodes(p, c, s, lo, hi, ('fk_em110', _EM110), const, node, prefix, k, 'p', f'{prefix}rot{k}')
        p = node('MatMul', [p, const(f'fk_RT{k}', np.asarray(chain['R'][k]).T)], f'{prefix}pr{k}')
        p = node('Add', [p, const(f'fk_t{k}', chain['t'][k])], f'{prefix}p{k}')
    return node('Identity', [p], prefix + 'ee'), c, s, p_in


def _rot_z_nodes(v, c, s, lo, hi, sin_sign, const, node, prefix, k, tag, out):
    """Row vectors v (B,3) times the rotation about z by joint k's angle (its cos and sin sliced from
    c, s): v·(cos, cos, 1) + swap(v)·sin·sin_sign; sin_sign (name, value) picks R or its transpose."""
    ck = node('Slice', [c, lo, hi, 'fk_ax'], f'{prefix}cos{k}')
    sk = node('Slice', [s, lo, hi, 'fk_ax'], f'{prefix}sin{k}')
    a = node('Add', [node('Mul', [ck, const('fk_e110', _E110)], f'{prefix}ce{k}'), const('fk_e001', _E001)],
             f'{prefix}cc1_{k}')
    b = node('Mul', [sk, const(*sin_sign)], f'{prefix}ss0_{k}')
    sw = node('MatMul', [v, const('fk_swap', _SWAP)], f'{prefix}sw{k}')
    return node('Add', [node('Mul', [v, a], f'{prefix}{tag}a{k}'), node('Mul', [sw, b], f'{prefix}{tag}b{k}')], out)


def _jt_nodes(chain: dict, dof: int, const, node, e: str, c: str, s: str, p_in: list, prefix: str) -> str:
    """The same arithmetic as jt_torch: J(q)^T e (B,dof) from _fk_nodes' cos, sin and p_in."""
    w, out = e, []
    axes = const('fk_last_axis', [-1], np.int64)
    for k in range(dof):
        w = node('MatMul', [w, const(f'fk_R{k}', chain['R'][k])], f'{prefix}wr{k}')
        if chain['slide'][k]:
            out.append(node('ReduceSum', [node('Mul', [w, const('fk_e001', _E001)], f'{prefix}wz{k}'), axes],
                            f'{prefix}jt{k}', keepdims=1))
            continue
        lo, hi = const(f'fk_lo{k}', [k], np.int64), const(f'fk_hi{k}', [k + 1], np.int64)
        w = _rot_z_nodes(w, c, s, lo, hi, ('fk_e1m10', _E1M10), const, node, prefix, k, 'w', f'{prefix}w{k}')
        zxp = node('Mul', [node('MatMul', [p_in[k], const('fk_swap', _SWAP)], f'{prefix}psw{k}'),
                           const('fk_em110', _EM110)], f'{prefix}zxp{k}')
        out.append(node('ReduceSum', [node('Mul', [zxp, w], f'{prefix}dot{k}'), axes], f'{prefix}jt{k}', keepdims=1))
    return node('Concat', out, prefix + 'jt', axis=-1)


def export_policy(net: PolicyNet, path, metadata: dict | None = None, check_states=None, check_goals=None,
                  tol: float = 1e-5) -> float:
    """Write `path` and return the max |onnxruntime - torch| over the check batch (normalised by
    effort_max, so the tolerance means the same on every joint); raises if it exceeds `tol`."""
    import onnxruntime as ort
    proto = build_graph(net, metadata)
    onnx.save(proto, str(path))
    if check_states is None:
        rng = np.random.default_rng(0)
        check_states = rng.normal(size=(64, net.config.state_dim))
        check_goals = rng.normal(scale=0.3, size=(64, 3))
    s = np.asarray(check_states, dtype=np.float32)
    g = np.asarray(check_goals, dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = sess.run([OUTPUT], {'state': s, 'goal': g})[0]
    with torch.no_grad():
        want = _np(net(torch.from_numpy(s), torch.from_numpy(g)))
    err = float(np.max(np.abs(got - want) / _np(net.effort_max))) if len(s) else 0.0
    if not err <= tol:
        raise RuntimeError(f'{path}: onnxruntime and torch differ by {err:.2e} (> {tol:.0e}) on the check batch')
    return err
