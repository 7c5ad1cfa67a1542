"""Robot description: joint names, limits and a fast vectorised forward kinematics, all read
from an MJCF file so that another serial arm written to the same conventions works unchanged.
A URDF is converted to such an MJCF first (core/urdf.py: chain base_link -> tip_link, limits from
<limit> and <safety_controller>).

MJCF conventions (see mbrl_ros/robots/arm7.xml):
  * a serial chain of hinge (or slide) joints from the world to the end-effector site;
  * position limits: the joint `range` (limited); an unlimited hinge gets [-pi, pi];
  * velocity limits: `<custom><numeric name="qd_max_<joint>" data="..."/>` (MuJoCo has no such
    field), or one `qd_max_default` numeric for all joints;
  * effort limits: the ctrlrange (times gear) of the actuator driving the joint, else the joint's
    `actuatorfrcrange`;
  * end effector: the site named `ee_site` (or the model's only site);
  * start pose: the keyframe named `home` (else qpos0).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from mbrl_ros.core.urdf import URDFError, is_urdf_text, urdf_to_mjcf

ROBOTS_DIR = Path(__file__).resolve().parent.parent / 'robots'
BUILTIN = ('arm7', 'arm3')
_HINGE = int(mujoco.mjtJoint.mjJNT_HINGE)
_SLIDE = int(mujoco.mjtJoint.mjJNT_SLIDE)


class RobotDescriptionError(ValueError):
    """The MJCF cannot be used as a robot description; the message says what is wrong."""


def builtin_path(name: str) -> Path:
    return ROBOTS_DIR / f'{name}.xml'


def _quat_to_mat(quat: np.ndarray) -> np.ndarray:
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(quat, dtype=np.float64))
    return m.reshape(3, 3)


def _frame_with_z(axis: np.ndarray) -> np.ndarray:
    """A rotation whose third column is the unit `axis`: in its frame a joint turns about z."""
    z = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


@dataclass
class _Rigid:
    """A rigid transform p -> R p + t."""
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __matmul__(self, other: '_Rigid') -> '_Rigid':
        return _Rigid(self.R @ other.R, self.R @ other.t + self.t)

    def inverse(self) -> '_Rigid':
        return _Rigid(self.R.T, -self.R.T @ self.t)


class RobotModel:
    """A serial arm described by an MJCF or a URDF file (or URDF/MJCF text, as the
    robot_description parameter carries it). Use `RobotModel.load(name_or_path)`.

    URDF: the chain from `base_link` to `tip_link` (defaults: the root, mounted links skipped, and
    the last link of the single serial chain) is converted by core/urdf.py; the end effector is the
    tip link frame plus `ee_offset` (m, in that frame). `package_paths` ({package: directory})
    loads the meshes as visual geoms; without it none are read. `notes` says what was dropped or
    assumed (for one log line at start).
    """

    def __init__(self, mjcf_path: str | os.PathLike | None, name: str | None = None,
                 ee_site: str = 'ee_site', *, base_link: str | None = None, tip_link: str | None = None,
                 ee_offset=None, package_paths: dict | None = None, xml: str | None = None):
        if xml is None:
            self.mjcf_path = str(Path(mjcf_path).resolve())
            try:
                text = Path(self.mjcf_path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise RobotDescriptionError(f'cannot read robot description {self.mjcf_path}: {exc}') from exc
        else:
            self.mjcf_path, text = '<robot_description>', str(xml)
        self.notes: list[str] = []
        self.format = 'urdf' if is_urdf_text(text) else 'mjcf'
        fingerprint = text
        if self.format == 'urdf':
            try:
                u = urdf_to_mjcf(text, self.mjcf_path, base_link=base_link, tip_link=tip_link,
                                 ee_offset=ee_offset, package_paths=package_paths)
            except URDFError as exc:
                raise RobotDescriptionError(str(exc)) from None
            self._xml, self._file = u.mjcf, None
            self.notes += u.notes
            ee_site = 'ee_site'
            # the chain and tool point are part of the model a bundle was trained on
            off = 'none' if ee_offset is None else ' '.join(f'{float(x):.9g}' for x in np.ravel(ee_offset))
            fingerprint += f'\n{u.base_link}\n{u.tip_link}\n{off}'
            name = name or u.name
        else:
            for what, v in (('base_link', base_link), ('tip_link', tip_link), ('ee_offset', ee_offset)):
                if v is not None:
                    raise RobotDescriptionError(
                        f'{self.mjcf_path}: {what} applies to a URDF; in an MJCF the end effector is a '
                        f'<site> (ee_site:=<name>)')
            self._xml, self._file = (text, None) if xml is not None else (None, self.mjcf_path)
        self.description_hash = hashlib.sha256(fingerprint.encode()).hexdigest()
        try:
            spec = self.make_spec()
            self.model = spec.compile()
        except RobotDescriptionError:
            raise
        except Exception as exc:  # mujoco raises ValueError with the parser's message
            raise RobotDescriptionError(f'cannot load {self.format.upper()} {self.mjcf_path}: {exc}') from exc
        m = self.model
        self.timestep, self.integrator = float(spec.option.timestep), mujoco.mjtIntegrator(spec.option.integrator).name
        self.name = name or mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_MODEL, 0) or Path(self.mjcf_path).stem
        self.ee_site = self._find_site(ee_site)
        self.ee_site_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, self.ee_site)
        self.chain_bodies = self._chain(m.site_bodyid[self.ee_site_id])
        self.joint_ids = self._chain_joints()
        self.joint_names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) for j in self.joint_ids]
        self.dof = len(self.joint_ids)
        self.qpos_adr = np.array([m.jnt_qposadr[j] for j in self.joint_ids])
        self.dof_adr = np.array([m.jnt_dofadr[j] for j in self.joint_ids])
        self._read_limits()
        self._build_fk()

    def make_spec(self) -> mujoco.MjSpec:
        """A fresh MjSpec of the description (the simulator edits it before compiling), with every
        body, joint and actuator named: MJCF from elsewhere often leaves them unnamed, and the
        sim, /joint_states and bundles address them by name."""
        spec = mujoco.MjSpec.from_file(self._file) if self._file else mujoco.MjSpec.from_string(self._xml)
        named = []
        for kind, elems, stem in (('body', spec.bodies, 'body'), ('joint', spec.joints, 'joint'),
                                  ('actuator', spec.actuators, 'actuator')):
            taken = {e.name for e in elems if e.name}
            for i, e in enumerate(elems):
                if e.name:
                    continue
                base = f'{e.parent.name}_joint' if kind == 'joint' and e.parent.name else (
                    f'{e.target}_motor' if kind == 'actuator' and e.target else f'{stem}{i}')
                n, k = base, 1
                while n in taken:
                    n, k = f'{base}_{k}', k + 1
                e.name = n
                taken.add(n)
                if kind != 'body':
                    named.append(n)
        if named and not getattr(self, '_named_noted', False):
            self.notes.append(f'unnamed MJCF elements named: {", ".join(named)}')
            self._named_noted = True
        return spec

    def describe(self) -> str:
        """One line: what the model is and what was dropped or assumed while loading it."""
        extra = f'; {"; ".join(self.notes)}' if self.notes else ''
        return (f'robot {self.name!r} ({self.format.upper()} {self.mjcf_path}): {self.dof} joints '
                f'{", ".join(self.joint_names)}, end effector {self.ee_site!r}{extra}')

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | os.PathLike = 'arm7', ee_site: str = 'ee_site', *,
             base_link: str | None = None, tip_link: str | None = None, ee_offset=None,
             package_paths: dict | None = None) -> 'RobotModel':
        """A built-in robot ('arm7', 'arm3'), an MJCF or URDF file path, or the description's XML
        text itself (what a robot_description parameter holds)."""
        s = str(name_or_path)
        kw = dict(ee_site=ee_site, base_link=base_link, tip_link=tip_link, ee_offset=ee_offset,
                  package_paths=package_paths)
        if s in BUILTIN:
            return cls(builtin_path(s), name=s, **kw)
        if s.lstrip().startswith('<'):
            return cls(None, xml=s, **kw)
        p = Path(s).expanduser()
        if not p.is_file():
            raise RobotDescriptionError(
                f'unknown robot {s!r}: not a built-in ({", ".join(BUILTIN)}) and no such MJCF, URDF or '
                'robot YAML file')
        if p.suffix.lower() in ('.yaml', '.yml'):
            return cls._from_yaml(p, kw)
        return cls(p, **kw)

    ROBOT_YAML_KEYS = ('description', 'base_link', 'tip_link', 'ee_offset', 'ee_site', 'package_paths')

    @classmethod
    def _from_yaml(cls, path: Path, kw: dict) -> 'RobotModel':
        """A robot YAML: the description file plus the options a CLI `--robot` cannot carry, e.g.
            description: franka_panda/panda.urdf   # relative to this file
            tip_link: panda_hand
            ee_offset: [0, 0, 0.1034]
        Explicit arguments win over the file's values."""
        import yaml
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RobotDescriptionError(f'cannot read robot YAML {path}: {exc}') from exc
        bad = sorted(set(d) - set(cls.ROBOT_YAML_KEYS)) if isinstance(d, dict) else ['(not a mapping)']
        if bad or 'description' not in d:
            raise RobotDescriptionError(
                f'{path}: a robot YAML maps {", ".join(cls.ROBOT_YAML_KEYS)} (description required: the '
                f'URDF or MJCF file, relative to the YAML); ' + (f'unknown: {bad}' if bad else 'no description'))
        desc = Path(str(d['description'])).expanduser()
        desc = desc if desc.is_absolute() else path.parent / desc
        pkgs = d.get('package_paths')
        if isinstance(pkgs, dict):
            pkgs = {k: str(v if Path(str(v)).is_absolute() else path.parent / str(v)) for k, v in pkgs.items()}
        merged = {k: d.get(k) for k in ('base_link', 'tip_link', 'ee_offset')}
        merged.update({'ee_site': d.get('ee_site') or 'ee_site', 'package_paths': pkgs})
        merged.update({k: v for k, v in kw.items() if v is not None and not (k == 'ee_site' and v == 'ee_site')})
        if not desc.is_file():
            raise RobotDescriptionError(f'{path}: description {str(d["description"])!r} -> {desc}: no such file')
        return cls(desc, **merged)

    def _find_site(self, wanted: str) -> str:
        m = self.model
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_SITE, i) for i in range(m.nsite)]
        if wanted in names:
            return wanted
        if len(names) == 1 and names[0]:
            return names[0]
        raise RobotDescriptionError(
            f'{self.mjcf_path}: no end-effector site {wanted!r} (sites: {names or "none"}): '
            + (f'set ee_site to one of them (ee_site:={names[0]})' if names else
               'add <site name="ee_site" pos="0 0 0"/> to the end-effector body (pos: the tool point)'))

    def _chain(self, tip_body: int) -> list[int]:
        """Bodies from the first below the world down to `tip_body`."""
        chain = []
        b = int(tip_body)
        while b != 0:
            chain.append(b)
            b = int(self.model.body_parentid[b])
        return chain[::-1]

    def _chain_joints(self) -> list[int]:
        m = self.model
        on_chain = set(self.chain_bodies)
        off = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) or f'#{j}'
               for j in range(m.njnt) if m.jnt_bodyid[j] not in on_chain]
        if off:
            raise RobotDescriptionError(
                f'{self.mjcf_path}: not a serial chain to site {self.ee_site!r}: joints {off} are on '
                'other branches of the kinematic tree; remove them (or weld them: delete the <joint>), or '
                'choose another ee_site')
        joints = []
        for b in self.chain_bodies:
            start, n = m.body_jntadr[b], m.body_jntnum[b]
            for j in range(start, start + n):
                jt = int(m.jnt_type[j])
                if jt not in (_HINGE, _SLIDE):
                    name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j)
                    raise RobotDescriptionError(
                        f'{self.mjcf_path}: joint {name!r} is a {mujoco.mjtJoint(jt).name} joint; '
                        'only hinge and slide joints are supported (a free joint: mount the arm on the world '
                        'instead; a ball joint: split it into three hinges)')
                joints.append(j)
        if not joints:
            raise RobotDescriptionError(f'{self.mjcf_path}: no joints between the world and {self.ee_site!r}; '
                                        'the end-effector site must be on the last link of the arm')
        if m.nq != len(joints):
            raise RobotDescriptionError(f'{self.mjcf_path}: model has nq={m.nq} but the chain has {len(joints)} joints')
        return joints

    def _numeric(self, name: str) -> float | None:
        m = self.model
        i = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_NUMERIC, name)
        if i < 0:
            return None
        return float(m.numeric_data[m.numeric_adr[i]])

    def _read_limits(self) -> None:
        m = self.model
        q_min, q_max, qd_max, eff = [], [], [], []
        default_qd = self._numeric('qd_max_default')
        for j, name in zip(self.joint_ids, self.joint_names):
            if m.jnt_limited[j]:
                lo, hi = m.jnt_range[j]
            elif int(m.jnt_type[j]) == _HINGE:
                lo, hi = -np.pi, np.pi  # a continuous joint: one turn is the meaningful range
            else:
                raise RobotDescriptionError(f'{self.mjcf_path}: slide joint {name!r} needs a range: add '
                                            'range="<lower m> <upper m>" to the <joint>')
            q_min.append(lo)
            q_max.append(hi)
            v = self._numeric(f'qd_max_{name}')
            v = default_qd if v is None else v
            if v is None or not v > 0:
                raise RobotDescriptionError(
                    f'{self.mjcf_path}: no velocity limit for {name!r}; add '
                    f'<custom><numeric name="qd_max_{name}" data="..."/></custom>')
            qd_max.append(v)
            eff.append(self._effort_limit(j, name))
        self.q_min = np.array(q_min, dtype=np.float64)
        self.q_max = np.array(q_max, dtype=np.float64)
        self.qd_max = np.array(qd_max, dtype=np.float64)
        self.effort_max = np.array(eff, dtype=np.float64)
        self.damping = np.array([m.dof_damping[a] for a in self.dof_adr], dtype=np.float64)
        self.actuator_ids = self._actuators()
        key = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_KEY, 'home')
        q0 = m.key_qpos[key][self.qpos_adr] if key >= 0 else m.qpos0[self.qpos_adr]
        self.home_q = np.clip(np.array(q0, dtype=np.float64), self.q_min, self.q_max)

    def _actuators_for(self, j: int) -> list[int]:
        m = self.model
        return [a for a in range(m.nu)
                if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT) and m.actuator_trnid[a, 0] == j]

    def _effort_limit(self, j: int, name: str) -> float:
        m = self.model
        for a in self._actuators_for(j):
            if m.actuator_ctrllimited[a]:
                gear = abs(m.actuator_gear[a, 0])
                return float(max(abs(m.actuator_ctrlrange[a, 0]), abs(m.actuator_ctrlrange[a, 1])) * gear)
        if m.jnt_actfrclimited[j]:
            return float(max(abs(m.jnt_actfrcrange[j, 0]), abs(m.jnt_actfrcrange[j, 1])))
        raise RobotDescriptionError(
            f'{self.mjcf_path}: no effort limit for {name!r}: give its actuator a ctrlrange '
            'or the joint an actuatorfrcrange')

    def _actuators(self) -> np.ndarray:
        """The actuator driving each joint, in joint order (the sim writes commands through them)."""
        ids = []
        for j, name in zip(self.joint_ids, self.joint_names):
            acts = self._actuators_for(j)
            if len(acts) != 1:
                raise RobotDescriptionError(
                    f'{self.mjcf_path}: joint {name!r} needs exactly one actuator, found {len(acts)}'
                    + (f'; add <motor joint="{name}" ctrlrange="-<max Nm> <max Nm>"/> to <actuator>' if not acts
                       else '; keep one'))
            ids.append(acts[0])
        return np.array(ids)

    # ---- forward kinematics -----------------------------------------------------------------
    def _build_fk(self) -> None:
        """Fold the chain into G0 J1 G1 J2 ... Jn Gn with fixed transforms G and joint motions J
        that are pure rotations about (or translations along) z, as MuJoCo composes frames in
        mj_kinematics: body frame = parent * (pos, quat), then for each joint
        F <- F * T(anchor) * Rot(axis, q - qpos0) * T(-anchor).
        """
        m = self.model
        fixed: list[_Rigid] = []
        current = _Rigid()
        for b in self.chain_bodies:
            current = current @ _Rigid(_quat_to_mat(m.body_quat[b]), m.body_pos[b].copy())
            for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]):
                C = _frame_with_z(m.jnt_axis[j])
                anchor = m.jnt_pos[j].copy()
                into = _Rigid(np.eye(3), anchor) @ _Rigid(C, np.zeros(3))  # joint frame -> body
                fixed.append(current @ into)
                current = into.inverse()
        site = self.ee_site_id
        tip = current @ _Rigid(_quat_to_mat(m.site_quat[site]), m.site_pos[site].copy())
        # G0 .. G_{n-1} applied as v -> R v + t; the tip only matters as a point.
        # Round off the 1e-17 residue of exact 90-degree frames so fk can skip those terms.
        clean = lambda a: np.where(np.abs(a) < 1e-12, 0.0, np.where(np.abs(np.abs(a) - 1.0) < 1e-15, np.sign(a), a))
        self._fk_R = [clean(g.R) for g in fixed]
        self._fk_t = [clean(g.t) for g in fixed]
        self._fk_tip = tip.t.copy()
        self._fk_slide = [int(m.jnt_type[j]) == _SLIDE for j in self.joint_ids]
        self._qpos0 = m.qpos0[self.qpos_adr].astype(np.float64)

    def fk(self, q) -> np.ndarray:
        """End-effector position for joint positions `q` of shape (..., dof) -> (..., 3).

        Runs from the tip towards the base on x, y, z coordinate arrays, so each joint costs one
        planar rotation and one fixed affine map whose structural zeros are skipped (axis-aligned
        arms have many); fast enough for the MPC's inner loop.
        """
        q = np.asarray(q, dtype=np.float64)
        if q.shape[-1] != self.dof:
            raise ValueError(f'fk: expected last dimension {self.dof}, got shape {q.shape}')
        batch = q.shape[:-1]
        qf = q.reshape(-1, self.dof) - self._qpos0
        n = qf.shape[0]
        # cos and sin from one tan of the half angle: exact to ~1e-16 and several times faster
        # than np.cos + np.sin, which are not vectorised for float64 in common numpy builds.
        t = np.tan(0.5 * np.ascontiguousarray(qf.T))
        t2 = t * t
        inv = 1.0 / (1.0 + t2)
        cos, sin = (1.0 - t2) * inv, 2.0 * t * inv
        x, y, z = (np.full(n, c) for c in self._fk_tip)
        for k in range(self.dof - 1, -1, -1):
            if self._fk_slide[k]:
                z = z + qf[:, k]
            else:
                c, s = cos[k], sin[k]
                x, y = c * x - s * y, s * x + c * y
            x, y, z = (self._affine_row(x, y, z, k, i) for i in range(3))
        return np.stack([x, y, z], axis=-1).reshape(batch + (3,))

    def _affine_row(self, x, y, z, k: int, i: int) -> np.ndarray:
        """Row i of the fixed map G_k: R[i] . (x, y, z) + t[i], skipping zero coefficients."""
        out = None
        for coef, comp in zip(self._fk_R[k][i], (x, y, z)):
            if coef == 0.0:
                continue
            term = comp if coef == 1.0 else coef * comp
            out = term if out is None else out + term
        t = self._fk_t[k][i]
        if out is None:
            return np.full(x.shape, t)
        return out + t if t != 0.0 else (out.copy() if out is x or out is y or out is z else out)

    # ---- sampling and helpers ---------------------------------------------------------------
    def sample_configurations(self, rng: np.random.Generator, n: int, margin: float = 0.05) -> np.ndarray:
        """`n` joint configurations uniform within the limits shrunk by `margin` (rad or m) per side."""
        span = self.q_max - self.q_min
        m = np.minimum(margin, 0.25 * span)  # keep a non-empty interval on narrow joints
        return rng.uniform(self.q_min + m, self.q_max - m, size=(int(n), self.dof))

    def within_limits(self, q, tol: float = 0.0) -> bool:
        q = np.asarray(q, dtype=np.float64)
        return bool(np.all(q >= self.q_min - tol) and np.all(q <= self.q_max + tol))

    def __repr__(self) -> str:
        return f'RobotModel({self.name!r}, dof={self.dof}, {self.format}={self.mjcf_path!r})'
