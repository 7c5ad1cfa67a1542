"""Collect world-model training data on the MuJoCo arm without ROS (the fast path).

Episodes start at rest from random configurations outside the exploration's limit-push band; each
control period (dt = 0.02 s) the exploration command is held for dt * physics_rate_hz physics
steps, and the state is read with `observe()` (the same noisy measurement a ROS node would
publish), so the transitions look like the ones a recorder gets from /joint_states.
"""
from __future__ import annotations

import numpy as np

from mbrl_ros.core.data.dataset import TransitionDataset
from mbrl_ros.core.data.exploration import Exploration

DT = 0.02
PHYSICS_RATE_HZ = 500.0


def _load_robot(robot):
    if isinstance(robot, (str, bytes)) or hasattr(robot, '__fspath__'):
        from mbrl_ros.core.robot import RobotModel
        return RobotModel.load(robot)
    return robot


def substeps(dt: float, physics_rate_hz: float) -> int:
    n = dt * physics_rate_hz
    if n < 1 or abs(n - round(n)) > 1e-6:
        raise ValueError(f'dt={dt} s must be a whole number of physics steps at {physics_rate_hz} Hz')
    return int(round(n))


def collect_sim(robot='arm7', n_transitions: int = 20000, exploration: str = 'colored', seed: int = 0,
                episode_len: int = 200, amplitude: float = 0.3, progress: bool = True,
                beta: float = 1.0, dt: float = DT, physics_rate_hz: float = PHYSICS_RATE_HZ,
                state_noise_std: float = 0.0, limit_margin: float = 0.1,
                gravity_compensation: bool = True) -> TransitionDataset:
    """`n_transitions` transitions of random exploration on `SimArm(robot)`; deterministic in `seed`."""
    from mbrl_ros.core.sim import SimArm  # mujoco only when collecting

    if n_transitions < 1:
        raise ValueError(f'n_transitions must be >= 1, got {n_transitions}')
    if episode_len < 1:
        raise ValueError(f'episode_len must be >= 1, got {episode_len}')
    robot = _load_robot(robot)
    n_sub = substeps(dt, physics_rate_hz)
    rng = np.random.default_rng(seed)
    # Separate streams so that changing e.g. the noise kind does not move the start states.
    start_rng, noise_rng = rng.spawn(2)
    sim_seed = int(rng.integers(0, 2**31 - 1))
    expl = Exploration(robot, exploration, amplitude=amplitude, beta=beta, rng=noise_rng,
                       limit_margin=limit_margin)
    sim = SimArm(robot, physics_rate_hz=physics_rate_hz, command_interface='effort',
                 gravity_compensation=gravity_compensation, state_noise_std=state_noise_std, seed=sim_seed)

    dof = robot.dof
    # Start outside the band where the exploration pushes back from the limits: a start inside it
    # meant a step of up to effort_max from rest in the first period (65 % of episodes at the 10 %
    # margin), a transient no other transition looks like; it carried 36 % of a model's held-out
    # squared velocity error (docs/results/world_model_arm7.md, "The evaluation data's start transient").
    start_margin = np.maximum(0.05, expl.push_margin)
    states = np.empty((n_transitions, 2 * dof))
    actions = np.empty((n_transitions, dof))
    next_states = np.empty((n_transitions, 2 * dof))
    episode = np.empty(n_transitions, dtype=np.int64)

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_transitions, unit='tr', desc=f'collect {robot.name}', leave=False)
    i, ep = 0, 0
    try:
        while i < n_transitions:
            n = min(episode_len, n_transitions - i)
            q0 = np.asarray(robot.sample_configurations(start_rng, 1, margin=start_margin),
                            dtype=np.float64).reshape(dof)
            sim.reset(q=q0, qd=np.zeros(dof))
            expl.reset(n)
            q, qd, _ = sim.observe()
            s = np.concatenate([q, qd])
            for k in range(i, i + n):
                a = expl(q, qd)
                sim.set_command(a)
                sim.step(n_sub)
                q, qd, _ = sim.observe()
                states[k] = s
                actions[k] = a
                s = np.concatenate([q, qd])
                next_states[k] = s
            episode[i:i + n] = ep
            i += n
            ep += 1
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    amp = np.asarray(amplitude, dtype=np.float64)
    meta = {'source': 'sim', 'exploration': exploration,
            'amplitude': float(amp) if amp.ndim == 0 else [float(a) for a in amp], 'beta': float(beta),
            'seed': int(seed), 'episode_len': int(episode_len), 'physics_rate_hz': float(physics_rate_hz),
            'state_noise_std': float(state_noise_std),
            'description_hash': str(getattr(robot, 'description_hash', ''))}
    return TransitionDataset(states, actions, next_states, episode, dt, list(robot.joint_names),
                             robot.name, meta)
