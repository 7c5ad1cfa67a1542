"""Reading a goal from /mbrl/goal (geometry_msgs/PointStamped), shared by mpc_controller and policy."""
from __future__ import annotations

from typing import Optional

import numpy as np

# No tf here: goals must already be in the world frame ('' is taken to mean world).
ACCEPTED_FRAMES = ('', 'world')


def read_goal(msg, workspace) -> tuple[Optional[np.ndarray], Optional[str]]:
    """(goal xyz, None) for an acceptable goal, else (None, why): wrong frame, non-finite or
    out of the arm's reach (`workspace.check_goal`)."""
    if msg.header.frame_id not in ACCEPTED_FRAMES:
        return None, (f"frame '{msg.header.frame_id}' is not 'world' "
                      '(no tf here: send goals in the world frame)')
    g = (msg.point.x, msg.point.y, msg.point.z)
    why = workspace.check_goal(g)
    return (None, why) if why else (np.array(g, dtype=np.float64), None)
