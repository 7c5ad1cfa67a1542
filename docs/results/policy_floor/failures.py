"""The shipped arm7 policy's misses on goal sets 3000-5000: distance, joints within 0.05 rad of a limit, speed, effort."""
import numpy as np
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.policy.runtime import PolicyRuntime
from mbrl_ros.core.evaluation.reaching import evaluate_reaching, sample_goals
robot = RobotModel.load('arm7')
pol = PolicyRuntime('models/arm7/policy.onnx')
last = {}
def rec(i, q, qd, goal, u): last[i] = (q.copy(), qd.copy(), u.copy())
for seed in (3000, 4000, 5000):
    last.clear()
    r = evaluate_reaching(pol.act, robot, n_goals=100, seed=seed, on_step=rec)
    starts, goal_q, goals = sample_goals(robot, 100, seed)
    for i in np.where(~r.successes)[0]:
        q, qd, u = last[i]
        lo = np.where(q - robot.q_min < 0.05)[0]; hi = np.where(robot.q_max - q < 0.05)[0]
        print(seed, i, f'{100*r.final_distance_m[i]:.1f} cm', 'at lo', lo.tolist(), 'at hi', hi.tolist(),
              '|qd|', round(float(np.abs(qd).max()), 3), 'goal r', round(float(np.linalg.norm(goals[i])), 3),
              'u/em', np.round(u / robot.effort_max, 2).tolist())
