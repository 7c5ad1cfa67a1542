"""DAgger distillation of the MPC into a goal-conditioned policy (torch; never imported by a node).

The algorithm (Ross et al. 2011, DAgger) as it runs here:

    D = {}
    for round i = 0..R-1:
        β_i = 1 for round 0 (the expert drives: plain MPC rollouts), β_decay^i after
        for each episode (random start at rest, random reachable goal, `episode_s` long):
            at every control period the expert (MpcController over the bundle's ensemble,
            ROS-free) labels the visited state; the arm executes the expert's action with
            probability β_i, else the student's
            D += (state, goal, expert action)
        train the student on D (MSE on actions normalised by effort_max), continuing from
        the previous round's weights
        measure: held-out action error, success on the reaching benchmark

The expert needs a good model but not real time: its budget is sized so a distillation takes
minutes on 2 cores (`expert` settings, no wall-clock budget, so labels do not depend on load).
Held-out labels: every `holdout_every`-th episode is kept out of training. The reaching
benchmark (mbrl_ros.core.evaluation.reaching) uses its own goal seed, disjoint from training.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mbrl_ros.core.evaluation.reaching import evaluate_reaching, sample_goals
from mbrl_ros.core.planning import EnsembleDynamics, MpcController, PlannerConfig
from mbrl_ros.core.planning.config import CostWeights
from mbrl_ros.core.sim import SimArm, SimError

from .network import OUTPUTS, PolicyConfig, PolicyNet, fk_chain


def _expert_default() -> dict:
    # Larger than the node's planner (N=100, 3 iterations): the labels near the goal are mostly sampling
    # noise, and 300 samples x 5 iterations with 30 elites cut their spread from 0.043 to 0.017 of
    # effort_max on arm7 (~80 ms per label there; no wall-clock budget, so labels do not depend on load).
    return {'horizon': 8, 'num_samples': 300, 'num_iterations': 5, 'num_elites': 30, 'execute': 'mean',
            'time_budget_ms': 0.0}


@dataclass
class DistillConfig:
    rounds: int = 8
    episodes_per_round: int = 12
    episode_s: float = 3.0
    beta_decay: float = 0.5            # β_i = beta_decay**i for i >= 1 (round 0: β = 1)
    epochs_per_round: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    hidden_sizes: list = field(default_factory=lambda: [256, 256])
    activation: str = 'silu'
    fk_features: bool = True           # ee = fk(q) and goal - ee as inputs (computed in the graph)
    jacobian_features: bool = True     # with fk_features: J^T (goal - ee) and J^T ee velocity as inputs
    output: str = 'passive'            # network head (PolicyConfig.output): 'passive' or 'direct' effort
    limit_spring: bool = False         # passive: a learned joint-limit spring too (PolicyConfig.joint_limits)
    holdout_every: int = 8             # every 8th episode: held-out labels for the action error
    # False: the expert plans every label from scratch (no warm start). Its warm start is the plan it
    # made for its own previous action; once the student acts, that plan belongs to another trajectory:
    # on student-driven arm7 states warm-started labels were 2x further (rms 0.21 vs 0.10 of effort_max)
    # from a converged cold-started reference than cold-started ones. Labels must be a function of
    # (state, goal) for DAgger; the warm start makes them depend on the history.
    expert_warm_start: bool = False
    label_every: int = 2               # rounds >= 1: the expert labels every k-th visited state (and
                                       # any state where it acts); consecutive states are near copies
    eval_goals: int = 100              # the reaching benchmark (test) of the selected policy, at the end
    eval_seed: int = 1000              # benchmark goals (training episodes use `seed`)
    # After every round the student runs `val_goals` validation goals (their own seed); the policy kept
    # is the round with the best validation success (ties: the later round, it saw more data). DAgger's
    # rounds are not monotonic on arm7 (87 % at round 2, 33 % at round 7 in one run) and picking a
    # round by the test benchmark would report a selected, not a measured, figure. 0: the last round.
    val_goals: int = 50
    val_seed: int = 2000
    expert_eval_goals: int = 0         # also run the expert on the benchmark (slow: 3 s of MPC per goal)
    expert: dict = field(default_factory=_expert_default)   # PlannerConfig fields for the expert
    # CostWeights fields for the expert, e.g. {'joint_goal': 0.0}: DAgger assumes the expert's action is
    # a function of what the student sees (state, goal); the IK pull (joint_goal) is not, it depends on
    # the IK solution picked when the goal arrived (7-DOF redundancy), so the labels disagree.
    expert_cost: dict = field(default_factory=lambda: {'joint_goal': 0.0})
    seed: int = 0
    threads: int = 1

    def errors(self) -> list[str]:
        errs = []
        for k in ('rounds', 'episodes_per_round', 'epochs_per_round', 'batch_size', 'holdout_every', 'threads',
                  'label_every'):
            if getattr(self, k) < 1:
                errs.append(f'{k} must be >= 1, got {getattr(self, k)}')
        if self.output not in OUTPUTS:
            errs.append(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if not 0.0 <= self.beta_decay <= 1.0:
            errs.append(f'beta_decay must be in [0, 1], got {self.beta_decay}')
        if not self.episode_s > 0 or not self.lr > 0:
            errs.append('episode_s and lr must be > 0')
        if self.eval_goals < 0 or self.expert_eval_goals < 0 or self.val_goals < 0:
            errs.append('eval_goals, val_goals and expert_eval_goals must be >= 0')
        if self.val_goals and self.val_seed == self.eval_seed:
            errs.append('val_seed must differ from eval_seed (selection on the test goals)')
        try:
            errs += PlannerConfig(**self.expert).errors()
        except TypeError as e:
            errs.append(f'expert: {e}')
        try:
            errs += CostWeights(**self.expert_cost).errors()
        except TypeError as e:
            errs.append(f'expert cost: {e}')
        return errs

    def beta(self, round_: int) -> float:
        return 1.0 if round_ == 0 else float(self.beta_decay ** round_)


@dataclass
class RoundStats:
    round: int
    beta: float
    episodes: int
    transitions: int                   # aggregated training set size after this round
    expert_share: float                # fraction of executed actions that were the expert's
    train_loss: float
    action_rmse: float                 # held-out, normalised units (fraction of effort_max)
    success_rate: float                # validation goals (val_seed)
    final_distance_median_m: float
    policy_step_ms_p50: float
    seconds: float

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class DistillResult:
    net: PolicyNet
    config: DistillConfig
    rounds: list
    expert_step_ms: np.ndarray          # expert compute per label [ms]
    expert_benchmark: Optional[dict]    # summary of the expert on the benchmark, if run
    final_benchmark: dict               # the selected round's policy: 'set' test (eval_seed) or validation (so far)
    data_size: int
    seconds: float


class _Dataset:
    def __init__(self, dof: int):
        self.s, self.g, self.a, self.held = [], [], [], []
        self.dof = dof

    def add(self, s, g, a, held: bool):
        self.s.append(s), self.g.append(g), self.a.append(a), self.held.append(held)

    def arrays(self, held: bool):
        idx = [i for i, h in enumerate(self.held) if h == held]
        if not idx:
            z = np.zeros((0, 2 * self.dof)), np.zeros((0, 3)), np.zeros((0, self.dof))
            return z
        return (np.asarray([self.s[i] for i in idx], np.float32), np.asarray([self.g[i] for i in idx], np.float32),
                np.asarray([self.a[i] for i in idx], np.float32))


class _Student:
    """The network as a `(q, qd, goal) -> effort` controller: after each training the exported ONNX
    graph (parity-checked against torch), ~20x cheaper per step than torch eager with the in-graph FK,
    so the per-round benchmark and the student's rollouts cost little next to the expert."""

    def __init__(self, net: PolicyNet, robot, workdir):
        self.net, self.robot, self.workdir = net, robot, Path(workdir)
        self.runtime = None

    def refresh(self):
        from .network import export_policy
        from .runtime import PolicyRuntime
        rng = np.random.default_rng(0)
        q = self.robot.sample_configurations(rng, 64)
        qd = rng.uniform(-1, 1, size=q.shape) * np.asarray(self.robot.qd_max)
        path = self.path = self.workdir / 'student.onnx'
        export_policy(self.net, path, check_states=np.concatenate([q, qd], 1),
                      check_goals=self.robot.fk(self.robot.sample_configurations(rng, 64)))
        self.runtime = PolicyRuntime(path)

    def __call__(self, q, qd, goal):
        if self.runtime is None:
            self.refresh()
        return self.runtime.act(q, qd, goal)


