"""PETS probabilistic ensemble: E MLPs (state, action) -> Gaussian over the next-state delta.

All members run as one batched matmul (parameters shaped (E, in, out), `torch.baddbmm`), never a
Python loop over members. Inputs and targets are normalised with statistics fitted on the training
set; the normalisation is part of the module (buffers), so the exported graph carries it too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .heads import AFFINE_INPUTS

ACTIVATIONS = {'silu': F.silu, 'relu': F.relu, 'tanh': torch.tanh}


@dataclass
class EnsembleConfig:
    state_dim: int
    action_dim: int
    ensemble_size: int = 5
    hidden_sizes: list = field(default_factory=lambda: [200, 200, 200])
    activation: str = 'silu'
    # PETS initial soft bounds on the log-variance, in normalised target units.
    max_logvar_init: float = 0.5
    min_logvar_init: float = -10.0
    # Control-affine mean head: mean = f(s, a) + B(s, a) a (normalised units). Rigid-body dynamics
    # under torque control are affine in the torque (qdd = M(q)^-1 (tau - h(q, qd))), a product a
    # plain MLP learns only slowly; the full MLP input keeps the model general.
    control_affine: bool = True
    # What the affine head multiplies: 'action' (mean = f + B a) or 'action_velocity'
    # (mean = f + B [a, qd]). For a fixed q the one-period velocity change is (nearly) linear in
    # both the torque and the joint velocity (damping through M(q)^-1: exp(-M^-1 D dt)), with
    # configuration-dependent coefficients -- products a plain MLP on [s, a] fits only slowly.
    # 'rigid_body' adds the products qd_i qd_j (i <= j): at a fixed q the one-period change of a
    # rigid-body arm is affine in [tau, qd, qd qd^T] (Coriolis and centrifugal terms are quadratic
    # in qd). Measured on arm7 at fixed q: least squares on [a, qd] leaves 1-29 % of the delta's
    # std, on [a, qd, qd qd^T] 0.2-3.5 % (docs/results/world_model_arm7.md, "Model form").
    affine_inputs: str = 'action'
    # Extra inputs sin(q), cos(q) for the first `angle_features` state dims (the joint angles):
    # the inertia and Coriolis terms are trigonometric in q.
    angle_features: int = 0
    # Inputs that are masked out (zero after normalisation, so the input layout and the graph stay
    # the same): `raw_angles=False` drops the raw joint angles of the first `angle_features` joints
    # (sin/cos carry them; the rigid-body terms are trigonometric in q); `invariant_joints` drops
    # every feature of those joints' angles -- e.g. the base joint of an arm whose first axis is
    # vertical: with gravity compensated, M(q) and the Coriolis terms do not depend on it, and an
    # input the dynamics ignore only gives a small dataset something spurious to fit.
    raw_angles: bool = True
    invariant_joints: list = field(default_factory=list)

    def __post_init__(self):
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]
        if self.activation not in ACTIVATIONS:
            raise ValueError(f'activation {self.activation!r} not in {sorted(ACTIVATIONS)}')
        if self.affine_inputs not in AFFINE_INPUTS:
            raise ValueError(f'affine_inputs {self.affine_inputs!r} not in {list(AFFINE_INPUTS)}')
        if self.affine_inputs != 'action' and self.state_dim % 2:
            raise ValueError(f'affine_inputs {self.affine_inputs} needs the state layout [q, qd] (even state_dim)')
        self.invariant_joints = sorted({int(j) for j in self.invariant_joints})
        if any(not 0 <= j < self.state_dim // 2 for j in self.invariant_joints):
            raise ValueError(f'invariant_joints {self.invariant_joints} must be joint indices < {self.state_dim // 2}')
        if self.ensemble_size < 1 or not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError('ensemble_size and every hidden size must be >= 1')

    @property
    def affine_dim(self) -> int:
        """Width of the vector the affine head multiplies (0 without the head)."""
        if not self.control_affine:
            return 0
        return sum(hi - lo for lo, hi in self.affine_slices()) + len(self.velocity_pairs()[0])

    def affine_slices(self) -> list[tuple[int, int]]:
        """[start, end) ranges of the normalised input vector that form the affine head's vector."""
        S, A = self.state_dim, self.action_dim
        out = [(S, S + A)]
        if self.affine_inputs in ('action_velocity', 'rigid_body'):
            out.append((S // 2, S))
        return out

    def velocity_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) index arrays (i <= j, into the normalised qd) of the products the head also multiplies."""
        if self.affine_inputs != 'rigid_body':
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        i, j = np.triu_indices(self.state_dim // 2)
        return i.astype(np.int64), j.astype(np.int64)

    @property
    def input_dim(self) -> int:
        return self.state_dim + self.action_dim + 2 * self.angle_features

    def input_mask(self) -> np.ndarray:
        """(input_dim,) 1 for a used network input, 0 for a masked one (layout [s, a, sin q, cos q])."""
        S, A, k = self.state_dim, self.action_dim, self.angle_features
        mask = np.ones(self.input_dim, dtype=np.float32)
        if not self.raw_angles:
            mask[:k] = 0.0
        for j in self.invariant_joints:
            mask[j] = 0.0
            if j < k:
                mask[S + A + j] = mask[S + A + k + j] = 0.0
        return mask

    def to_dict(self) -> dict:
        return asdict(self)


class EnsembleLinear(nn.Module):
    """E independent affine maps applied in one batched matmul: (E, B, in) -> (E, B, out)."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        # Truncated normal with std 1/(2 sqrt(in)) as in PETS; each member gets its own draw,
        # which (with bootstrapping) is where the members' disagreement comes from.
        nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * math.sqrt(in_features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class ProbabilisticEnsemble(nn.Module):
    def __init__(self, config: EnsembleConfig):
        super().__init__()
        self.config = config
        E, S = config.ensemble_size, config.state_dim
        sizes = [config.input_dim] + config.hidden_sizes
        self.hidden = nn.ModuleList(EnsembleLinear(E, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = EnsembleLinear(E, sizes[-1], 2 * S + S * config.affine_dim)
        self.act = ACTIVATIONS[config.activation]
        # Learned soft bounds on the log-variance (per member, per output dim).
        self.max_logvar = nn.Parameter(torch.full((E, 1, S), float(config.max_logvar_init)))
        self.min_logvar = nn.Parameter(torch.full((E, 1, S), float(config.min_logvar_init)))
        self.register_buffer('in_mean', torch.zeros(config.input_dim))
        self.register_buffer('in_std', torch.ones(config.input_dim))
        self.register_buffer('in_mask', torch.from_numpy(config.input_mask()))
        self.register_buffer('out_mean', torch.zeros(S))
        self.register_buffer('out_std', torch.ones(S))
        # Post-hoc per-dim log-variance offset (variance scaling fitted on the holdout, see
        # train.calibrate_variance); 0 while training.
        self.register_buffer('logvar_offset', torch.zeros(S))

    @property
    def ensemble_size(self) -> int:
        return self.config.ensemble_size

    # --- normalisation -----------------------------------------------------------------------
    def fit_normaliser(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Fit input/target mean and std on the training set (constant dims get std 1)."""
        def stats(a):
            a = np.asarray(a, dtype=np.float64)
            m, s = a.mean(0), a.std(0)
            s = np.where(s < 1e-8, 1.0, s)
            return torch.as_tensor(m, dtype=torch.float32), torch.as_tensor(s, dtype=torch.float32)
        self.in_mean, self.in_std = stats(inputs)
        self.out_mean, self.out_std = stats(targets)

    def features(self, states, actions):
        """Raw network inputs [s, a, sin(q), cos(q)] (torch tensors or numpy arrays)."""
        k = self.config.angle_features
        if isinstance(states, np.ndarray):
            parts = [states, actions] + ([np.sin(states[..., :k]), np.cos(states[..., :k])] if k else [])
            return np.concatenate(parts, axis=-1)
        parts = [states, actions] + ([torch.sin(states[..., :k]), torch.cos(states[..., :k])] if k else [])
        return torch.cat(parts, dim=-1)

    def normalise_inputs(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return (self.features(states, actions) - self.in_mean) / self.in_std * self.in_mask

    def normalise_targets(self, delta: torch.Tensor) -> torch.Tensor:
        return (delta - self.out_mean) / self.out_std

    # --- forward -----------------------------------------------------------------------------
    def forward_normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: normalised inputs (B, in) shared by all members or (E, B, in) one batch per member.

        Returns (mean, logvar) of the normalised delta, each (E, B, S).
        """
        E = self.ensemble_size
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(E, -1, -1)
        h = x
        for layer in self.hidden:
            h = self.act(layer(h))
        out = self.out(h)
        S, Z = self.config.state_dim, self.config.affine_dim
        mean, logvar = out[..., :S], out[..., S:2 * S]
        if Z:
            gain = out[..., 2 * S:].reshape(out.shape[:-1] + (S, Z))
            z = [x[..., a:b] for a, b in self.config.affine_slices()]
            i, j = self.config.velocity_pairs()
            if len(i):
                qd = x[..., S // 2:S]
                z.append(qd[..., i] * qd[..., j])
            z = torch.cat(z, dim=-1)
            # Broadcast multiply + sum, not a matmul: (S x Z) @ (Z x 1) per row is far too small for bmm.
            mean = mean + (gain * z.unsqueeze(-2)).sum(-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar + self.logvar_offset

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Denormalised (mean, logvar) of the next-state delta s' - s, each (E, B, S)."""
        mean_n, logvar_n = self.forward_normalised(self.normalise_inputs(states, actions))
        return mean_n * self.out_std + self.out_mean, logvar_n + 2.0 * torch.log(self.out_std)

    def nll_loss(self, x: torch.Tensor, y: torch.Tensor, logvar_reg: float = 0.01,
                 beta: float = 0.0) -> torch.Tensor:
        """Gaussian NLL (normalised units, mean over batch and dims, summed over members) + the
        PETS regulariser that pulls the soft log-variance bounds together.

        beta > 0 is the beta-NLL of Seitzer et al. (ICLR 2022): each term weighted by the (constant)
        predicted variance ** beta, so that points the model calls noisy still pull on the mean.
        """
        mean, logvar = self.forward_normalised(x)
        terms = ((mean - y) ** 2) * torch.exp(-logvar) + logvar
        if beta:
            terms = terms * torch.exp(beta * logvar.detach())
        nll = terms.mean(dim=(1, 2)).sum()
        return nll + logvar_reg * (self.max_logvar.sum() - self.min_logvar.sum())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
