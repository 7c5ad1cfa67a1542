"""The iterated PETS loop (Chua et al. 2018) as `mbrl-ros learn` runs it, ROS-free.

    D = random exploration (collect_sim, coloured noise)           # iteration 0 data
    for k = 1..K:
        M_k = train the ensemble on D (from scratch, see below)    # train_bundle: export + checks
        run N episodes of MPC over M_k on SimArm toward random reachable goals
            (the reaching evaluator; success = EE within 2 cm after episode_s)
        D += those on-policy transitions
    M = train on D                                                 # the final bundle at --out
    distil the MPC over M into policy.onnx (core.policy.distill), optional
    report: success / data size per iteration (YAML + PNG), a `learning:` section in bundle.yaml

Retraining is from scratch each iteration, not warm-started: `train_bundle` refits the input and
target normalisers on the grown dataset (on-policy data moves them: faster joints, states near the
goals), and re-using weights fitted under the old normalisation would need re-scaling the first and
last layers; with <= 20k transitions a from-scratch fit costs about as much as a long warm start and
every iteration's model is then a function of (data, seed) only, which keeps the loop reproducible.

Reproducibility: exploration, goals, bootstrap and torch init are seeded. The data-collecting MPC
uses a fixed population (`time_budget_ms = 0` by default) so the on-policy data does not depend on
the machine's load; a wall-clock budget (as on the robot) can be asked for and is what the final
closed-loop evaluation uses.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from mbrl_ros.core.dynamics.heads import AFFINE_INPUTS
from mbrl_ros.core.planning import PlannerConfig
from mbrl_ros.core.planning.config import CostWeights

from .agent import MpcAgent, planner_config

REPORT_YAML = 'learn_report.yaml'
REPORT_PNG = 'learn_report.png'


def _default_planner() -> dict:
    # Deployment settings (config/mpc_controller.yaml) but a fixed population instead of the
    # wall-clock budget, so the collected data is reproducible: 2 iCEM iterations of 150 samples
    # over 12 steps take ~10-15 ms with a 5 x (128, 128) ensemble on one idle core.
    return {'horizon': 12, 'num_samples': 150, 'num_iterations': 2, 'num_elites': 15, 'time_budget_ms': 0.0}


@dataclass
class LearnConfig:
    robot: str = 'arm7'
    seed: int = 0
    # Data
    init_transitions: int = 6000          # random exploration before the first model
    exploration: str = 'colored'
    # Fraction of effort_max: None = calibrated per joint on the arm's own dynamics so random commands
    # reach a stated fraction of the velocity limits (core/data/exploration.calibrate_amplitude; arm7:
    # 0.06-0.12, the old fixed 0.1); the derived values go to bundle.yaml (learning.derived).
    amplitude: Optional[float] = None
    episode_len: int = 200                # exploration episode length (steps)
    iterations: int = 3                   # K: model -> MPC episodes -> more data
    episodes_per_iteration: int = 20      # N MPC episodes per iteration
    episode_s: float = 3.0                # one goal per episode, success judged at its end
    max_env_steps: int = 20000            # budget on training-data environment steps (refused above)
    # Model
    ensemble_size: int = 5
    hidden_sizes: list = field(default_factory=lambda: [128, 128])
    activation: str = 'silu'
    affine_inputs: str = 'action'         # EnsembleConfig.affine_inputs
    raw_angles: bool = True               # EnsembleConfig.raw_angles
    invariant_joints: list = field(default_factory=list)   # EnsembleConfig.invariant_joints
    # Training (per iteration, from scratch)
    epochs: int = 100
    batch_size: int = 256
    lr: float = 3e-3
    patience: int = 20
    nll_beta: float = 0.5                 # TrainConfig.nll_beta (beta-NLL weighting; 1: MSE-like mean fit)
    weight_decay: float = 1e-5            # TrainConfig.weight_decay (AdamW, decoupled)
    # The 2-sigma calibration's data: 'exploration' = the holdout episodes of the random exploration,
    # drawn like `evaluate-model`'s held-out trajectories; 'all' = the whole holdout, where the on-policy
    # episodes (fast MPC reaches, larger errors) widened arm3's band to 98.9 % coverage on exploration data.
    calibrate_on: str = 'exploration'
    max_train_time_s: Optional[float] = None
    threads: int = 1
    # Planner used for the on-policy episodes (PlannerConfig fields) and the cost weights
    planner: dict = field(default_factory=_default_planner)
    # No risk term while learning (as in PETS): random exploration covers only small efforts, so
    # with the node's uncertainty_penalty (1.0) every decisive action looks uncertain and the MPC
    # holds the arm still (measured: |u| ~ 0, final distance 70+ cm) -- a fixed point on-policy
    # data never leaves. With 0 the same model reached 4/4 goals (docs/results/pets_learning_planning.md).
    weights: dict = field(default_factory=lambda: {'uncertainty': 0.0})
    propagation: str = 'expectation'
    # Final closed-loop evaluation (the real wall-clock budget, as in the node); 0 = skip
    eval_goals: int = 0
    eval_seed: int = 1000
    eval_budget_ms: float = 14.5
    eval_planner: dict = field(default_factory=dict)   # overrides of the deployment PlannerConfig
    # Distillation (core.policy.distill); 0 rounds = skip
    distill_rounds: int = 0
    distill_episodes_per_round: int = 12
    distill_eval_goals: int = 20
    distill_val_goals: int = 20           # validation goals per DAgger round (the best round is kept)
    distill_epochs: int = 40
    distill_hidden: list = field(default_factory=lambda: [256, 256])
    distill_label_every: int = 2
    distill_output: str = 'passive'       # PolicyConfig.output
    # The expert: `planner` with these overrides (DistillConfig's defaults: a larger planner, cold-started
    # labels, no IK pull; see core/policy/distill.py for why)
    distill_expert: dict = field(default_factory=lambda: _distill_defaults()[0])
    distill_expert_cost: dict = field(default_factory=lambda: _distill_defaults()[1])

    def steps_per_episode(self, dt: float = 0.02) -> int:
        return int(round(self.episode_s / dt))

    def planned_env_steps(self, dt: float = 0.02) -> int:
        return self.init_transitions + self.iterations * self.episodes_per_iteration * self.steps_per_episode(dt)

    def errors(self) -> list[str]:
        errs = []
        for k in ('init_transitions', 'episode_len', 'ensemble_size', 'epochs', 'batch_size', 'threads'):
            if getattr(self, k) < 1:
                errs.append(f'{k} must be >= 1, got {getattr(self, k)}')
        for k in ('iterations', 'episodes_per_iteration', 'eval_goals', 'distill_rounds'):
            if getattr(self, k) < 0:
                errs.append(f'{k} must be >= 0, got {getattr(self, k)}')
        if self.distill_rounds > 0:
            try:
                errs += [f'distillation: {e}' for e in _distill_config(self).errors()]
            except TypeError as e:
                errs.append(f'distillation: {e}')
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            errs.append(f'hidden_sizes must be positive widths, got {self.hidden_sizes}')
        if not self.episode_s > 0:
            errs.append(f'episode_s must be > 0, got {self.episode_s}')
        if self.planned_env_steps() > self.max_env_steps:
            errs.append(f'{self.planned_env_steps()} environment steps planned (init {self.init_transitions} + '
                        f'{self.iterations} x {self.episodes_per_iteration} episodes x {self.steps_per_episode()}'
                        f' steps) > max_env_steps {self.max_env_steps}')
        if self.calibrate_on not in ('exploration', 'all'):
            errs.append(f"calibrate_on must be 'exploration' or 'all', got {self.calibrate_on!r}")
        if not (self.nll_beta >= 0 and self.weight_decay >= 0):
            errs.append(f'nll_beta and weight_decay must be >= 0, got {self.nll_beta} and {self.weight_decay}')
        if self.affine_inputs not in AFFINE_INPUTS:
            errs.append(f'affine_inputs must be one of {list(AFFINE_INPUTS)}, got {self.affine_inputs!r}')
        if self.invariant_joints:
            try:
                from mbrl_ros.core.robot import RobotModel
                dof = RobotModel.load(self.robot).dof
                bad = [j for j in self.invariant_joints if not 0 <= int(j) < dof]
                if bad:
                    errs.append(f'invariant_joints {bad} are not joint indices of {self.robot} (0..{dof - 1})')
            except (OSError, ValueError) as e:
                errs.append(f'robot {self.robot!r}: {e}')
        try:
            planner_config(**self.planner)
        except (TypeError, ValueError) as e:
            errs.append(f'planner: {e}')
        try:
            planner_config(**self.eval_planner)
        except (TypeError, ValueError) as e:
            errs.append(f'eval_planner: {e}')
        try:
            CostWeights(**self.weights).validated()
        except (TypeError, ValueError) as e:
            errs.append(f'weights: {e}')
        return errs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class IterationStats:
    iteration: int              # 0: random data only; k >= 1: after the k-th batch of MPC episodes
    data_random: int            # transitions by source in the dataset the model was trained on
    data_on_policy: int
    train_wall_s: float
    epochs: int
    one_step_nrmse: float       # holdout of that iteration's training data
    open_loop_ee_error_median_m: float
    # MPC episodes run on this model (None for the final model when no episodes follow)
    episodes: Optional[int] = None
    success_rate: Optional[float] = None
    final_distance_median_m: Optional[float] = None
    plan_ms_p50: Optional[float] = None
    plan_ms_p99: Optional[float] = None
    mpc_wall_s: Optional[float] = None

    def as_dict(self) -> dict:
        return {k: (float(f'{v:.6g}') if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def _episodes_to_dataset(records: list, robot, dt: float, meta: dict):
    """Consecutive (q, qd, effort) records of each episode -> transitions (s, a, s').

    The evaluator reports the state before each command; the state after an episode's last
    command is not reported, so that one transition per episode is dropped."""
    from mbrl_ros.core.data.dataset import TransitionDataset
    S, A, NS, EP = [], [], [], []
    by_ep: dict = {}
    for ep, q, qd, u in records:
        by_ep.setdefault(ep, []).append((np.concatenate([q, qd]), u))
    for ep, rows in by_ep.items():
        for (s, a), (ns, _) in zip(rows[:-1], rows[1:]):
            S.append(s), A.append(a), NS.append(ns), EP.append(ep)
    return TransitionDataset(np.array(S), np.array(A), np.array(NS), np.array(EP), dt,
                             list(robot.joint_names), robot.name, meta)


def run_mpc_episodes(robot, bundle, planner: PlannerConfig, weights: CostWeights, n: int, seed: int,
                     episode_s: float, propagation: str = 'expectation', progress: bool = False):
    """N MPC episodes toward random reachable goals via the reaching evaluator.
    Returns (ReachingResult, TransitionDataset of the visited transitions, env steps)."""
    from mbrl_ros.core.evaluation.reaching import evaluate_reaching
    agent = MpcAgent(robot, bundle, planner, weights, propagation=propagation, dt=bundle.dt, seed=seed)
    records = []
    # Data episodes start from random configurations (coverage), not chained like the evaluations.
    res = evaluate_reaching(agent, robot, n_goals=n, seed=seed, settle_s=episode_s, dt=bundle.dt,
                            progress=progress, start='random', goal_s=episode_s,
                            on_step=lambda ep, q, qd, goal, u: records.append((ep, q.copy(), qd.copy(), u.copy())))
    meta = {'source': 'mpc', 'goal_seed': int(seed), 'planner': json.dumps(dataclasses.asdict(planner))}
    data = _episodes_to_dataset(records, robot, bundle.dt, meta)
    return res, data, len(records)


def learn(cfg: LearnConfig, out_dir, work_dir=None, command: str = '', progress: bool = True,
          log=print) -> dict:
    """Run the loop; the final bundle is written to `out_dir`, iteration bundles to `work_dir`
    (default: `<out_dir>/../.<name>.learn`; removed at the end unless given). Returns the report."""
    from mbrl_ros.core.bundle import load_bundle, meta_text
    from mbrl_ros.core.data.collect import collect_sim
    from mbrl_ros.core.data.dataset import TransitionDataset
    from mbrl_ros.core.dynamics.ensemble import EnsembleConfig
    from mbrl_ros.core.dynamics.pipeline import train_bundle
    from mbrl_ros.core.dynamics.train import TrainConfig
    from mbrl_ros.core.robot import RobotModel

    errs = cfg.errors()
    if errs:
        raise ValueError('invalid learn settings: ' + '; '.join(errs))
    t_start = time.perf_counter()
    robot = RobotModel.load(cfg.robot)
    out_dir = Path(out_dir)
    keep_work = work_dir is not None
    work = Path(work_dir) if work_dir else out_dir.parent / f'.{out_dir.name}.learn'
    work.mkdir(parents=True, exist_ok=True)
    planner = planner_config(**cfg.planner)
    weights = CostWeights(**cfg.weights).validated()
    model_cfg = EnsembleConfig(state_dim=2 * robot.dof, action_dim=robot.dof, ensemble_size=cfg.ensemble_size,
                               hidden_sizes=list(cfg.hidden_sizes), activation=cfg.activation,
                               angle_features=robot.dof, affine_inputs=cfg.affine_inputs,
                               raw_angles=cfg.raw_angles, invariant_joints=list(cfg.invariant_joints))
    train_cfg = TrainConfig(max_epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, patience=cfg.patience,
                            nll_beta=cfg.nll_beta, weight_decay=cfg.weight_decay, seed=cfg.seed,
                            max_time_s=cfg.max_train_time_s,
                            threads=cfg.threads)

    log(f'learn {robot.name}: {cfg.init_transitions} random + {cfg.iterations} x {cfg.episodes_per_iteration} MPC '
        f'episodes ({cfg.planned_env_steps()} environment steps), ensemble {cfg.ensemble_size} x {cfg.hidden_sizes}')
    derived = {}
    amplitude = cfg.amplitude
    if amplitude is None:
        from mbrl_ros.core.data.exploration import calibrate_amplitude
        derived['exploration_amplitude'] = calibrate_amplitude(robot, seed=cfg.seed)
        amplitude = derived['exploration_amplitude']['amplitude']
        log(f'exploration amplitude from {robot.name}\'s dynamics: {amplitude} x effort_max '
            f'({derived["exploration_amplitude"]["target"]}; reached {derived["exploration_amplitude"]["reached_fraction"]})')
    random_data = collect_sim(robot, cfg.init_transitions, exploration=cfg.exploration, seed=cfg.seed,
                              episode_len=cfg.episode_len, amplitude=amplitude, progress=progress)
    on_policy: list = []
    env_steps = {'random': int(cfg.init_transitions), 'mpc': 0}
    stats: list[IterationStats] = []
    source_random = (f'collect_sim(robot={robot.name}, n={cfg.init_transitions}, exploration={cfg.exploration}, '
                     f'amplitude={amplitude}, episode_len={cfg.episode_len}, seed={cfg.seed})')
    bundle = None
    for k in range(cfg.iterations + 1):
        final = k == cfg.iterations
        data = TransitionDataset.concat([random_data] + on_policy) if on_policy else random_data
        n_mpc = int(sum(len(d) for d in on_policy))
        source = source_random + (f' + {n_mpc} on-policy MPC transitions ({k} iterations)' if n_mpc else '')
        dest = out_dir if final else work / f'iter{k}'
        log(f'iteration {k}: training on {len(data)} transitions ({len(random_data)} random, {n_mpc} on-policy)')
        # random_data comes first in `data`: its episodes are ids 0 .. R-1 (TransitionDataset.concat)
        calib = np.arange(random_data.num_episodes) if cfg.calibrate_on == 'exploration' else None
        out = train_bundle(data, robot, dest, model_cfg, train_cfg, source=source, command=command,
                           progress=progress, log=log, calibration_episodes=calib,
                           calibration_data='the random exploration')
        bundle = load_bundle(dest, robot, intra_op_threads=1)
        ev = out['metrics']
        st = IterationStats(k, len(random_data), n_mpc, float(out['result'].wall_time_s), int(out['result'].epochs_run),
                            float(ev.get('one_step_nrmse', float('nan'))),
                            float(ev.get('open_loop_ee_error_median_m', float('nan'))))
        if not final and cfg.episodes_per_iteration:
            t0 = time.perf_counter()
            # Goals of iteration k: their own seed, disjoint from the evaluation's (eval_seed).
            res, new, steps = run_mpc_episodes(robot, bundle, planner, weights, cfg.episodes_per_iteration,
                                               seed=cfg.seed * 1000 + 100 + k, episode_s=cfg.episode_s,
                                               propagation=cfg.propagation, progress=progress)
            s = res.summary()
            st.episodes, st.success_rate = s['episodes'], s['success_rate']
            st.final_distance_median_m = s['final_distance_m']['median']
            st.plan_ms_p50, st.plan_ms_p99 = s['step_ms']['p50'], s['step_ms']['p99']
            st.mpc_wall_s = time.perf_counter() - t0
            on_policy.append(new)
            env_steps['mpc'] += steps
            log(f'iteration {k}: MPC success {st.success_rate:.0%} on {st.episodes} goals (median final distance '
                f'{st.final_distance_median_m * 100:.1f} cm), plan p50/p99 {st.plan_ms_p50:.1f}/{st.plan_ms_p99:.1f} ms')
        stats.append(st)

    evaluation = None
    if cfg.eval_goals:
        eval_cfg = planner_config(PlannerConfig(), **{'time_budget_ms': cfg.eval_budget_ms, **cfg.eval_planner})
        evaluation = closed_loop_eval(robot, bundle, eval_cfg, weights, cfg.eval_goals, cfg.eval_seed,
                                      cfg.propagation, progress)
        log(f'closed loop ({cfg.eval_goals} goals, budget {cfg.eval_budget_ms} ms): success '
            f'{evaluation["success_rate"]:.0%}, plan p50/p99 {evaluation["plan_ms"]["p50"]:.1f}/'
            f'{evaluation["plan_ms"]["p99"]:.1f} ms')

    distillation = None
    if cfg.distill_rounds:
        distillation = _distill(cfg, bundle, robot, out_dir, command, progress, log)
        env_steps['distill'] = distillation.pop('env_steps')

    report = {
        'robot': robot.name, 'seed': cfg.seed, 'command': command, 'config': cfg.to_dict(),
        'retraining': 'from scratch each iteration (normalisers refit on the grown dataset)',
        'environment_steps': {**env_steps, 'training_data_total': env_steps['random'] + env_steps['mpc']},
        'data_size_by_source': {'random_exploration': len(random_data),
                                'on_policy_mpc': int(sum(len(d) for d in on_policy))},
        'training_wall_time_s': round(sum(s.train_wall_s for s in stats), 1),
        'iterations': [s.as_dict() for s in stats],
        'closed_loop': evaluation,
        'distillation': distillation,
        'wall_time_s': round(time.perf_counter() - t_start, 1),
        'derived': derived,   # settings derived from the arm rather than given
    }
    _write_learning_section(out_dir, report)
    (out_dir / REPORT_YAML).write_text(meta_text(_plain(report)))
    try:
        plot_report(stats, out_dir / REPORT_PNG, title=f'{robot.name}: {out_dir.name} (seed {cfg.seed})',
                    closed_loop=evaluation)
    except Exception as exc:  # a plotting failure must not lose a trained bundle
        log(f'(no report plot: {exc!r})')
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def closed_loop_eval(robot, bundle, planner: PlannerConfig, weights: CostWeights, n_goals: int, seed: int,
                     propagation: str = 'expectation', progress: bool = False) -> dict:
    """The reaching benchmark with the MPC as in the node (wall-clock budget): success, distances,
    per-plan wall time p50/p99 and the planner iterations that fitted."""
    from mbrl_ros.core.evaluation.reaching import evaluate_reaching
    agent = MpcAgent(robot, bundle, planner, weights, propagation=propagation, dt=bundle.dt, seed=seed)
    t0 = time.perf_counter()
    res = evaluate_reaching(agent, robot, n_goals=n_goals, seed=seed, dt=bundle.dt, progress=progress)
    s = res.summary()
    it = np.asarray(agent.iterations)
    return {'goals': n_goals, 'seed': seed, 'success_rate': s['success_rate'],
            'final_distance_m': s['final_distance_m'], 'plan_ms': s['step_ms'],
            'iterations_mean': float(it.mean()) if len(it) else 0.0, 'no_command': agent.no_command,
            'failures': s['failures'], 'planner': dataclasses.asdict(planner), 'wall_s': time.perf_counter() - t0}


def _distill_defaults() -> tuple[dict, dict]:
    """DistillConfig's expert (less its horizon and budget: the loop's planner keeps those) and cost."""
    from mbrl_ros.core.policy.distill import DistillConfig
    d = DistillConfig()
    return {k: v for k, v in d.expert.items() if k not in ('horizon', 'time_budget_ms')}, dict(d.expert_cost)


def _distill_config(cfg: LearnConfig):
    from mbrl_ros.core.policy.distill import DistillConfig
    return DistillConfig(rounds=cfg.distill_rounds, episodes_per_round=cfg.distill_episodes_per_round,
                         episode_s=cfg.episode_s, eval_goals=cfg.distill_eval_goals, seed=cfg.seed,
                         val_goals=cfg.distill_val_goals,
                         epochs_per_round=cfg.distill_epochs, hidden_sizes=list(cfg.distill_hidden),
                         threads=cfg.threads, label_every=cfg.distill_label_every, output=cfg.distill_output,
                         expert={**cfg.planner, **cfg.distill_expert, 'time_budget_ms': 0.0},
                         expert_cost=dict(cfg.distill_expert_cost))


def _distill(cfg: LearnConfig, bundle, robot, out_dir, command, progress, log) -> dict:
    from mbrl_ros.core.policy.distill import distill, save_to_bundle
    dc = _distill_config(cfg)
    result = distill(bundle, robot, dc, progress=progress, log=log)
    section = save_to_bundle(result, out_dir, robot, command=command, log=log)
    steps = cfg.distill_rounds * cfg.distill_episodes_per_round * cfg.steps_per_episode(bundle.dt)
    return {'success_rate': section['metrics']['success_rate'], 'eval_goals': cfg.distill_eval_goals,
            'labels': int(result.data_size), 'wall_time_s': round(result.seconds, 1), 'env_steps': steps}


def _write_learning_section(out_dir: Path, report: dict) -> None:
    """Add `learning:` (data per source, per-iteration metrics, closed loop) to bundle.yaml.
    bundle.yaml carries no sha256 of itself, so editing it keeps the bundle valid."""
    from mbrl_ros.core.bundle import update_bundle_meta
    sections = {'command': report['command']} if report['command'] else {}   # else the bundle's own
    sections['seed'] = report['seed']
    sections['learning'] = _plain({k: report[k] for k in ('retraining', 'environment_steps', 'data_size_by_source',
                                                         'training_wall_time_s', 'iterations', 'closed_loop',
                                                         'distillation', 'derived')})
    update_bundle_meta(out_dir, sections)


def _plain(x):
    """numpy scalars / tuples -> plain YAML-safe values, floats to 6 significant digits."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(f'{float(x):.6g}')
    return x


