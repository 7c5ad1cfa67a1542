"""Names of the ensemble's control-affine heads (torch-free, for the CLI and config checks).

- 'action': mean = f + G a
- 'action_velocity': mean = f + G [a, qd]
- 'rigid_body': mean = f + G [a, qd, qd_i qd_j (i <= j)]
"""
AFFINE_INPUTS = ('action', 'action_velocity', 'rigid_body')
