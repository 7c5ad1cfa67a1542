"""Evaluation only: the shipped arm7 policy plus a fixed task-space spring kp * J^T (goal - ee) - kdx * J^T J qd.

    python docs/results/policy_floor/eval_time_floor.py 0:0 60:6   # kp:kdx pairs; prints success per goal set
"""
import sys
import numpy as np
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.policy.runtime import PolicyRuntime
from mbrl_ros.core.evaluation.reaching import evaluate_reaching
robot = RobotModel.load('arm7')
pol = PolicyRuntime('models/arm7/policy.onnx')
em = np.asarray(robot.effort_max, float)
EPS = 1e-6
def jac(q):
    return ((robot.fk(q[None, :] + EPS * np.eye(len(q))) - robot.fk(q)[None]) / EPS).T
def make(kp, kdx):
    def ctl(q, qd, goal):
        u = pol.act(q, qd, goal)
        if kp == 0 and kdx == 0:
            return u
        J = jac(q)
        e = goal - robot.fk(q)
        return np.clip(u + J.T @ (kp * e - kdx * (J @ qd)), -em, em)
    return ctl
for spec in sys.argv[1:]:
    kp, kdx = map(float, spec.split(':'))
    res = []
    for seed in (2000, 3000, 4000, 5000):
        r = evaluate_reaching(make(kp, kdx), robot, n_goals=50 if seed == 2000 else 100, seed=seed)
        res.append(f'{seed}:{r.success_rate:.2f}')
    print(spec, ' '.join(res), flush=True)