def plot_report(stats: list, path, title: str = '', closed_loop: Optional[dict] = None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ks = [s.iteration for s in stats]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ok = [(s.iteration, s.success_rate) for s in stats if s.success_rate is not None]
    if ok:
        ax[0].plot([k for k, _ in ok], [100 * v for _, v in ok], 'o-', label='MPC episodes success')
    ax[0].set_xlabel('iteration (model trained on the data so far)')
    ax[0].set_ylabel('success [%] (EE within 2 cm)')
    if closed_loop:
        ax[0].plot([ks[-1]], [100 * closed_loop['success_rate']], 's', color='C3',
                   label=f'final model, {closed_loop["goals"]} goals, '
                         f'{closed_loop["planner"]["time_budget_ms"]:g} ms budget')
    ax[0].set_ylim(-5, 105)
    ax[0].set_xticks(ks)
    ax[0].grid(alpha=0.3)
    ax[0].legend(loc='upper left', fontsize=8)
    ax[1].bar(ks, [s.data_random for s in stats], label='random exploration')
    ax[1].bar(ks, [s.data_on_policy for s in stats], bottom=[s.data_random for s in stats], label='on-policy MPC')
    ax[1].set_xticks(ks)
    ax[1].set_xlabel('iteration')
    ax[1].set_ylabel('training transitions')
    ax[1].legend(loc='upper left')
    ax[1].grid(alpha=0.3, axis='y')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
