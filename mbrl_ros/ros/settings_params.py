"""ROS parameter specs (`Param`) from the core's typed settings dataclasses.

The core keeps each setting's default, range, choices and help in its dataclass field
metadata (`mbrl_ros.core.planning.config.setting`); this turns them into a node's `Param`
spec, so a range lives in exactly one place (the ros2_controllers generate_parameter_library idea).
"""
from __future__ import annotations

from typing import Iterable, Optional

from mbrl_ros.core.planning.config import field_specs
from mbrl_ros.ros.parameters import Param


def params_from_settings(cls, include: Optional[Iterable[str]] = None, rename: Optional[dict] = None,
                         static: Iterable[str] = (), defaults: Optional[dict] = None) -> list[Param]:
    """One dynamic `Param` per field of `cls` (those in `include`, all by default).

    rename: field -> ROS parameter name (e.g. uncertainty -> uncertainty_penalty).
    static: ROS names that may not change at runtime. defaults: ROS name -> node default.
    """
    rename, defaults, static = rename or {}, defaults or {}, set(static)
    wanted = None if include is None else set(include)
    out = []
    for f in field_specs(cls):
        if wanted is not None and f['name'] not in wanted:
            continue
        name = rename.get(f['name'], f['name'])
        default = defaults.get(name, f['default'])
        if f['type'] in ('float', float) and isinstance(default, int) and not isinstance(default, bool):
            default = float(default)  # a float field must declare a double parameter
        rng = f['range']
        if rng is not None and (rng[0] is None or rng[1] is None):
            rng = (rng[0] if rng[0] is not None else -1e300, rng[1] if rng[1] is not None else 1e300)
        out.append(Param(name, default, f['help'], range=rng, choices=f['choices'], dynamic=name not in static))
    return out
