"""MuJoCo simulation of a torque-controlled arm, as a robot's low-level controller presents it.

The command interfaces mirror ros2_control's forward command controllers:
  * 'effort': joint torques in Nm *on top of* gravity compensation (as Franka/Kinova torque
    interfaces do), clamped to the effort limits;
  * 'velocity': joint velocity targets (clamped to the velocity limits) tracked by a velocity
    servo tau = kv (qd_ref - qd), plus gravity compensation.
In both, the total actuator torque (gravity compensation included) is clamped to the joint's
effort limit, as a real drive saturates.

Gravity compensation uses MuJoCo's own `gravcomp` routed through the actuators
(`actuatorgravcomp`), so g(q) is exact at every physics step and the whole control period runs
inside one `mj_step(nstep=n)` call: this is also the data-collection path and must be fast.
"""
from __future__ import annotations

import os
import time

import mujoco
import numpy as np

from mbrl_ros.core.robot import RobotModel

INTERFACES = ('effort', 'velocity')
_BADQACC = int(mujoco.mjtWarning.mjWARN_BADQACC)


PAYLOAD_BODY = 'mbrl_payload'
PAYLOAD_RADIUS_M = 0.02
MAX_PAYLOAD_KG = 100.0


def _add_payload_body(spec, robot: RobotModel) -> None:
    """A massless body welded at the end-effector site, without gravity compensation: SimArm.set_payload
    gives it its mass. No geom: it never collides."""
    site = spec.site(robot.ee_site)
    parent = site.parent
    body = parent.add_body(name=PAYLOAD_BODY, pos=list(site.pos), quat=list(site.quat))
    body.gravcomp = 0.0
    body.mass = 0.0
    body.inertia = [0.0, 0.0, 0.0]
    body.ipos = [0.0, 0.0, 0.0]      # its mass sits at the site (else the compiler places it elsewhere)
    body.iquat = [1.0, 0.0, 0.0, 0.0]
    body.explicitinertial = True


class SimError(RuntimeError):
    """The simulation became numerically unstable (MuJoCo reset its state)."""


def default_velocity_gain(robot: RobotModel) -> np.ndarray:
    """kv such that a velocity error of half the joint's limit asks for its full effort."""
    return robot.effort_max / (0.5 * robot.qd_max)


def _carried_bodies(robot: RobotModel) -> list[int]:
    """The chain's bodies and every body below them (a gripper's welded fingers): a torque-controlled
    arm's own compensation holds the whole arm it carries (Panda's 0.2 kg of fingers, uncompensated,
    left its PD 4 mm below every goal)."""
    m = robot.model
    chain = {int(b) for b in robot.chain_bodies}
    carried = []
    for b in range(1, m.nbody):
        a = b
        while a != 0 and a not in chain:
            a = int(m.body_parentid[a])
        if a != 0:
            carried.append(b)
    return carried


