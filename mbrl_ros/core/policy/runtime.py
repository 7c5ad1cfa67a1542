"""onnxruntime inference of the distilled policy (robot side: no torch).

`PolicyRuntime(path)`: `act(q, qd, goal) -> effort (dof,)` for one state, `predict(states (B,S),
goals (B,3)) -> (B,dof)` for a batch. The graph squashes its output to ±effort_max; the runtime
still refuses (PolicyError) a non-finite input or output, so nothing non-finite leaves it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class PolicyError(ValueError):
    pass


class PolicyRuntime:
    def __init__(self, onnx_path, intra_op_threads: int = 1):
        from mbrl_ros.core.runtime.ensemble import make_session
        self.path = Path(onnx_path)
        self.session = make_session(self.path, intra_op_threads)
        ins = {i.name: i.shape for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        if set(ins) != {'state', 'goal'} or outs[:1] != ['action']:
            raise PolicyError(f'{self.path.name}: expected inputs state, goal and output action; got inputs '
                              f'{sorted(ins)} outputs {outs}')
        self.state_dim, self.dof = ins['state'][-1], None
        if not isinstance(self.state_dim, int) or ins['goal'][-1] != 3:
            raise PolicyError(f'{self.path.name}: input shapes {ins} (need (batch, S) and (batch, 3))')
        self.dof = self.state_dim // 2
        props = self.session.get_modelmeta().custom_metadata_map
        self.architecture = json.loads(props['mbrl_ros.architecture']) if 'mbrl_ros.architecture' in props else {}
        # One preallocated row for the per-period call: no allocation on the control path.
        self._s = np.zeros((1, self.state_dim), dtype=np.float32)
        self._g = np.zeros((1, 3), dtype=np.float32)

    def predict(self, states, goals) -> np.ndarray:
        s = np.ascontiguousarray(states, dtype=np.float32).reshape(-1, self.state_dim)
        g = np.ascontiguousarray(goals, dtype=np.float32).reshape(-1, 3)
        return self.session.run(['action'], {'state': s, 'goal': g})[0]

    def act(self, q, qd, goal) -> np.ndarray:
        """Effort (dof,) float64 for one state; PolicyError for a malformed/non-finite input or output."""
        q, qd, goal = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (q, qd, goal))
        if q.shape != (self.dof,) or qd.shape != (self.dof,) or goal.shape != (3,):
            raise PolicyError(f'expected q, qd of {self.dof} and a 3-vector goal, got {q.size}, {qd.size}, '
                              f'{goal.size}')
        if not (np.isfinite(q).all() and np.isfinite(qd).all() and np.isfinite(goal).all()):
            raise PolicyError('non-finite state or goal')
        self._s[0, :self.dof], self._s[0, self.dof:] = q, qd
        self._g[0] = goal
        u = self.session.run(['action'], {'state': self._s, 'goal': self._g})[0][0].astype(np.float64)
        if not np.isfinite(u).all():
            raise PolicyError('the policy produced a non-finite action')
        return u

    __call__ = act