class Expert:
    """MpcController over the bundle's ensemble as a `(q, qd, goal) -> effort` labeller."""

    def __init__(self, robot, bundle, planner: dict, seed: int = 0, cost: Optional[dict] = None):
        cfg = PlannerConfig(**{**planner, 'seed': seed}).validated()
        self.mpc = MpcController(robot, EnsembleDynamics(bundle.ensemble), cfg,
                                 CostWeights(**(cost or {})).validated(), dt=bundle.dt)
        self.step_ms: list[float] = []

    def reset(self):
        self.mpc.reset()

    def reseed(self, seed: int):
        self.mpc.planner.rng = np.random.default_rng(seed)
        self.mpc._ik_rng = np.random.default_rng(seed)

    def __call__(self, q, qd, goal, now=None):
        """`now`: the episode time [s], so that a call after skipped periods shifts the warm start."""
        if self.mpc.goal is None or not np.array_equal(self.mpc.goal, goal):
            self.mpc.set_goal(goal)
        t0 = time.perf_counter()
        res = self.mpc.compute(q, qd, now=now)
        self.step_ms.append(1e3 * (time.perf_counter() - t0))
        if res.command is None:   # no time budget here, so this is a bug worth stopping for
            raise RuntimeError(f'expert produced no command: {res.reason}')
        return res.command


