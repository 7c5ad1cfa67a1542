"""URDF (a ROS robot_description) -> an MJCF string that RobotModel and SimArm use.

What is kept: the chain from `base_link` to `tip_link` (MoveIt/KDL convention) with each joint's
origin, axis, limits and dynamics, every link's <inertial>, and links hanging off the chain (a
gripper's fingers, sensor frames) welded to it so their mass counts. What is added: an
end-effector site at the tip link frame (+ an optional offset), one motor per joint with the
URDF's effort limit as ctrlrange, the velocity limits as `qd_max_<joint>` numerics (the MJCF
conventions of core/robot.py) and a `home` keyframe. Meshes are visual only and optional: with a
package path map they are resolved (package://, file://, relative) and loaded; without one the
links are drawn as massless, collision-free capsules. Whatever was dropped or assumed is returned
as notes, for one log line at start.

Limits as ros2_control reads them: <limit lower upper velocity effort>, narrowed to
<safety_controller soft_lower_limit soft_upper_limit> where present.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MOVABLE = ('revolute', 'continuous', 'prismatic')
MESH_TYPES = ('.stl', '.obj', '.msh')  # what MuJoCo's compiler reads
MIN_MASS = 1e-3                        # kg, for a moving link without <inertial> (MuJoCo needs > 0)


class URDFError(ValueError):
    """Raised as core.robot.RobotDescriptionError by the caller (kept separate to avoid a cycle)."""


@dataclass
class _Joint:
    name: str
    type: str
    parent: str
    child: str
    xyz: np.ndarray
    rpy: np.ndarray
    axis: np.ndarray
    elem: ET.Element


@dataclass
class URDFModel:
    name: str
    mjcf: str
    joint_names: list[str]
    base_link: str
    tip_link: str
    notes: list[str] = field(default_factory=list)


def _floats(text: str | None, n: int, default: float, where: str) -> np.ndarray:
    if text is None:
        return np.full(n, default, dtype=np.float64)
    try:
        v = np.array([float(x) for x in text.split()], dtype=np.float64)
    except ValueError:
        raise URDFError(f'{where}: cannot read {text!r} as {n} numbers') from None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise URDFError(f'{where}: expected {n} finite numbers, got {text!r}')
    return v


def _attr(elem: ET.Element, key: str, default, where: str):
    """A number attribute, or `default` when absent; a clear error when it is not a number."""
    t = elem.get(key)
    if t is None:
        return default
    try:
        return float(t)
    except ValueError:
        raise URDFError(f'{where}: {key}="{t}" is not a number') from None


def _origin(elem: ET.Element | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    o = None if elem is None else elem.find('origin')
    if o is None:
        return np.zeros(3), np.zeros(3)
    return _floats(o.get('xyz'), 3, 0.0, where + ' <origin xyz>'), _floats(o.get('rpy'), 3, 0.0, where + ' <origin rpy>')


def rpy_to_quat(rpy) -> np.ndarray:
    """URDF rpy (fixed axes: roll about x, then pitch about y, then yaw about z) -> (w, x, y, z)."""
    r, p, y = (0.5 * float(a) for a in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])


def _quat_to_mat(q) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _fmt(v) -> str:
    return ' '.join(f'{float(x):.12g}' for x in np.atleast_1d(v))


def _limit_fix(j: _Joint) -> str:
    lo_hi = '' if j.type == 'continuous' else 'lower="-2.9" upper="2.9" '
    unit = 'm/s' if j.type == 'prismatic' else 'rad/s'
    force = 'N' if j.type == 'prismatic' else 'Nm'
    return (f'<limit {lo_hi}effort="<max {force}>" velocity="<max {unit}>"/> inside <joint name="{j.name}">')


class _Converter:
    def __init__(self, text: str, source: str, base_link: str | None, tip_link: str | None,
                 ee_offset, package_paths: dict | None):
        self.source = source
        self.base_dir = Path(source).parent if source and os.path.sep in source else Path('.')
        self.package_paths = package_paths
        self.notes: list[str] = []
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise URDFError(f'{source}: not well-formed XML: {exc}') from None
        if root.tag != 'robot':
            raise URDFError(f'{source}: the root element is <{root.tag}>, a URDF needs <robot>')
        self.name = root.get('name') or Path(source).stem
        self.links = {}
        for link in root.findall('link'):
            n = link.get('name')
            if not n:
                raise URDFError(f'{source}: a <link> has no name; give it name="..."')
            self.links[n] = link
        self.joints: dict[str, _Joint] = {}
        self.children: dict[str, list[_Joint]] = {n: [] for n in self.links}
        parent_of: dict[str, _Joint] = {}
        for k, je in enumerate(root.findall('joint')):
            name = je.get('name')
            if not name:
                raise URDFError(f'{source}: joint #{k} has no name; give it name="..." '
                                '(the name is what /joint_states carries)')
            jt = je.get('type')
            where = f'{source}: joint {name!r}'
            if jt in ('floating', 'planar'):
                raise URDFError(f'{where} is {jt}: only revolute, continuous, prismatic and fixed '
                                'joints can be driven; mount the arm with a fixed joint instead')
            if jt not in MOVABLE + ('fixed',):
                raise URDFError(f'{where} has type {jt!r}: use revolute, continuous, prismatic or fixed')
            pe, ce = je.find('parent'), je.find('child')
            parent, child = (None if pe is None else pe.get('link')), (None if ce is None else ce.get('link'))
            for role, link in (('parent', parent), ('child', child)):
                if link not in self.links:
                    raise URDFError(f'{where}: {role} link {link!r} is not a <link> of the file')
            if child in parent_of:
                raise URDFError(f'{where}: link {child!r} already has parent joint {parent_of[child].name!r}')
            xyz, rpy = _origin(je, where)
            ae = je.find('axis')
            axis = _floats(None if ae is None else ae.get('xyz'), 3, 0.0, where + ' <axis xyz>') \
                if ae is not None else np.array([1.0, 0.0, 0.0])  # the URDF default axis
            if jt in MOVABLE and not np.linalg.norm(axis) > 0:
                raise URDFError(f'{where}: <axis xyz> is zero; give the joint axis, e.g. <axis xyz="0 0 1"/>')
            j = _Joint(name, jt, parent, child, xyz, rpy, axis, je)
            self.joints[name] = j
            self.children[parent].append(j)
            parent_of[child] = j
        self.parent_of = parent_of
        roots = [n for n in self.links if n not in parent_of]
        if len(roots) != 1:
            raise URDFError(f'{source}: expected one root link, found {roots}: every link but the root '
                            'needs a parent joint')
        self.root = roots[0]
        self.base = self._pick_base(base_link)
        self.tip = self._pick_tip(tip_link)
        self.chain = self._chain()  # joints from base to tip
        self.ee_offset = np.zeros(3) if ee_offset is None else np.asarray(ee_offset, dtype=np.float64).reshape(3)

    # ---- chain ------------------------------------------------------------------------------
    def _movable_below(self, link: str) -> list[str]:
        out, stack = [], [link]
        while stack:
            for j in self.children[stack.pop()]:
                if j.type in MOVABLE:
                    out.append(j.name)
                stack.append(j.child)
        return out

    def _pick_base(self, base_link: str | None) -> str:
        if base_link is None:
            # the root, or below a world link fixed to it (world -> base_link, as many descriptions mount)
            b = self.root
            while (len(self.children[b]) == 1 and self.children[b][0].type == 'fixed'
                   and self._movable_below(self.children[b][0].child)):
                b = self.children[b][0].child
            return b
        if base_link not in self.links:
            raise URDFError(f'{self.source}: base_link {base_link!r} is not a link (links: {list(self.links)})')
        return base_link

    def _pick_tip(self, tip_link: str | None) -> str:
        if tip_link is not None:
            if tip_link not in self.links:
                raise URDFError(f'{self.source}: tip_link {tip_link!r} is not a link (links: {list(self.links)})')
            return tip_link
        # Follow the single serial chain: the one child whose subtree moves, or the only child.
        link = self.base
        while self.children[link]:
            kids = self.children[link]
            moving = [j for j in kids if j.type in MOVABLE or self._movable_below(j.child)]
            if len(moving) > 1:
                names = ', '.join(f'{j.child} (via {j.name})' for j in moving)
                raise URDFError(
                    f'{self.source}: the chain branches at link {link!r} into {names}; say which link is '
                    f'the end effector with tip_link, e.g. tip_link:={link} (a launch argument or node '
                    f'parameter; RobotModel.load(..., tip_link={link!r}))')
            if len(moving) == 1:
                link = moving[0].child
            elif len(kids) == 1:
                link = kids[0].child
            else:
                break  # several fixed frames (sensors, tool points): the tip is here
        return link

    def _chain(self) -> list[_Joint]:
        chain, link = [], self.tip
        while link != self.base:
            j = self.parent_of.get(link)
            if j is None:
                raise URDFError(f'{self.source}: tip_link {self.tip!r} is not below base_link {self.base!r}')
            chain.append(j)
            link = j.parent
        chain.reverse()
        if not any(j.type in MOVABLE for j in chain):
            raise URDFError(f'{self.source}: no movable joint between base_link {self.base!r} and '
                            f'tip_link {self.tip!r}')
        return chain

    # ---- limits -----------------------------------------------------------------------------
    def _limits(self, j: _Joint) -> tuple[float | None, float | None, float, float]:
        le = j.elem.find('limit')
        where = f'{self.source}: joint {j.name!r}'
        if le is None:
            raise URDFError(f'{where} has no <limit>: add {_limit_fix(j)}')
        vals = {}
        for key in ('lower', 'upper', 'effort', 'velocity'):
            t = le.get(key)
            if t is None:
                vals[key] = None
                continue
            try:
                vals[key] = float(t)
            except ValueError:
                raise URDFError(f'{where}: <limit {key}="{t}"> is not a number') from None
        for key, what in (('velocity', 'velocity'), ('effort', 'effort')):
            if vals[key] is None or not vals[key] > 0:
                raise URDFError(f'{where}: <limit> needs a positive {key}= (the joint\'s max {what}); '
                                f'got {le.get(key)!r}: write {_limit_fix(j)}')
        if j.type == 'continuous':
            return None, None, vals['velocity'], vals['effort']
        lo, hi = vals['lower'], vals['upper']
        if lo is None or hi is None or not hi > lo:
            raise URDFError(f'{where}: <limit lower upper> must give lower < upper (got lower={le.get("lower")!r} '
                            f'upper={le.get("upper")!r}): write {_limit_fix(j)}')
        sc = j.elem.find('safety_controller')
        if sc is not None:  # ros2_control's soft limits: the range the controller may use
            nlo = max(lo, _attr(sc, 'soft_lower_limit', lo, where + ' <safety_controller>'))
            nhi = min(hi, _attr(sc, 'soft_upper_limit', hi, where + ' <safety_controller>'))
            if nhi > nlo:
                lo, hi = nlo, nhi
        return lo, hi, vals['velocity'], vals['effort']

    # ---- MJCF -------------------------------------------------------------------------------
    def _mesh_file(self, uri: str, link: str) -> Path:
        if uri.startswith('package://'):
            pkg, _, rest = uri[len('package://'):].partition('/')
            base = (self.package_paths or {}).get(pkg)
            if base is None:
                raise URDFError(f'{self.source}: link {link!r} mesh {uri!r}: package {pkg!r} is not in the '
                                f'package path map; add {pkg}:=/path/to/{pkg} to package_paths')
            return Path(base) / rest
        if uri.startswith('file://'):
            return Path(uri[len('file://'):])
        return self.base_dir / uri

    def _geoms(self, link: str, child_origins: list[np.ndarray], assets: list[str]) -> list[str]:
        le = self.links[link]
        if self.package_paths is not None:
            out = []
            for k, ve in enumerate(le.findall('visual')):
                me = ve.find('geometry/mesh')
                if me is None:
                    continue
                uri = me.get('filename') or ''
                f = self._mesh_file(uri, link)
                if f.suffix.lower() not in MESH_TYPES:
                    raise URDFError(f'{self.source}: link {link!r} mesh {uri!r}: MuJoCo reads {", ".join(MESH_TYPES)} '
                                    f'meshes, not {f.suffix!r}; convert it (e.g. to .stl) or leave package_paths '
                                    'unset to draw primitives')
                if not os.access(f, os.R_OK):
                    raise URDFError(f'{self.source}: link {link!r} mesh {uri!r} -> {f}: no such readable file; '
                                    'fix the package path map or leave package_paths unset to draw primitives')
                mname = f'mesh_{link}_{k}'
                scale = me.get('scale')
                assets.append(f'<mesh name="{mname}" file="{f}"' + (f' scale="{scale}"' if scale else '') + '/>')
                xyz, rpy = _origin(ve, f'{self.source}: link {link!r} <visual>')
                out.append(f'<geom type="mesh" mesh="{mname}" pos="{_fmt(xyz)}" quat="{_fmt(rpy_to_quat(rpy))}"/>')
            return out
        # No meshes: a capsule from the link frame to each child joint (drawing only).
        return [f'<geom type="capsule" size="0.02" fromto="0 0 0 {_fmt(o)}"/>' for o in child_origins
                if np.linalg.norm(o) > 1e-3]

    def _inertial(self, link: str, moving: bool) -> str:
        ie = self.links[link].find('inertial')
        where = f'{self.source}: link {link!r} <inertial>'
        if ie is None:
            if moving:
                self._no_inertial.append(link)
                return f'<inertial pos="0 0 0" mass="{MIN_MASS}" diaginertia="1e-6 1e-6 1e-6"/>'
            return ''
        xyz, rpy = _origin(ie, where)
        me, ine = ie.find('mass'), ie.find('inertia')
        mass = float(_floats(None if me is None else me.get('value'), 1, float('nan'), where + ' <mass value>')[0]) \
            if me is not None else 0.0
        if ine is None:
            I = np.zeros(6)
        else:
            I = np.array([float(_floats(ine.get(k), 1, 0.0, f'{where} <inertia {k}>')[0])
                          for k in ('ixx', 'iyy', 'izz', 'ixy', 'ixz', 'iyz')])
        if mass <= 0 and not moving:
            return ''
        if mass <= 0 or not np.all(I[:3] > 0):
            if moving:
                self._no_inertial.append(link)
            mass, I = max(mass, MIN_MASS), np.array([1e-6, 1e-6, 1e-6, 0, 0, 0]) if not np.all(I[:3] > 0) else I
        # MJCF takes fullinertia in the body frame (no quat with it): rotate the tensor there.
        R = _quat_to_mat(rpy_to_quat(rpy))
        T = np.array([[I[0], I[3], I[4]], [I[3], I[1], I[5]], [I[4], I[5], I[2]]])
        T = R @ T @ R.T
        I = np.array([T[0, 0], T[1, 1], T[2, 2], T[0, 1], T[0, 2], T[1, 2]])
        ev = np.linalg.eigvalsh(T)
        if ev[0] + ev[1] < ev[2] * (1 - 1e-9):  # not a physical rigid body (CAD roundoff): MuJoCo refuses it
            self._unbalanced.append(link)
        return f'<inertial pos="{_fmt(xyz)}" mass="{mass:.12g}" fullinertia="{_fmt(I)}"/>'

    def mjcf(self) -> tuple[str, list[str], list[str]]:
        self._no_inertial: list[str] = []
        self._unbalanced: list[str] = []
        chain_links = [self.base] + [j.child for j in self.chain]
        on_chain = set(chain_links)
        assets: list[str] = []
        custom: list[str] = []
        actuators: list[str] = []
        home: list[float] = []
        welded: list[str] = []
        joint_names: list[str] = []

        def body(link: str, j: _Joint | None, indent: str) -> list[str]:
            lines = []
            kids = self.children[link]
            lines.append(f'{indent}<body name="{link}"' + (
                f' pos="{_fmt(j.xyz)}" quat="{_fmt(rpy_to_quat(j.rpy))}">' if j is not None else '>'))
            inner = indent + '  '
            driven = j is not None and j.type in MOVABLE and link in on_chain
            inert = self._inertial(link, driven)  # MuJoCo needs mass on a body with a joint
            if inert:
                lines.append(inner + inert)
            if driven:
                lo, hi, vel, eff = self._limits(j)
                kind = 'slide' if j.type == 'prismatic' else 'hinge'
                rng = '' if lo is None else f' range="{lo:.12g} {hi:.12g}"'
                de = j.elem.find('dynamics')
                dw = f'{self.source}: joint {j.name!r} <dynamics>'
                damping = _attr(de, 'damping', 0.0, dw) if de is not None else 0.0
                friction = _attr(de, 'friction', 0.0, dw) if de is not None else 0.0
                lines.append(f'{inner}<joint name="{j.name}" type="{kind}" axis="{_fmt(j.axis)}"{rng} '
                             f'damping="{damping:.12g}" frictionloss="{friction:.12g}"/>')
                custom.append(f'<numeric name="qd_max_{j.name}" data="{vel:.12g}"/>')
                actuators.append(f'<motor name="{j.name}_motor" joint="{j.name}" ctrlrange="{-eff:.12g} {eff:.12g}"/>')
                joint_names.append(j.name)
                # home: zero when well inside the range, else the middle of the range
                if lo is None:
                    home.append(0.0)
                else:
                    m = 0.1 * (hi - lo)
                    home.append(0.0 if lo + m <= 0.0 <= hi - m else 0.5 * (lo + hi))
            elif j is not None and j.type in MOVABLE:
                welded.append(j.name)  # off the chain: held at its zero position
            lines += [inner + g for g in self._geoms(link, [k.xyz for k in kids], assets)]
            if link == self.tip:
                lines.append(f'{inner}<site name="ee_site" pos="{_fmt(self.ee_offset)}" size="0.01"/>')
            for k in kids:
                lines += body(k.child, k, inner)
            lines.append(f'{indent}</body>')
            return lines

        tree = body(self.base, None, '    ')
        dropped_above = [n for n in self.links if n not in self._subtree(self.base)]
        balance = ' balanceinertia="true"' if self._unbalanced else ''
        parts = [f'<mujoco model="{self.name}">',
                 f'  <compiler angle="radian" autolimits="true"{balance}/>',
                 '  <option timestep="0.002" integrator="implicitfast" gravity="0 0 -9.81"/>',
                 '  <default><geom contype="0" conaffinity="0" density="0" rgba="0.8 0.8 0.85 1"/></default>']
        if assets:
            parts += ['  <asset>'] + ['    ' + a for a in assets] + ['  </asset>']
        parts += ['  <custom>'] + ['    ' + c for c in custom] + ['  </custom>']
        parts += ['  <worldbody>'] + tree + ['  </worldbody>']
        parts += ['  <actuator>'] + ['    ' + a for a in actuators] + ['  </actuator>']
        parts += [f'  <keyframe><key name="home" qpos="{_fmt(home)}"/></keyframe>', '</mujoco>']

        notes = [f'URDF chain {self.base} -> {self.tip} ({len(joint_names)} joints)']
        if self.package_paths is None:
            n_mesh = sum(len(self.links[n].findall('visual/geometry/mesh')) + len(self.links[n].findall('collision/geometry/mesh'))
                         for n in self._subtree(self.base))
            notes.append(f'{n_mesh} meshes not loaded (drawn as capsules; no collisions)' if n_mesh
                         else 'no collisions')
        else:
            notes.append('meshes loaded as visual geoms; no collisions')
        if welded:
            notes.append(f'off-chain joints held fixed at zero: {", ".join(welded)}')
        if dropped_above:
            notes.append(f'links above base_link ignored (fixed to the world): {", ".join(dropped_above)}')
        if self._no_inertial:
            notes.append(f'links without a usable <inertial> given {MIN_MASS * 1000:g} g: {", ".join(self._no_inertial)}')
        if self._unbalanced:
            notes.append(f'inertia tensors violating A + B >= C made physical (MuJoCo balanceinertia): '
                         f'{", ".join(self._unbalanced)}')
        return '\n'.join(parts) + '\n', notes, joint_names

    def _subtree(self, link: str) -> list[str]:
        out, stack = [], [link]
        while stack:
            n = stack.pop()
            out.append(n)
            stack += [j.child for j in self.children[n]]
        return out


def urdf_to_mjcf(text: str, source: str = '<robot_description>', base_link: str | None = None,
                 tip_link: str | None = None, ee_offset=None, package_paths: dict | None = None) -> URDFModel:
    """Convert URDF text; `source` (the file path) names it in messages and anchors relative meshes."""
    c = _Converter(text, source, base_link, tip_link, ee_offset, package_paths)
    mjcf, notes, names = c.mjcf()
    return URDFModel(c.name, mjcf, names, c.base, c.tip, notes)


def is_urdf_text(text: str) -> bool:
    """True for XML whose root element is <robot> (URDF), False for <mujoco> and anything else."""
    head = text.lstrip()
    try:
        for _event, elem in ET.iterparse(__import__('io').StringIO(head), events=('start',)):
            return elem.tag == 'robot'
    except ET.ParseError:
        return False
    return False
