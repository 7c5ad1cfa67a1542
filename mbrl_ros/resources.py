"""Where the package's shared files (launch/, config/, models/) live.

Looked up in the ament share directory first (a colcon or pip install), then in the source
tree (an editable install or a checkout), so that the same names work everywhere.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = 'mbrl_ros'
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dirs() -> list[Path]:
    dirs = []
    # The source tree first: with an editable install it is what the developer is editing.
    if (_SOURCE_ROOT / 'package.xml').is_file():
        dirs.append(_SOURCE_ROOT)
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        d = Path(prefix) / 'share' / PACKAGE
        if d.is_dir() and d not in dirs:
            dirs.append(d)
    return dirs


def package_share() -> Path:
    """The directory `$(find-pkg-share mbrl_ros)` resolves to."""
    dirs = share_dirs()
    if not dirs:
        raise FileNotFoundError('cannot find the mbrl_ros share directory (package.xml)')
    return dirs[0]


def find_resource(kind: str, name: str | os.PathLike) -> Path:
    """Resolve `name` as a path, or as a file under `<share>/<kind>/`.

    `kind` is 'launch', 'config' or 'models'. Raises FileNotFoundError naming every place looked.
    """
    p = Path(name).expanduser()
    if p.exists():
        return p.resolve()
    looked = [str(p)]
    for d in share_dirs():
        cand = d / kind / name
        looked.append(str(cand))
        if cand.exists():
            return cand.resolve()
    raise FileNotFoundError(f'{kind} {str(name)!r} not found; looked in: ' + ', '.join(looked))


def default_model_dir(robot: str = 'arm7') -> Path:
    return package_share() / 'models' / robot