def _train(net: PolicyNet, data: _Dataset, cfg: DistillConfig, rng: np.random.Generator) -> float:
    s, g, a = (torch.from_numpy(x) for x in data.arrays(held=False))
    with torch.no_grad():   # the in-graph FK features do not depend on the weights: once, not per epoch
        f = net.features(s, g)
    target = (a / net.effort_max).clamp(-1.0, 1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(s)
    net.train()
    loss_sum, count = 0.0, 0
    for epoch in range(cfg.epochs_per_round):
        perm = torch.from_numpy(rng.permutation(n))
        last = epoch == cfg.epochs_per_round - 1
        for i in range(0, n, cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            loss = torch.mean((net.head(f[b]) - target[b]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if last:
                loss_sum, count = loss_sum + loss.item() * len(b), count + len(b)
    net.eval()
    return loss_sum / max(count, 1)


def _action_rmse(net: PolicyNet, data: _Dataset) -> float:
    s, g, a = data.arrays(held=True)
    if not len(s):
        return float('nan')
    with torch.no_grad():
        pred = net.normalised(torch.from_numpy(s), torch.from_numpy(g)).numpy()
    target = np.clip(a / net.effort_max.numpy(), -1, 1)
    return float(np.sqrt(np.mean((pred - target) ** 2)))


def distill(bundle, robot, config: Optional[DistillConfig] = None, progress: bool = True,
            log=print, expert=None, on_round=None) -> DistillResult:
    """Run DAgger with the MPC over `bundle` (a loaded ModelBundle) as the expert on `robot`.

    `expert`: another labeller `(q, qd, goal) -> effort` (with `reset()` and a `step_ms` list), e.g. a
    cheap analytic controller in tests; `bundle` may then be None (its dt is then 0.02 s).
    `on_round(result)`: called after every round with the DistillResult so far (e.g. to write the
    bundle each round, so a long distillation cut short still leaves its latest policy)."""
    import tempfile
    cfg = config or DistillConfig()
    errs = cfg.errors()
    if errs:
        raise ValueError('invalid distillation settings: ' + '; '.join(errs))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.perf_counter()
    dt = bundle.dt if bundle is not None else 0.02
    sim = SimArm(robot)
    substeps = max(1, int(round(dt * sim.physics_rate_hz)))
    steps = int(round(cfg.episode_s / dt))
    expert = expert if expert is not None else Expert(robot, bundle, cfg.expert, seed=cfg.seed,
                                                         cost=cfg.expert_cost)
    net = PolicyNet(PolicyConfig(dof=robot.dof, effort_max=[float(v) for v in robot.effort_max],
                                 hidden_sizes=list(cfg.hidden_sizes), activation=cfg.activation,
                                 fk=fk_chain(robot) if cfg.fk_features else None,
                                 jacobian=cfg.jacobian_features, output=cfg.output,
                                 joint_limits=[[float(v) for v in robot.q_min], [float(v) for v in robot.q_max]]
                                 if cfg.limit_spring and cfg.output == 'passive' else None))
    net.eval()
    workdir = tempfile.TemporaryDirectory(prefix='distill_')
    student = _Student(net, robot, workdir.name)
    data = _Dataset(robot.dof)
    total_eps = cfg.rounds * cfg.episodes_per_round
    # Training starts/goals: their own seed, disjoint from the benchmark's (cfg.eval_seed).
    starts, _, goals = sample_goals(robot, total_eps, seed=cfg.seed + 7919)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total_eps * steps, desc='DAgger', unit='label', smoothing=0.1)
    rounds, ep, best = [], 0, None
    for r in range(cfg.rounds):
        t_round = time.perf_counter()
        beta = cfg.beta(r)
        used_expert = used = 0
        jobs = [(r, e, starts[e], goals[e], e % cfg.holdout_every == cfg.holdout_every - 1)
                for e in range(ep, ep + cfg.episodes_per_round)]
        ep += cfg.episodes_per_round
        for job in jobs:
            labels, n_exp, n, err = _run_episode(cfg, sim, substeps, steps, dt, expert, student, *job)
            for row in labels:
                data.add(*row)
            used_expert, used = used_expert + n_exp, used + n
            if err:
                log(err)
            if bar is not None:
                bar.update(steps)
        if r == 0:
            s0, g0, _ = data.arrays(held=False)
            net.set_normalisation(s0, g0)   # fixed from round 0 on, so later rounds fine-tune
        if bar is not None:
            bar.set_postfix_str(f'round {r}: training on {len(data.held) - sum(data.held)}')
        loss = _train(net, data, cfg, rng)
        student.refresh()
        rmse = _action_rmse(net, data)
        bench = _benchmark(student, robot, cfg.val_goals, cfg.val_seed, dt)
        st = RoundStats(r, beta, cfg.episodes_per_round, len(data.held) - sum(data.held),
                        used_expert / max(used, 1), loss, rmse, bench['success_rate'],
                        bench['final_distance_m']['median'], bench['step_ms']['p50'], time.perf_counter() - t_round)
        rounds.append(st)
        if best is None or not cfg.val_goals or st.success_rate >= best[0].success_rate:
            best = (st, copy.deepcopy(net.state_dict()))
        msg = (f'round {r}: beta {beta:.3f}, {st.transitions} labels, loss {loss:.4f}, held-out action rmse '
               f'{rmse:.4f}, validation success {st.success_rate:.0%} (median final distance '
               f'{st.final_distance_median_m * 100:.1f} cm)' + (f'; kept: round {best[0].round}' if cfg.val_goals else ''))
        if bar is not None:
            bar.write(msg)
        else:
            log(msg)
        if on_round is not None and r < cfg.rounds - 1:
            on_round(_result(_copy_with(net, best[1]), cfg, rounds, expert, None, data, t_start,
                             _selected(best[0], cfg, 'validation', None)))
    if bar is not None:
        bar.close()
    net.load_state_dict(best[1])
    student.refresh()
    test = _benchmark(student, robot, cfg.eval_goals, cfg.eval_seed, dt)
    log(f'kept round {best[0].round} (validation {best[0].success_rate:.0%}): test benchmark success '
        f'{test["success_rate"]:.0%} of {cfg.eval_goals} goals')
    expert_bench = None
    if cfg.expert_eval_goals:
        expert_bench = evaluate_reaching(expert, robot, n_goals=cfg.expert_eval_goals, seed=cfg.eval_seed, dt=dt,
                                         progress=progress).summary()
    workdir.cleanup()
    result = _result(net, cfg, rounds, expert, expert_bench, data, t_start, _selected(best[0], cfg, 'test', test))
    if on_round is not None:
        on_round(result)
    return result


def _benchmark(controller, robot, n_goals, seed, dt) -> dict:
    if not n_goals:
        return {'success_rate': float('nan'), 'final_distance_m': {'median': float('nan')},
                'step_ms': {'p50': float('nan')}}
    return evaluate_reaching(controller, robot, n_goals=n_goals, seed=seed, dt=dt).summary()


def _selected(st: RoundStats, cfg: DistillConfig, kind: str, bench: Optional[dict]) -> dict:
    """The kept round's figures: on the test goals once measured, else its validation figures."""
    if bench is None:
        return {'set': kind, 'episodes': cfg.val_goals, 'seed': cfg.val_seed, 'selected_round': st.round,
                'success_rate': st.success_rate, 'final_distance_median_m': st.final_distance_median_m}
    return {'set': kind, 'episodes': cfg.eval_goals, 'seed': cfg.eval_seed, 'selected_round': st.round,
            'success_rate': bench['success_rate'], 'final_distance_median_m': bench['final_distance_m']['median']}


def _copy_with(net: PolicyNet, state_dict) -> PolicyNet:
    other = copy.deepcopy(net)
    other.load_state_dict(state_dict)
    return other.eval()


def _run_episode(cfg, sim, substeps, steps, dt, expert, student, r, ep, start, goal, held):
    """One DAgger episode: (labels [(state, goal, action, held)], expert steps, steps, error). Its coin
    flips and the expert's samplers are seeded by the episode index, so an episode's labels do not
    depend on the episodes before it (a step towards labelling episodes in parallel processes)."""
    rng = np.random.default_rng([cfg.seed, ep])
    beta = cfg.beta(r)
    sim.reset(q=start)
    expert.reset()
    if hasattr(expert, 'reseed'):
        expert.reseed(cfg.seed * 100003 + ep)
    labels, used_expert, used, err = [], 0, 0, None
    try:
        for k in range(steps):
            q, qd, _ = sim.observe()
            use_expert = rng.random() < beta
            a_star = None
            if use_expert or r == 0 or k % cfg.label_every == 0:
                if not cfg.expert_warm_start:
                    expert.reset()
                a_star = _label(expert, q, qd, goal, k * dt)
                labels.append((np.concatenate([q, qd]), goal, a_star, held))
            if use_expert:
                u = a_star
                used_expert += 1
            else:
                u = student(q, qd, goal)
            used += 1
            sim.set_command(u)
            sim.step(substeps)
    except SimError as exc:  # an unstable episode ends early; its labels so far are valid
        err = f'round {r}: episode {ep} ended early: {exc}'
    return labels, used_expert, used, err


def _label(expert, q, qd, goal, now):
    import inspect
    # A labeller without a clock (e.g. an analytic controller in tests) is called without `now`.
    if 'now' in inspect.signature(expert).parameters:
        return expert(q, qd, goal, now=now)
    return expert(q, qd, goal)


def _result(net, cfg, rounds, expert, expert_bench, data, t_start, final_bench) -> DistillResult:
    return DistillResult(net, cfg, rounds, np.asarray(expert.step_ms), expert_bench, final_bench,
                         len(data.held), time.perf_counter() - t_start)


# ---- writing the result into a bundle ------------------------------------------------------------
def time_runtime(path, dof: int, n: int = 2000, seed: int = 0) -> dict:
    """Per-call latency of PolicyRuntime.act (what the node pays each period) [ms]."""
    from .runtime import PolicyRuntime
    rt = PolicyRuntime(path)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2 * dof))
    g = rng.normal(scale=0.3, size=(n, 3))
    for i in range(50):   # warm-up: first calls allocate
        rt.act(x[i, :dof], x[i, dof:], g[i])
    t = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        rt.act(x[i, :dof], x[i, dof:], g[i])
        t[i] = time.perf_counter() - t0
    t *= 1e3
    return {'p50': float(np.percentile(t, 50)), 'p99': float(np.percentile(t, 99)), 'mean': float(t.mean())}


def install_policy(bundle_dir, net: PolicyNet, robot, seed: int = 0, metadata: Optional[dict] = None):
    """Export `net` as bundle_dir/policy.onnx (parity-checked to 1e-5 of effort_max on moving states
    within the limits, then timed). Returns (parity error, timing). bundle.yaml is not touched: call
    `write_policy_section` next (until then the bundle is refused: a policy without a sha256)."""
    import os

    from mbrl_ros.core.bundle import POLICY_FILE

    from .network import export_policy
    bundle_dir = Path(bundle_dir)
    rng = np.random.default_rng(seed)
    q = robot.sample_configurations(rng, 256)
    qd = rng.uniform(-1, 1, size=q.shape) * np.asarray(robot.qd_max)
    goals = robot.fk(robot.sample_configurations(rng, 256))
    tmp = bundle_dir / (POLICY_FILE + '.tmp')
    parity = export_policy(net, tmp, metadata, np.concatenate([q, qd], 1), goals, tol=1e-5)
    timing = time_runtime(tmp, robot.dof)
    os.replace(tmp, bundle_dir / POLICY_FILE)
    return parity, timing


def write_policy_section(bundle_dir, section: dict) -> None:
    """Record policy.onnx's sha256 and the `policy:` section in bundle.yaml (atomic replace)."""
    from mbrl_ros.core.bundle import POLICY_FILE, update_bundle_meta
    update_bundle_meta(bundle_dir, {'policy': section}, hash_files=[POLICY_FILE])


def save_to_bundle(result: DistillResult, bundle_dir, robot, command: str = '', log=print) -> dict:
    """Export `policy.onnx` into the bundle (parity-checked), record its sha256 and a `policy:`
    section in bundle.yaml, and write distill_report.{json,png}. Returns the policy section."""
    import json

    from mbrl_ros.core.bundle import POLICY_FILE

    from .plots import plot_rounds

    bundle_dir = Path(bundle_dir)
    parity, timing = install_policy(bundle_dir, result.net, robot, seed=result.config.seed + 1,
                                    metadata={'dagger_rounds': len(result.rounds)})
    cfg = result.config
    expert_ms = result.expert_step_ms
    expert_p50 = float(np.percentile(expert_ms, 50)) if len(expert_ms) else float('nan')
    last = result.rounds[-1]
    final = result.final_benchmark
    section = {
        'file': POLICY_FILE,
        'inputs': {'state': ['batch', 2 * robot.dof], 'goal': ['batch', 3]},
        'outputs': {'action': ['batch', robot.dof]},
        'predicts': 'effort (Nm on top of gravity compensation), squashed to ±effort_max in the graph',
        'architecture': {'hidden_sizes': list(cfg.hidden_sizes), 'activation': cfg.activation,
                         'features': 'q, qd, goal, sin q, cos q'
                                     + (', ee = fk(q), goal - ee, ee velocity' if cfg.fk_features else '')
                                     + (', J^T (goal - ee), J^T ee velocity' if cfg.fk_features and
                                        cfg.jacobian_features else '')
                                     + ' (computed and standardised inside the graph)',
                         'output': 'effort_max * tanh' + (' of a task-space spring-damper whose per-joint gains '
                                                          '(>= 0) the MLP outputs' if cfg.output == 'passive' else ''),
                         'parameters': int(sum(p.numel() for p in result.net.parameters()))},
        'distillation': {'method': 'DAgger', 'rounds': len(result.rounds), 'rounds_planned': cfg.rounds,
                         'episodes_per_round': cfg.episodes_per_round, 'label_every': cfg.label_every,
                         'episode_s': cfg.episode_s, 'beta': [round(cfg.beta(r), 6) for r in range(cfg.rounds)],
                         'epochs_per_round': cfg.epochs_per_round, 'lr': cfg.lr, 'seed': cfg.seed,
                         'expert_warm_start': cfg.expert_warm_start,
                         'expert': {'controller': 'MpcController (icem) over ensemble.onnx', **cfg.expert,
                                    **({'cost': dict(cfg.expert_cost)} if cfg.expert_cost else {})},
                         'data_size': int(result.data_size), 'train_transitions': int(last.transitions),
                         'wall_time_s': round(result.seconds, 1)},
        'metrics': {
            'benchmark': f'reaching: {final["episodes"]} random reachable goals (seed {final["seed"]}), success = EE '
                         'within 2 cm of the goal 3 s after it is sent, SimArm at 50 Hz'
                         + ('' if final['set'] == 'test' else ' (validation goals: distillation not finished)'),
            'success_rate': round(final['success_rate'], 4),
            'final_distance_median_m': round(final['final_distance_median_m'], 5),
            'selected_round': final['selected_round'],
            'validation': {'goals': cfg.val_goals, 'seed': cfg.val_seed,
                           'success_rate_per_round': [round(r.success_rate, 4) for r in result.rounds]},
            'heldout_action_rmse': round(result.rounds[final['selected_round']].action_rmse, 5),
            'onnx_parity_max_error': parity,
            'step_ms_p50': round(timing['p50'], 5), 'step_ms_p99': round(timing['p99'], 5),
            'expert_step_ms_p50': round(expert_p50, 3),
            'speedup_vs_expert_p50': round(expert_p50 / timing['p50'], 1),
            **({'expert_success_rate': round(result.expert_benchmark['success_rate'], 4)}
               if result.expert_benchmark else {}),
        },
        **({'command': command} if command else {}),
    }
    write_policy_section(bundle_dir, section)
    report = {'rounds': [r.as_dict() for r in result.rounds], 'policy': section,
              'final_benchmark': result.final_benchmark,
              'expert_benchmark': result.expert_benchmark,
              'expert_step_ms': {'p50': expert_p50, 'p99': float(np.percentile(expert_ms, 99)) if len(expert_ms)
                                 else float('nan')}}
    (bundle_dir / 'distill_report.json').write_text(json.dumps(report, indent=2))
    try:
        plot_rounds(result.rounds, bundle_dir / 'distill_report.png', final=result.final_benchmark,
                    expert_success=result.expert_benchmark['success_rate'] if result.expert_benchmark else None)
    except Exception as exc:  # a missing plotting backend must not lose a distilled policy
        log(f'(no report plot: {exc!r})')
    return section


def attach_policy(src_dir, bundle_dir, robot, eval_goals: int = 100, eval_seed: int = 1000, command: str = '',
                  progress: bool = False) -> dict:
    """Put the distilled policy of bundle `src_dir` into bundle `bundle_dir` (e.g. the shipped bundle
    after its ensemble was retrained: the policy maps (state, goal) -> effort on the robot and does
    not use the ensemble, so it carries over to any bundle of the same robot).

    Refuses (ValueError) a source without a validated policy, or bundles of different robots
    (description hash, joint names). With `eval_goals` the policy is re-run on the reaching benchmark
    from the copy and the section's metrics are updated. The policy section (with `attached_from`)
    and sha256 are written, then the bundle must pass `load_bundle`, else it is restored as it was.
    Returns the written section."""
    import os
    import shutil

    from mbrl_ros.core.bundle import BUNDLE_FILE, POLICY_FILE, BundleError, load_bundle, read_bundle_meta

    from .runtime import PolicyRuntime
    src_dir, bundle_dir = Path(src_dir), Path(bundle_dir)
    try:
        src = load_bundle(src_dir, robot)
    except BundleError as e:
        raise ValueError(f'source {src_dir}: {e}') from e
    if src.policy_path is None or not isinstance(src.meta.get('policy'), dict):
        raise ValueError(f'source {src_dir} has no policy.onnx with a policy section (distil one first)')
    meta = read_bundle_meta(bundle_dir)
    for key, a, b in (('robot description hash', src.meta['robot'].get('description_hash'),
                       (meta.get('robot') or {}).get('description_hash')),
                      ('joint names', src.meta.get('joint_names'), meta.get('joint_names'))):
        if a != b:
            raise ValueError(f'{src_dir} and {bundle_dir} are for different robots ({key}: {a} vs {b})')
    section = dict(src.meta['policy'])
    section['attached_from'] = {'bundle': str(src_dir), 'sha256': src.file_sha256.get(POLICY_FILE)}
    if command:
        section['attach_command'] = command
    if eval_goals:
        res = evaluate_reaching(PolicyRuntime(src.policy_path), robot, n_goals=eval_goals, seed=eval_seed,
                                dt=float(meta.get('dt', 0.02)), progress=progress).summary()
        section['metrics'] = {**section.get('metrics', {}),
                              'benchmark': f'reaching: {eval_goals} random reachable goals (seed {eval_seed}), '
                                           'success = EE within 2 cm of the goal 3 s after it is sent, SimArm at 50 Hz',
                              'success_rate': round(res['success_rate'], 4),
                              'final_distance_median_m': round(res['final_distance_m']['median'], 5)}
    old_yaml = (bundle_dir / BUNDLE_FILE).read_bytes()
    old_policy = (bundle_dir / POLICY_FILE).read_bytes() if (bundle_dir / POLICY_FILE).exists() else None
    tmp = bundle_dir / (POLICY_FILE + '.tmp')
    shutil.copyfile(src.policy_path, tmp)
    os.replace(tmp, bundle_dir / POLICY_FILE)
    try:
        write_policy_section(bundle_dir, section)
        load_bundle(bundle_dir, robot)
    except Exception:
        (bundle_dir / BUNDLE_FILE).write_bytes(old_yaml)
        if old_policy is None:
            (bundle_dir / POLICY_FILE).unlink(missing_ok=True)
        else:
            (bundle_dir / POLICY_FILE).write_bytes(old_policy)
        raise
    return section
