"""A classical baseline: operational-space PD to an end-effector position goal.

    u = Jᵀ (Kp·e − Kd·ẋ) − kq·qd,   e = goal − fk(q),   ẋ = J·qd,   clipped to ±effort_max

on top of the arm's own gravity compensation (the sim's and a torque-controlled arm's effort
interface add g(q); this law adds nothing for gravity). J is the 3×dof translational Jacobian of
the end-effector site (MuJoCo `mj_jacSite` on the robot's MJCF); kq damps the joint motion the task
does not see (the null space of a redundant arm). No model is learned: it is what any lab can run
on day one, the yardstick for the MPC and the distilled policy.

Gains (Kp N/m, Kd N·s/m, kq N·m·s/rad, scalars) come from, in order:
  1. `config/osc_pd.yaml`, per built-in robot (name and dof match), tuned once by `tune_gains`
     (`mbrl-ros bench osc-tune`): a coarse sweep on chained goals of the reaching benchmark with a
     seed other than the benchmark seeds;
  2. else `default_gains(robot)`, a rule from the arm's own description (see there).

numpy + mujoco only (no ROS, no torch): the node and the benches share it.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import mujoco
import numpy as np

from mbrl_ros.core.robot import RobotModel

GAINS_FILE = 'osc_pd.yaml'
# The rule's constants (default_gains): 1 Hz task-space natural frequency, critically damped,
# a 10 cm error may ask at most the effort limit of any joint, joint damping 5 % of τ_max/qd_max.
RULE_FREQUENCY_HZ = 1.0
RULE_DAMPING_RATIO = 1.0
RULE_SATURATION_ERROR_M = 0.10
RULE_JOINT_DAMPING_FRACTION = 0.05
RULE_CONFIGS = 32              # typical configurations the rule looks at (arm_inertia)
RULE_CONTROL_PERIOD_S = 0.02   # the stack's 50 Hz
# 0.5: arm7, arm3, KUKA iiwa, Franka Panda at 93-100 % of 15 chained goals (seed 77); at 1.0 iiwa's
# and xArm6's light wrists ring (docs/your_arm.md, "Derived, not tuned").
RULE_MAX_STEP = 0.5


@dataclass(frozen=True)
class OscGains:
    kp: float   # task-space stiffness [N/m]
    kd: float   # task-space damping [N·s/m]
    kq: float   # joint damping [N·m·s/rad]

    def validated(self) -> 'OscGains':
        for k, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f'osc_pd gain {k} must be a finite number >= 0, got {v!r}')
        return OscGains(float(self.kp), float(self.kd), float(self.kq))


class TaskJacobian:
    """End-effector position and its translational Jacobian at q (own MjData: one per user/thread)."""

    def __init__(self, robot: RobotModel):
        self.robot = robot
        self.model = robot.model
        self.data = mujoco.MjData(self.model)
        self._jacp = np.zeros((3, self.model.nv))

    def __call__(self, q) -> tuple[np.ndarray, np.ndarray]:
        """(x (3,), J (3, dof)) at q."""
        r, m, d = self.robot, self.model, self.data
        d.qpos[r.qpos_adr] = q
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)   # mj_jac measures from the subtree CoM: needs the CoM positions
        mujoco.mj_jacSite(m, d, self._jacp, None, r.ee_site_id)
        return d.site_xpos[r.ee_site_id].copy(), self._jacp[:, r.dof_adr].copy()

    def mass_matrix(self, q) -> np.ndarray:
        """Joint-space inertia M(q) (dof, dof) of the nominal arm."""
        r, m, d = self.robot, self.model, self.data
        d.qpos[r.qpos_adr] = q
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        full = np.zeros((m.nv, m.nv))
        mujoco.mj_fullM(m, d, full)
        return full[np.ix_(r.dof_adr, r.dof_adr)]


class OscPd:
    """The controller: `OscPd(robot)(q, qd, goal) -> effort (dof,)`; `reset()` is a no-op (no state)."""

    def __init__(self, robot: RobotModel | str = 'arm7', gains: Optional[OscGains] = None):
        self.robot = robot if isinstance(robot, RobotModel) else RobotModel.load(robot)
        self.gains = (gains or shipped_gains(self.robot)).validated()
        self.jacobian = TaskJacobian(self.robot)

    def set_gains(self, gains: OscGains) -> None:
        self.gains = gains.validated()

    def reset(self) -> None:
        pass

    def __call__(self, q, qd, goal) -> np.ndarray:
        r, g = self.robot, self.gains
        q, qd, goal = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (q, qd, goal))
        if q.shape != (r.dof,) or qd.shape != (r.dof,) or goal.shape != (3,):
            raise ValueError(f'osc_pd: expected q, qd of {r.dof} and a 3-vector goal, got {q.size}, {qd.size}, '
                             f'{goal.size}')
        x, J = self.jacobian(q)
        force = g.kp * (goal - x) - g.kd * (J @ qd)
        u = J.T @ force - g.kq * qd
        return np.clip(u, -r.effort_max, r.effort_max)

    act = __call__


# ---- gains ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmInertia:
    """What the gain rule needs of the arm's inertia, over RULE_CONFIGS typical configurations
    (the middle 70 % of each joint range, a fixed seed), not at home: a URDF's home is often the
    arm stretched straight up, a singular pose where the apparent mass is unbounded."""
    heavy_kg: float        # median over configurations of the largest apparent-mass eigenvalue
    light_kg: float        # smallest apparent-mass eigenvalue seen (the lightest task direction)
    lightest_joint: float  # smallest eigenvalue of M(q) seen [kg m^2] (a light wrist)
    column_norms: np.ndarray   # median ‖∂x/∂q_j‖ per joint [m/rad]


def arm_inertia(robot: RobotModel, n_configs: int = None, seed: int = 0) -> ArmInertia:
    jac = TaskJacobian(robot)
    rng = np.random.default_rng(seed)
    lo, span = robot.q_min, robot.q_max - robot.q_min
    heavy, light, joint, cols = [], [], [], []
    for _ in range(n_configs or RULE_CONFIGS):
        q = lo + span * (0.15 + 0.7 * rng.random(robot.dof))
        _, J = jac(q)
        M = jac.mass_matrix(q)
        inv = np.linalg.eigvalsh(J @ np.linalg.solve(M, J.T))   # eigenvalues of Λ⁻¹, ascending
        heavy.append(1.0 / max(inv[0], 1e-9))
        light.append(1.0 / inv[-1])
        joint.append(np.linalg.eigvalsh(M)[0])
        cols.append(np.linalg.norm(J, axis=0))
    return ArmInertia(float(np.median(heavy)), float(np.min(light)), float(np.min(joint)),
                      np.median(cols, axis=0))


def default_gains(robot: RobotModel, control_period_s: float = RULE_CONTROL_PERIOD_S) -> OscGains:
    """Gains from the arm's own description, for an arm not in config/osc_pd.yaml.

    With Λ = (J M⁻¹ Jᵀ)⁻¹ the end effector's apparent mass and λ the median of its largest
    eigenvalue over typical configurations (kg, the heaviest direction; see ArmInertia):
      Kp = λ·ω², ω = 2π·RULE_FREQUENCY_HZ, but at most min_j τ_max_j / (‖∂x/∂q_j‖ · 10 cm), so that
           a 10 cm error asks no joint more than its effort limit (a light or weak arm gets softer);
      Kd = 2·ζ·√(λ·Kp) (ζ = 1, critical damping along that direction);
      kq = 5 % of the mean τ_max/qd_max (damps null-space motion).
    Then the sampled-data cap: the command is held for a whole control period T, so no closed-loop
    mode may be faster than the period allows (each decays by at most RULE_MAX_STEP of itself per
    period): Kd ≤ s·λ_light/T, Kp ≤ s²·λ_light/T², kq ≤ s·m_light/T, with λ_light the lightest task
    direction and m_light the lightest joint-space direction. A URDF without rotor inertia has
    wrists of 1e-3 kg·m² (KUKA iiwa in pybullet_data): the uncapped kq alone made those joints
    diverge at 50 Hz (1.5·0.02/0.001 = 30 per period).
    """
    arm = arm_inertia(robot)
    lam, s, T = arm.heavy_kg, RULE_MAX_STEP, float(control_period_s)
    omega = 2.0 * np.pi * RULE_FREQUENCY_HZ
    col = np.maximum(arm.column_norms, 1e-6)
    kp = min(lam * omega ** 2, float(np.min(robot.effort_max / (col * RULE_SATURATION_ERROR_M))))
    kd = 2.0 * RULE_DAMPING_RATIO * np.sqrt(lam * kp)
    kq = RULE_JOINT_DAMPING_FRACTION * float(np.mean(robot.effort_max / robot.qd_max))
    kp = min(kp, s ** 2 * arm.light_kg / T ** 2)
    kd = min(kd, s * arm.light_kg / T)
    kq = min(kq, s * arm.lightest_joint / T)
    return OscGains(float(kp), float(kd), float(kq))


def load_gains_file(path=None) -> dict:
    """{robot name: entry dict} from config/osc_pd.yaml (or `path`); {} when there is none."""
    import yaml

    from mbrl_ros.resources import find_resource
    try:
        p = find_resource('config', GAINS_FILE) if path is None else path
        data = yaml.safe_load(open(p).read()) or {}
    except FileNotFoundError:
        return {}
    return dict(data.get('robots', {}))


def shipped_gains(robot: RobotModel, path=None) -> OscGains:
    """The tuned gains of config/osc_pd.yaml for this robot (name and dof must match), else the rule."""
    entry = load_gains_file(path).get(robot.name)
    if entry and int(entry.get('dof', -1)) == robot.dof:
        return OscGains(entry['kp'], entry['kd'], entry['kq']).validated()
    return default_gains(robot)


_HEADER = """\
# Operational-space PD baseline (mbrl_ros/core/baseline.py): u = J^T (kp e - kd J qd) - kq qd on top
# of the arm's gravity compensation, clipped to the effort limits. kp [N/m], kd [N s/m], kq [N m s/rad].
# Tuned once per built-in arm by `mbrl-ros bench osc-tune --robot <arm> --write` (a coarse grid on
# chained goals of the reaching benchmark, nominal sim, a seed off the benchmark seeds); `sweep`
# records the grid. An arm not listed here (or whose dof differs) gets baseline.default_gains(robot).
# The mpc_controller node's osc_kp/osc_kd/osc_kq parameters default to these values (-1 = from here).
"""


def write_gains(robot: RobotModel, gains: OscGains, sweep: dict, path=None):
    """Store `gains` for `robot` in config/osc_pd.yaml (the package's, or `path`); other robots kept."""
    import yaml

    from mbrl_ros.resources import package_share
    path = package_share() / 'config' / GAINS_FILE if path is None else path
    robots = load_gains_file(path) if os.path.exists(path) else {}
    robots[robot.name] = {'dof': robot.dof, 'kp': float(gains.kp), 'kd': float(gains.kd), 'kq': float(gains.kq),
                          'sweep': {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in sweep.items()}}
    with open(path, 'w') as f:
        f.write(_HEADER + yaml.safe_dump({'robots': robots}, sort_keys=False, default_flow_style=None))
    return path


def gains_source(robot: RobotModel, path=None) -> str:
    entry = load_gains_file(path).get(robot.name)
    return GAINS_FILE if entry and int(entry.get('dof', -1)) == robot.dof else 'default_gains rule'


# ---- tuning ---------------------------------------------------------------------------------
TUNE_SEED = 77          # not a benchmark seed (1000/2000/3000)
TUNE_KP = (100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)
TUNE_ZETA = (0.5, 0.7, 1.0, 1.5)     # Kd = 2·ζ·√(λ·Kp), λ as in default_gains
TUNE_KQ = (0.0, 0.5, 2.0)


def apparent_mass(robot: RobotModel) -> float:
    """λ: the end effector's apparent mass in its heaviest direction, median over typical configurations [kg]."""
    return arm_inertia(robot).heavy_kg


def score(summary: dict) -> tuple:
    """Larger is better: success at 3 s, then settled fraction, then the p90 final distance."""
    return (summary['success_rate'], summary.get('settled_fraction', 0.0), -summary['final_distance_m']['p90'])


def tune_gains(robot: RobotModel | str, n_goals: int = 30, seed: int = TUNE_SEED, kp: Iterable[float] = TUNE_KP,
               zeta: Iterable[float] = TUNE_ZETA, kq: Iterable[float] = TUNE_KQ, progress=None) -> tuple[OscGains, list]:
    """Coarse grid sweep on chained goals of the reaching benchmark (ROS-free, nominal sim).
    Returns (best gains, rows [{'kp','kd','kq','zeta', **summary}] in grid order). `progress(row)`
    sees each row as it is done."""
    from mbrl_ros.core.evaluation.reaching import evaluate_reaching
    from mbrl_ros.core.sim import SimArm
    robot = robot if isinstance(robot, RobotModel) else RobotModel.load(robot)
    lam = apparent_mass(robot)
    sim = SimArm(robot)
    rows, best, best_score = [], None, None
    for p, z, k in itertools.product(kp, zeta, kq):
        gains = OscGains(p, round(2.0 * z * np.sqrt(lam * p), 1), k).validated()
        res = evaluate_reaching(OscPd(robot, gains), robot, n_goals=n_goals, seed=seed, sim=sim)
        with np.errstate(invalid='ignore'):   # the settle-time median over never-settled (inf) goals
            s = res.summary()
        row = {'kp': gains.kp, 'kd': gains.kd, 'kq': gains.kq, 'zeta': float(z), **s}
        rows.append(row)
        if progress is not None:
            progress(row)
        if best_score is None or score(s) > best_score:
            best, best_score = gains, score(s)
    return best, rows