class SimArm:
    def __init__(self, robot: RobotModel | str | os.PathLike = 'arm7', physics_rate_hz: float = 500.0,
                 command_interface: str = 'effort', gravity_compensation: bool = True,
                 state_noise_std: float = 0.0, seed: int = 0, velocity_gain=None,
                 payload_kg: float = 0.0, joint_friction=0.0):
        if not isinstance(robot, RobotModel):
            robot = RobotModel.load(robot)
        if command_interface not in INTERFACES:
            raise ValueError(f'command_interface must be one of {INTERFACES}, got {command_interface!r}')
        if not (np.isfinite(physics_rate_hz) and physics_rate_hz > 0):
            raise ValueError(f'physics_rate_hz must be positive, got {physics_rate_hz}')
        if not state_noise_std >= 0:
            raise ValueError(f'state_noise_std must be >= 0, got {state_noise_std}')
        self.robot = robot
        self.physics_rate_hz = float(physics_rate_hz)
        self.command_interface = command_interface
        self.gravity_compensation = bool(gravity_compensation)
        self.state_noise_std = float(state_noise_std)
        self.seed = int(seed)
        kv = default_velocity_gain(robot) if velocity_gain is None else velocity_gain
        self.velocity_gain = np.broadcast_to(np.asarray(kv, dtype=np.float64), (robot.dof,)).copy()
        self.model = self._compile()
        self.data = mujoco.MjData(self.model)
        self._q_adr = robot.qpos_adr
        self._v_adr = robot.dof_adr
        self._act = robot.actuator_ids
        self._site = robot.ee_site_id
        self._limit = robot.effort_max if command_interface == 'effort' else robot.qd_max
        self._rng = np.random.default_rng(self.seed)
        self._scratch = None
        self.command = np.zeros(robot.dof)
        self.payload_kg = 0.0
        self.joint_friction = np.zeros(robot.dof)
        self._base_friction = self.model.dof_frictionloss[self._v_adr].copy()   # the MJCF's own
        self.set_payload(payload_kg)
        self.set_joint_friction(joint_friction)
        self.reset()

    def _compile(self) -> mujoco.MjModel:
        """The robot's MJCF with the sim's options applied (MjSpec: gravcomp must exist at compile time)."""
        r = self.robot
        spec = r.make_spec()  # names every element: foreign MJCF leaves actuators unnamed
        spec.option.timestep = 1.0 / self.physics_rate_hz
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        for b in _carried_bodies(r):
            spec.body(mujoco.mj_id2name(r.model, mujoco.mjtObj.mjOBJ_BODY, b)).gravcomp = (
                1.0 if self.gravity_compensation else 0.0)
        for name, tau in zip(r.joint_names, r.effort_max):
            j = spec.joint(name)
            j.actgravcomp = True  # gravcomp is the drive's work: it counts against the effort limit
            j.actfrclimited = mujoco.mjtLimited.mjLIMITED_TRUE
            j.actfrcrange = [-tau, tau]
        for a_id, tau, qd, kv in zip(r.actuator_ids, r.effort_max, r.qd_max, self.velocity_gain):
            a = spec.actuator(mujoco.mj_id2name(r.model, mujoco.mjtObj.mjOBJ_ACTUATOR, int(a_id)))
            a.dyntype = mujoco.mjtDyn.mjDYN_NONE
            a.gear = [1.0, 0, 0, 0, 0, 0]  # commands are in joint units (Nm, rad/s)
            a.gaintype = mujoco.mjtGain.mjGAIN_FIXED
            a.gainprm = [0.0] * len(a.gainprm)
            a.biasprm = [0.0] * len(a.biasprm)
            a.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
            a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            a.forcerange = [-tau, tau]
            if self.command_interface == 'effort':
                a.gainprm[0] = 1.0
                a.biastype = mujoco.mjtBias.mjBIAS_NONE
                a.ctrlrange = [-tau, tau]
            else:  # velocity servo: force = kv * ctrl - kv * qd
                a.gainprm[0] = kv
                a.biastype = mujoco.mjtBias.mjBIAS_AFFINE
                a.biasprm[2] = -kv
                a.ctrlrange = [-qd, qd]
        _add_payload_body(spec, r)
        return spec.compile()

    # ---- dynamics the controller does not know about ---------------------------------------
    def set_payload(self, kg: float) -> None:
        """A point mass of `kg` at the end-effector site whose gravity is NOT compensated: the drives'
        gravity compensation keeps the nominal arm, as a real arm's built-in compensation does not know
        the tool it just picked up. Its inertia is real too. Settable at any time (next step on)."""
        kg = float(kg)
        if not (np.isfinite(kg) and 0.0 <= kg <= MAX_PAYLOAD_KG):
            raise ValueError(f'payload_kg must be in [0, {MAX_PAYLOAD_KG:g}] kg, got {kg}')
        b = self.model.body(PAYLOAD_BODY).id
        # A solid 2 cm-radius ball: a point mass with a little inertia (no degenerate body).
        self.model.body_mass[b] = kg
        self.model.body_inertia[b] = 0.4 * kg * PAYLOAD_RADIUS_M ** 2
        self.payload_kg = kg

    def set_joint_friction(self, nm) -> None:
        """Coulomb-like dry friction per joint (MuJoCo `frictionloss`, Nm; a scalar for every joint),
        on top of the MJCF's own. Settable at any time (next step on)."""
        f = np.asarray(nm, dtype=np.float64).reshape(-1)
        f = np.full(self.robot.dof, f[0]) if f.size == 1 else f
        if f.shape != (self.robot.dof,) or not np.all(np.isfinite(f)) or np.any(f < 0) or np.any(f > self.robot.effort_max):
            raise ValueError(f'joint_friction must be one value or {self.robot.dof} values in [0, effort limit] Nm, '
                             f'got {np.asarray(nm).tolist()}')
        self.model.dof_frictionloss[self._v_adr] = self._base_friction + f
        self.joint_friction = f

    # ---- state ---------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def dt(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def q(self) -> np.ndarray:
        return self.data.qpos[self._q_adr].copy()

    @property
    def qd(self) -> np.ndarray:
        return self.data.qvel[self._v_adr].copy()

    @property
    def state(self) -> np.ndarray:
        """s = [q, qd], the learning state layout."""
        return np.concatenate([self.q, self.qd])

    @property
    def applied_effort(self) -> np.ndarray:
        """Total joint torque from the drives in the last step (command + gravity compensation,
        after saturation): what a torque-controlled arm reports as measured effort."""
        return self.data.qfrc_actuator[self._v_adr].copy()

    def gravity_torque(self) -> np.ndarray:
        """g(q) at the current configuration: the bias force at zero velocity (what gravity
        compensation adds; with a payload, its weight too, which the compensation does not add)."""
        if self._scratch is None:
            self._scratch = mujoco.MjData(self.model)
        d = self._scratch
        d.qpos[:] = self.data.qpos
        d.qvel[:] = 0.0
        mujoco.mj_forward(self.model, d)
        return d.qfrc_bias[self._v_adr].copy()

    def observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, qd, effort) as sensors report them: Gaussian noise of `state_noise_std` on q and qd."""
        q, qd = self.q, self.qd
        if self.state_noise_std > 0:
            q = q + self._rng.normal(0.0, self.state_noise_std, q.shape)
            qd = qd + self._rng.normal(0.0, self.state_noise_std, qd.shape)
        return q, qd, self.applied_effort

    def ee_position(self) -> np.ndarray:
        """Ground-truth end-effector position (world frame) at the current state."""
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._site].copy()

    # ---- control ---------------------------------------------------------------------------
    def reset(self, q=None, qd=None) -> None:
        """Back to `q` (default: the robot's home pose) with velocity `qd` (default zero), command zero."""
        r = self.robot
        q = r.home_q if q is None else self._vector(q, 'q')
        qd = np.zeros(r.dof) if qd is None else self._vector(qd, 'qd')
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._q_adr] = q
        self.data.qvel[self._v_adr] = qd
        self.set_command(np.zeros(r.dof))
        mujoco.mj_forward(self.model, self.data)
        # The noise stream is not reseeded: episodes after a reset must not repeat the same noise.

    def set_command(self, cmd) -> None:
        """Hold `cmd` (Nm on top of gravity compensation, or rad/s targets) from the next step on,
        clamped to the limits. Raises ValueError for a wrong length or non-finite values."""
        cmd = self._vector(cmd, 'command')
        self.command = np.clip(cmd, -self._limit, self._limit)
        self.data.ctrl[self._act] = self.command

    def step(self, n: int = 1) -> None:
        """Advance `n` physics steps with the command held."""
        if n <= 0:
            return
        warned = self.data.warning[_BADQACC].number
        mujoco.mj_step(self.model, self.data, nstep=int(n))
        if self.data.warning[_BADQACC].number != warned:
            raise SimError(f'simulation became unstable at t={self.time:.3f}s (MuJoCo reset the state)')

    def _vector(self, v, what: str) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
        if a.shape != (self.robot.dof,):
            raise ValueError(f'{what}: expected {self.robot.dof} values, got {a.size}')
        if not np.all(np.isfinite(a)):
            raise ValueError(f'{what}: non-finite values {a.tolist()}')
        return a


class Pacer:
    """Paces a loop against absolute deadlines: deadline += period each cycle, so sleep overshoot
    and work time never accumulate into drift. More than `resync_after_s` behind (a stall), it
    starts afresh from now instead of racing through the backlog.
    """

    def __init__(self, period_s: float, resync_after_s: float = 0.1, clock=time.monotonic,
                 sleep=time.sleep):
        if not period_s > 0:
            raise ValueError(f'period must be positive, got {period_s}')
        self.period = float(period_s)
        self.resync_after = float(resync_after_s)
        self._clock, self._sleep = clock, sleep
        self.deadline = clock()
        self.resyncs = 0

    def wait(self) -> float | None:
        """Sleep until the next deadline. Returns None, or how far behind (s) it was when it resynced."""
        self.deadline += self.period
        delay = self.deadline - self._clock()
        if delay > 0:
            self._sleep(delay)
            return None
        if -delay > self.resync_after:
            self.resyncs += 1
            self.deadline = self._clock()
            return -delay
        return None  # a little late: run the next cycle at once and catch up
