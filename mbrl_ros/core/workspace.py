"""Where an arm's end effector can go: a goal check for the controllers (ROS-free).

The reach is estimated from the robot itself: the largest distance from the shoulder (the
first joint's anchor) to the end effector over sampled joint configurations, plus a small
margin for the configurations the sampling missed. A goal outside that sphere, or not three
finite numbers, cannot be reached and is refused with a reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Workspace:
    base: np.ndarray     # (3,) shoulder position in the world frame
    reach: float         # [m] radius of the reachable sphere around `base`

    @classmethod
    def from_robot(cls, robot, samples: int = 20000, margin: float = 0.02, seed: int = 0) -> 'Workspace':
        import mujoco
        m = robot.model
        d = mujoco.MjData(m)
        mujoco.mj_kinematics(m, d)
        base = np.array(d.xanchor[robot.joint_ids[0]], dtype=np.float64)
        q = robot.sample_configurations(np.random.default_rng(seed), samples, margin=0.0)
        q = np.vstack([q, robot.q_min, robot.q_max, robot.home_q])
        dist = np.linalg.norm(robot.fk(q) - base, axis=-1)
        return cls(base, float(dist.max()) * (1.0 + margin))

    def check_goal(self, goal) -> Optional[str]:
        """Why `goal` (3,) cannot be reached, or None."""
        try:
            g = np.array(goal, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            return f'goal {goal!r} is not numeric'
        if g.shape != (3,) or not np.all(np.isfinite(g)):
            return f'goal must be 3 finite numbers, got {np.asarray(goal).tolist()!r}'
        dist = float(np.linalg.norm(g - self.base))
        if dist > self.reach:
            return (f'goal ({g[0]:.3f}, {g[1]:.3f}, {g[2]:.3f}) is {dist:.3f} m from the shoulder, '
                    f'beyond the reach {self.reach:.3f} m')
        return None
