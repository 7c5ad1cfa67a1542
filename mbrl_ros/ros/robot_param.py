"""The robot description parameters every node shares, and the one way the nodes load it.

`robot` names a built-in, an MJCF or a URDF file; `robot_description` (the XML text, as
robot_state_publisher takes it) wins when set. `base_link`/`tip_link` pick the URDF chain (the
MoveIt/KDL convention), `ee_offset` the end-effector point in the tip link frame, `ee_site` the
MJCF site, `package_paths` where package:// meshes live (unset: meshes are not read).
"""
from __future__ import annotations

from mbrl_ros.ros.parameters import Param


def _offset(text: str):
    """'' -> None; 'x y z' or '[x, y, z]' -> 3 floats (raises ValueError with the fix)."""
    t = text.strip().strip('[]').replace(',', ' ')
    if not t:
        return None
    try:
        v = [float(x) for x in t.split()]
    except ValueError:
        v = []
    if len(v) != 3:
        raise ValueError(f"ee_offset must be three numbers in metres, e.g. '0 0 0.1', got {text!r}")
    return v


def _packages(text: str):
    """'' -> None; 'pkg=/dir,pkg2=/dir2' -> {pkg: dir} (raises ValueError with the fix)."""
    if not text.strip():
        return None
    out = {}
    for item in text.split(','):
        name, sep, path = item.strip().partition('=')
        if not sep or not name or not path:
            raise ValueError(f"package_paths must be 'package=/dir[,package2=/dir2]', got {text!r}")
        out[name.strip()] = path.strip()
    return out


def _check(parse):
    def check(value):
        try:
            parse(value)
        except ValueError as exc:
            return str(exc)
        return None
    return check


def robot_params() -> list[Param]:
    return [
        Param('robot_description', '', 'URDF or MJCF text of the robot; when set it is used instead of robot',
              dynamic=False),
        Param('base_link', '', 'URDF: first link of the controlled chain (empty: the root, links fixed to '
              'the world skipped)', dynamic=False),
        Param('tip_link', '', 'URDF: end-effector link (empty: the last link of the single serial chain)',
              dynamic=False),
        Param('ee_offset', '', "URDF: end-effector point in the tip link frame, 'x y z' in m (empty: its origin)",
              dynamic=False, validator=_check(_offset)),
        Param('ee_site', 'ee_site', 'MJCF: the end-effector site (a file with one site uses it whatever its name)',
              dynamic=False),
        Param('package_paths', '', "URDF meshes: 'package=/dir[,package2=/dir2]' resolves package:// URIs and "
              'loads the meshes (visual only); empty: no mesh is read', dynamic=False,
              validator=_check(_packages)),
    ]


def load_robot(params):
    """The RobotModel the node's parameters describe (raises RobotDescriptionError or ValueError)."""
    from mbrl_ros.core.robot import RobotModel
    source = params['robot_description'] or params['robot']
    return RobotModel.load(source, ee_site=params['ee_site'] or 'ee_site',
                           base_link=params['base_link'] or None, tip_link=params['tip_link'] or None,
                           ee_offset=_offset(params['ee_offset']), package_paths=_packages(params['package_paths']))


def robot_source(params) -> str:
    """How messages name the description the node was given."""
    return 'from robot_description' if params['robot_description'] else repr(params['robot'])
