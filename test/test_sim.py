"""SimArm: gravity compensation, command interfaces, limits, noise, determinism."""
import numpy as np
import pytest

from mbrl_ros.core.sim import Pacer, SimArm


@pytest.mark.parametrize('name', ['arm3', 'arm7'])
def test_gravity_compensation_holds_the_arm(name):
    sim = SimArm(name)
    q0 = sim.q
    sim.step(1000)  # 2 s with zero command
    assert np.abs(sim.q - q0).max() < 1e-3
    # The drive carries g(q): the measured effort is the gravity torque.
    np.testing.assert_allclose(sim.applied_effort, sim.gravity_torque(), atol=1e-6)
    # Without compensation the arm falls.
    loose = SimArm(name, gravity_compensation=False)
    loose.step(250)
    assert np.abs(loose.q - q0).max() > 0.05


def test_positive_effort_moves_each_joint_positively(arm7):
    sim = SimArm(arm7)
    for k in range(arm7.dof):
        sim.reset()
        cmd = np.zeros(arm7.dof)
        cmd[k] = 0.3 * arm7.effort_max[k]
        sim.set_command(cmd)
        sim.step(50)
        assert sim.q[k] - arm7.home_q[k] > 0.02, k


def test_effort_is_clamped_to_limits(arm3):
    sim = SimArm(arm3)
    sim.set_command([1e6, -1e6, 0.0])
    np.testing.assert_allclose(sim.command, [20, -20, 0])
    sim.step(1)
    assert np.all(np.abs(sim.applied_effort) <= arm3.effort_max + 1e-9)


def test_bad_commands_raise_and_are_not_applied(arm3):
    sim = SimArm(arm3)
    sim.set_command([1.0, 0.0, 0.0])
    for bad in ([np.nan, 0, 0], [0, np.inf, 0], [1.0, 2.0], []):
        with pytest.raises(ValueError):
            sim.set_command(bad)
    np.testing.assert_allclose(sim.command, [1.0, 0.0, 0.0])


def test_velocity_interface_tracks_target(arm3):
    sim = SimArm(arm3, command_interface='velocity')
    sim.set_command([0.5, 0.0, 0.0])
    sim.step(250)
    assert abs(sim.qd[0] - 0.5) < 0.05
    assert np.abs(sim.qd[1:]).max() < 0.05
    sim.set_command([100.0, 0.0, 0.0])  # clamped to the velocity limit
    assert sim.command[0] == pytest.approx(arm3.qd_max[0])


def test_same_seed_same_trajectory(arm3):
    def run(seed):
        sim = SimArm(arm3, state_noise_std=0.01, seed=seed)
        rng = np.random.default_rng(7)
        obs = []
        for _ in range(50):
            sim.set_command(rng.uniform(-0.2, 0.2, 3) * arm3.effort_max)
            sim.step(10)
            obs.append(np.concatenate(sim.observe()))
        return np.array(obs), sim.state
    a, sa = run(3)
    b, sb = run(3)
    c, sc = run(4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sc)  # noise is on observations only, not the physics
    assert not np.array_equal(a, c)


def test_observation_noise_level(arm3):
    sim = SimArm(arm3, state_noise_std=0.05, seed=1)
    q = np.array([sim.observe()[0] for _ in range(2000)])
    assert np.std(q - sim.q, axis=0) == pytest.approx([0.05] * 3, rel=0.1)
    assert np.array_equal(SimArm(arm3).observe()[0], SimArm(arm3).q)
    # A reset does not replay the same noise (collection resets every episode).
    first = sim.observe()[0]
    sim.reset()
    assert not np.array_equal(sim.observe()[0], first)


def test_reset_and_ee_position(arm3):
    sim = SimArm(arm3)
    sim.set_command([5.0, 5.0, 5.0])
    sim.step(100)
    assert sim.time == pytest.approx(0.2)
    q = np.array([0.3, 0.2, -0.4])
    sim.reset(q, qd=[0.1, 0, 0])
    np.testing.assert_allclose(sim.q, q)
    np.testing.assert_allclose(sim.qd, [0.1, 0, 0])
    np.testing.assert_allclose(sim.command, 0)
    assert sim.time == 0.0
    np.testing.assert_allclose(sim.ee_position(), arm3.fk(q), atol=1e-9)
    sim.step(10)
    np.testing.assert_allclose(sim.ee_position(), arm3.fk(sim.q), atol=1e-9)
    sim.reset()
    np.testing.assert_allclose(sim.q, arm3.home_q)
    with pytest.raises(ValueError, match='expected 3 values'):
        sim.reset([0.0, 0.0])


def test_physics_rate_sets_timestep(arm3):
    assert SimArm(arm3, physics_rate_hz=1000.0).dt == pytest.approx(0.001)
    with pytest.raises(ValueError, match='command_interface'):
        SimArm(arm3, command_interface='position')


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.slept = []

    def __call__(self):
        return self.t

    def sleep(self, d):
        self.slept.append(d)
        self.t += d + 0.0003  # sleep always overshoots a little


def test_pacer_has_no_cumulative_drift():
    clock = FakeClock()
    pacer = Pacer(0.002, resync_after_s=0.1, clock=clock, sleep=clock.sleep)
    rng = np.random.default_rng(0)
    for _ in range(10000):
        clock.t += rng.uniform(0.0, 0.0015)  # the cycle's work
        assert pacer.wait() is None
    # 10000 periods of 2 ms end at 20 s, give or take one overshoot, not 10000 of them.
    assert clock.t == pytest.approx(20.0, abs=0.002)
    assert pacer.resyncs == 0


def test_pacer_catches_up_small_lag_and_resyncs_after_a_stall():
    clock = FakeClock()
    pacer = Pacer(0.002, resync_after_s=0.1, clock=clock, sleep=clock.sleep)
    clock.t += 0.01  # 5 periods late: run without sleeping until caught up
    n_sleep = len(clock.slept)
    for _ in range(4):
        assert pacer.wait() is None
    assert len(clock.slept) == n_sleep
    clock.t += 1.0  # a stall: skip ahead instead of racing through 500 cycles
    behind = pacer.wait()
    assert behind == pytest.approx(1.0 + 0.01 - 0.002 * 5, abs=1e-3)
    assert pacer.resyncs == 1 and pacer.deadline == clock.t
    assert pacer.wait() is None and clock.slept  # back to sleeping to the deadline
    with pytest.raises(ValueError):
        Pacer(0.0)
