"""Planning core: coloured noise, cost terms, rollout, ensemble adapter, CEM/iCEM planner
(closed-loop reaching with a known analytic model, time budget, warm start)."""
import time

import numpy as np
import pytest

from mbrl_ros.core.planning import (
    ColoredNoise, CostWeights, DoubleIntegratorDynamics, EffortCost, EndEffectorDistanceCost,
    EnsembleDynamics, JointLimitCost, JointVelocityCost, Planner, PlannerConfig, TerminalDistanceCost,
    TerminalVelocityCost, TrajectoryBatch, TrajectoryCost, UncertaintyCost, field_specs, from_mapping,
    make_task_cost, powerlaw_psd_gaussian, rollout)
from mbrl_ros.core.planning.costs import INVALID_COST
from mbrl_ros.core.planning.rollout import RolloutBuffers
from mbrl_ros.core.robot import RobotModel


@pytest.fixture(scope='module', params=['arm3', 'arm7'])
def robot(request):
    return RobotModel.load(request.param)


# ---- coloured noise -----------------------------------------------------------------------------
@pytest.mark.parametrize('beta', [0.0, 1.0, 2.0])
def test_colored_noise_spectrum_slope_and_unit_variance(beta):
    rng = np.random.default_rng(0)
    x = powerlaw_psd_gaussian(beta, (64, 1024), rng)
    assert x.shape == (64, 1024)
    assert abs(x.std() - 1.0) < 0.1
    f = np.fft.rfftfreq(1024)[1:]
    psd = (np.abs(np.fft.rfft(x, axis=-1)) ** 2).mean(axis=0)[1:]
    slope = np.polyfit(np.log(f), np.log(psd), 1)[0]
    assert abs(slope + beta) < 0.15, slope


@pytest.mark.parametrize('n', [1, 2, 11, 12])
def test_colored_noise_short_sequences_have_unit_variance(n):
    x = ColoredNoise(2.0, n).sample(np.random.default_rng(1), (20000, 2))
    assert x.shape == (20000, 2, n)
    assert np.allclose(x.std(axis=0), 1.0, atol=0.05)


def test_colored_noise_is_smoother_than_white():
    rng = np.random.default_rng(2)
    white = ColoredNoise(0.0, 15).sample(rng, (5000,))
    red = ColoredNoise(2.0, 15).sample(rng, (5000,))
    assert np.abs(np.diff(red)).mean() < 0.5 * np.abs(np.diff(white)).mean()


def test_colored_noise_rejects_bad_settings():
    with pytest.raises(ValueError):
        ColoredNoise(-1.0, 10)
    with pytest.raises(ValueError):
        ColoredNoise(1.0, 0)


# ---- config -------------------------------------------------------------------------------------
def test_config_validation_and_population():
    assert PlannerConfig().errors() == []
    errs = PlannerConfig(num_elites=500, num_samples=100, planner='mppi', horizon=0).errors()
    assert any('num_elites' in e for e in errs)
    assert any('planner' in e for e in errs)
    assert any('horizon' in e for e in errs)
    with pytest.raises(ValueError, match='num_elites'):
        PlannerConfig(num_elites=500, num_samples=100).validated()
    c = PlannerConfig(planner='icem', num_samples=300, num_elites=30, population_decay=2.0)
    assert [c.population(i) for i in range(5)] == [300, 150, 75, 60, 60]
    assert PlannerConfig(planner='cem', num_samples=300).population(3) == 300


def test_config_field_specs_and_mapping():
    specs = {s['name']: s for s in field_specs(PlannerConfig)}
    assert specs['horizon']['range'] == (1, 100) and specs['planner']['choices'] == ('cem', 'icem')
    c = from_mapping(PlannerConfig, {'horizon': 7, 'not_a_field': 1})
    assert c.horizon == 7
    assert CostWeights(uncertainty=-1.0).errors()


# ---- costs --------------------------------------------------------------------------------------
def _batch(robot, n=4, p=1, h=5, goal=None, q=None, qd=None, actions=None, dis=None):
    dof = robot.dof
    states = np.zeros((n, p, h + 1, 2 * dof))
    states[..., :dof] = robot.home_q if q is None else q
    if qd is not None:
        states[..., dof:] = qd
    actions = np.zeros((n, h, dof)) if actions is None else actions
    dis = np.zeros((n, p, h)) if dis is None else dis
    return TrajectoryBatch(states, actions, dis, goal, dof, robot.fk)


def test_ee_distance_cost_uses_forward_kinematics(robot):
    goal = robot.fk(robot.home_q) + np.array([0.0, 0.0, 0.1])
    b = _batch(robot, h=5, goal=goal)
    np.testing.assert_allclose(EndEffectorDistanceCost(1.0).evaluate(b), 0.5, rtol=1e-9)
    np.testing.assert_allclose(TerminalDistanceCost(1.0).evaluate(b), 0.1, rtol=1e-9)
    # Moving the last state to a configuration whose EE is on the goal zeroes the terminal term.
    b.states[:, :, -1, :robot.dof] = robot.home_q
    b2 = _batch(robot, goal=robot.fk(robot.home_q))
    np.testing.assert_allclose(TerminalDistanceCost(1.0).evaluate(b2), 0.0, atol=1e-12)


def test_effort_and_velocity_costs_are_normalised_squares(robot):
    h, dof = 4, robot.dof
    actions = np.broadcast_to(robot.effort_max * 0.5, (3, h, dof)).copy()
    actions[1] = 0.0
    b = _batch(robot, n=3, h=h, actions=actions, qd=robot.qd_max)
    np.testing.assert_allclose(EffortCost(1.0, robot.effort_max).evaluate(b), [h * 0.25, 0.0, h * 0.25])
    np.testing.assert_allclose(JointVelocityCost(1.0, robot.qd_max).evaluate(b), h * 1.0)
    np.testing.assert_allclose(TerminalVelocityCost(1.0, robot.qd_max).evaluate(b), 1.0)


def test_joint_limit_cost_zero_inside_growing_into_margin_and_beyond(robot):
    term = JointLimitCost(1.0, robot.q_min, robot.q_max, margin=0.1)
    mid = 0.5 * (robot.q_min + robot.q_max)
    costs = []
    for depth in (-0.05, 0.05, 0.1, 0.2):  # into the margin of joint 0's upper limit
        q = mid.copy()
        q[0] = robot.q_max[0] - 0.1 + depth
        costs.append(JointLimitCost.evaluate(term, _batch(robot, n=1, h=3, q=q))[0])
    assert costs[0] == 0.0
    assert 0.0 < costs[1] < costs[2] < costs[3]
    np.testing.assert_allclose(costs[1], 3 * 0.5 ** 2)


def test_uncertainty_cost_sums_disagreement_and_averages_particles(arm3):
    dis = np.zeros((2, 3, 4))
    dis[0] = [[1, 1, 1, 1], [0, 0, 0, 0], [2, 2, 2, 2]]
    b = _batch(arm3, n=2, p=3, h=4, dis=dis)
    np.testing.assert_allclose(UncertaintyCost(1.0).evaluate(b), [4.0, 0.0])


def test_trajectory_cost_weights_goal_and_non_finite(arm3):
    cost = make_task_cost(arm3, CostWeights(ee_distance=2.0, uncertainty=0.0))
    goal = arm3.fk(arm3.home_q) + 0.1
    b = _batch(arm3, n=3, h=5, goal=goal)
    b.states[2, 0, 3, 0] = np.nan  # a model that blew up
    total = cost(b)
    parts = cost.breakdown(b)
    assert 'uncertainty' not in parts  # weight 0: not computed
    np.testing.assert_allclose(total[:2], sum(parts.values())[:2])
    assert total[2] == INVALID_COST
    np.testing.assert_allclose(parts['ee_distance'][0], 2.0 * 5 * np.linalg.norm([0.1] * 3))
    # Without a goal only the goal-free terms are active.
    b.goal = None
    assert 'ee_distance' not in cost.breakdown(b)
    cost.set_weights(CostWeights(effort=3.0, joint_limit_margin=0.2))
    terms = {t.name: t for t in cost.terms}
    assert terms['effort'].weight == 3.0 and terms['joint_limit'].margin == 0.2


def test_goal_term_without_fk_is_refused():
    with pytest.raises(ValueError, match='forward-kinematics'):
        TrajectoryCost([EndEffectorDistanceCost(1.0)], dof=3, fk=None)


# ---- rollout and dynamics -----------------------------------------------------------------------
def test_double_integrator_rollout_matches_closed_form():
    dyn = DoubleIntegratorDynamics(2, dt=0.1, inertia=2.0, damping=0.0)
    u = np.zeros((3, 4, 2))
    u[:, :, 0] = [[2.0], [0.0], [-2.0]]
    buf = RolloutBuffers(3, 4, 4)
    assert rollout(dyn, np.array([0.5, 0, 0, 0]), u, buf, np.random.default_rng(0))
    # Constant acceleration 1 rad/s² with semi-implicit Euler: qd_k = k·a·dt, q_k = a·dt²·k(k+1)/2.
    k = np.arange(5)
    np.testing.assert_allclose(buf.states[0, :, 2], k * 0.1)
    np.testing.assert_allclose(buf.states[0, :, 0], 0.5 + 0.01 * k * (k + 1) / 2)
    np.testing.assert_allclose(buf.states[1, :, 0], 0.5)
    np.testing.assert_allclose(buf.states[2, :, 0], 0.5 - 0.01 * k * (k + 1) / 2)
    assert np.all(buf.disagreement[:3] == 0)


def test_double_integrator_from_robot_uses_mass_matrix(arm3):
    dyn = DoubleIntegratorDynamics.from_robot(arm3)
    assert dyn.state_dim == 6 and np.all(dyn.inv_m > 0) and not np.allclose(dyn.inv_m, 1.0)


class NumpyEnsemble:
    """A real, analytic ensemble: E double integrators whose inertias differ by member.
    Same interface as EnsembleRuntime.predict (float32 (E,B,S) mean deltas and log-variances)."""

    def __init__(self, dof, inertias, dt=0.02):
        self.members = [DoubleIntegratorDynamics(dof, dt, m, 0.1) for m in inertias]
        self.ensemble_size = len(self.members)
        self.state_dim, self.action_dim = 2 * dof, dof
        self.calls = []

    def predict(self, states, actions):
        self.calls.append(states.shape[0])
        means = np.stack([m.step(np.asarray(states, float), np.asarray(actions, float))[0] - states
                          for m in self.members]).astype(np.float32)
        return means, np.full_like(means, -6.0)


def test_ensemble_adapter_expectation_is_member_mean_with_disagreement():
    ens = NumpyEnsemble(2, [1.0, 1.0, 1.0])
    dyn = EnsembleDynamics(ens)
    s = np.zeros((4, 4))
    a = np.ones((4, 2))
    nxt, dis = dyn.step(s, a)
    ref, _ = ens.members[0].step(s, a)
    np.testing.assert_allclose(nxt, ref, rtol=1e-6)
    np.testing.assert_allclose(dis, 0.0, atol=1e-7)
    ens2 = NumpyEnsemble(2, [0.5, 1.0, 2.0])
    nxt2, dis2 = EnsembleDynamics(ens2).step(s, a)
    assert np.all(dis2 > 0)
    expected = np.mean([m.step(s, a)[0] for m in ens2.members], axis=0)
    np.testing.assert_allclose(nxt2, expected, rtol=1e-5)


@pytest.mark.parametrize('mode', ['ts1', 'tsinf'])
def test_ensemble_adapter_particles_follow_members(mode):
    ens = NumpyEnsemble(1, [0.5, 1.0, 2.0])
    dyn = EnsembleDynamics(ens, propagation=mode, num_particles=3, seed=0)
    n, h = 5, 6
    u = np.ones((n, h, 1))
    buf = RolloutBuffers(n * 3, h, 2)
    rollout(dyn, np.zeros(2), u, buf, np.random.default_rng(0))
    assert ens.calls == [n * 3] * h  # one model call per step for the whole population
    final_qd = buf.states[:n * 3, -1, 1].reshape(n, 3)
    if mode == 'tsinf':
        # Each sample's three particles follow the three different members all the way.
        for row in final_qd:
            np.testing.assert_allclose(np.sort(row), [0.02 * h * c for c in (0.5, 1.0, 2.0)], rtol=0.05)
    assert np.all(buf.disagreement[:n * 3] > 0)


# ---- planner ------------------------------------------------------------------------------------
def _planner(robot, dyn=None, **cfg):
    dyn = dyn or DoubleIntegratorDynamics.from_robot(robot)
    base = dict(horizon=12, num_samples=200, num_elites=20, num_iterations=3, time_budget_ms=0.0)
    base.update(cfg)
    return Planner(PlannerConfig(**base), dyn, make_task_cost(robot), -robot.effort_max, robot.effort_max), dyn


def _goal(robot, seed=1):
    rng = np.random.default_rng(seed)
    q = np.clip(robot.home_q + rng.uniform(-0.6, 0.6, robot.dof), robot.q_min + 0.2, robot.q_max - 0.2)
    return robot.fk(q)


@pytest.mark.parametrize('kind', ['cem', 'icem'])
def test_iterations_reduce_cost(arm3, kind):
    start = np.concatenate([arm3.home_q, np.zeros(3)])
    goal = _goal(arm3)
    costs = np.zeros((4, 3))  # seeds x (1, 2, 4 iterations)
    for seed in range(4):
        for j, iters in enumerate((1, 2, 4)):
            planner, _ = _planner(arm3, planner=kind, num_iterations=iters, seed=seed)
            costs[seed, j] = planner.plan(start, goal).cost
    # Same seed, same first population: more iterations never end worse (best sample is kept).
    assert np.all(costs[:, 1] <= costs[:, 0] + 1e-12) and np.all(costs[:, 2] <= costs[:, 1] + 1e-12)
    assert costs[:, 2].mean() < 0.85 * costs[:, 0].mean(), costs
    # And the optimised plan is far better than doing nothing.
    zero, _ = planner._predict(np.zeros((12, 3)), start)
    b = planner.cost.batch(zero[None, None], np.zeros((1, 12, 3)), np.zeros((1, 1, 12)), goal)
    assert costs[:, 2].mean() < 0.7 * planner.cost(b)[0]


@pytest.mark.parametrize('kind', ['cem', 'icem'])
def test_closed_loop_reaches_goal(robot, kind):
    """3 s of simulated time at 50 Hz with the known model as both plant and planner model."""
    planner, plant = _planner(robot, planner=kind)
    goal = _goal(robot)
    s = np.concatenate([robot.home_q, np.zeros(robot.dof)])
    d0 = np.linalg.norm(robot.fk(s[:robot.dof]) - goal)
    dists = []
    for _ in range(150):
        plan = planner.plan(s, goal)
        assert np.all(np.abs(plan.action) <= robot.effort_max + 1e-9)
        s = plant.step(s[None], plan.action[None])[0][0]
        dists.append(np.linalg.norm(robot.fk(s[:robot.dof]) - goal))
    assert d0 > 0.1
    final = np.mean(dists[-25:])
    tol = 0.02 if kind == 'icem' else 0.06  # white-noise CEM chatters more (as in the iCEM paper)
    assert final < tol, (d0, final)


def test_the_executed_mean_is_rolled_out_only_when_its_path_is_asked_for(robot):
    class Counting(DoubleIntegratorDynamics):
        rows: list = []

        def step(self, states, actions):
            self.rows.append(states.shape[0])
            return super().step(states, actions)

    dyn = Counting.from_robot(robot)
    dyn.rows = []
    planner, _ = _planner(robot, dyn, num_samples=50, num_elites=5, horizon=8, num_iterations=2, execute='mean')
    s = np.concatenate([robot.home_q, np.zeros(robot.dof)])
    plan = planner.plan(s, _goal(robot))
    assert len(dyn.rows) == 2 * 8 and min(dyn.rows) > 1        # the two populations only
    ee = plan.ee_path                                           # now the mean's rollout: 8 steps of 1 row
    assert dyn.rows[16:] == [1] * 8
    plan.states, plan.ee_path, plan.disagreement                # once
    assert len(dyn.rows) == 2 * 8 + 8
    states, dis = planner._predict(plan.actions, s)
    np.testing.assert_allclose(plan.states, states)
    np.testing.assert_allclose(plan.disagreement, dis)
    np.testing.assert_allclose(ee, robot.fk(states[:, :robot.dof]))


def test_plan_outputs_shapes_bounds_and_ee_path(robot):
    planner, _ = _planner(robot, num_samples=50, num_elites=5, horizon=8)
    s = np.concatenate([robot.home_q, np.zeros(robot.dof)])
    plan = planner.plan(s, _goal(robot))
    assert plan.action.shape == (robot.dof,) and plan.actions.shape == (8, robot.dof)
    assert plan.states.shape == (9, 2 * robot.dof)
    np.testing.assert_allclose(plan.states[0], s)
    np.testing.assert_allclose(plan.ee_path, robot.fk(plan.states[:, :robot.dof]))
    np.testing.assert_array_equal(plan.action, plan.actions[0])
    assert np.all(np.abs(plan.actions) <= robot.effort_max + 1e-9)
    assert plan.stats.iterations == 3 and not plan.stats.budget_cut
    assert plan.stats.samples_evaluated == sum(plan.stats.populations)
    assert np.isfinite(plan.cost) and plan.cost == plan.stats.best_cost


def test_icem_population_decays_and_reuses_elites(arm3):
    planner, _ = _planner(arm3, planner='icem', num_samples=200, num_elites=20, population_decay=2.0,
                          keep_elites_fraction=0.5, num_iterations=3)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    first = planner.plan(s, _goal(arm3)).stats.populations
    # 200 sampled; then 100 + 10 kept elites; then 50 + 10 kept + the mean.
    assert first == [200, 110, 61]
    # Next plan: the first iteration also carries the shifted elites of the previous plan.
    assert planner.plan(s, _goal(arm3)).stats.populations[0] == 210


def test_warm_start_shifts_previous_mean(arm3):
    planner, _ = _planner(arm3, horizon=6, num_iterations=1, num_elites=5, num_samples=20,
                          init_std=0.01, min_std=0.0, alpha=0.99)
    seq = np.linspace(-1, 1, 18).reshape(6, 3)
    planner._mean = seq.copy()
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    planner.plan(s, _goal(arm3), shift=1)
    # With alpha≈1 the refit barely moves the mean: it is the previous mean shifted by one step,
    # the last step filled with zero effort.
    expected = np.vstack([seq[1:], np.zeros((1, 3))])
    np.testing.assert_allclose(planner.warm_start, expected, atol=0.02)
    planner._mean = seq.copy()
    planner.plan(s, _goal(arm3), shift=2)
    np.testing.assert_allclose(planner.warm_start, np.vstack([seq[2:], np.zeros((2, 3))]), atol=0.02)
    planner.configure(planner.config.replace(shift_fill='last'))
    planner._mean = seq.copy()
    planner.plan(s, _goal(arm3), shift=1)
    np.testing.assert_allclose(planner.warm_start, np.vstack([seq[1:], seq[-1:]]), atol=0.02)


def test_configure_changes_horizon_live(arm3):
    planner, _ = _planner(arm3, horizon=10)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    planner.plan(s, _goal(arm3))
    planner.configure(planner.config.replace(horizon=5, num_samples=40, num_elites=4))
    plan = planner.plan(s, _goal(arm3))
    assert plan.actions.shape == (5, 3) and planner.warm_start.shape == (5, 3)
    planner.configure(planner.config.replace(horizon=14))
    assert planner.plan(s, _goal(arm3)).actions.shape == (14, 3)
    with pytest.raises(ValueError):
        planner.configure(planner.config.replace(num_elites=1000))


class SlowDynamics(DoubleIntegratorDynamics):
    """The analytic model plus a fixed sleep per step: a stand-in for an expensive network."""

    def __init__(self, robot, sleep_s, per_row_s=0.0):
        m = DoubleIntegratorDynamics.from_robot(robot)
        super().__init__(robot.dof, m.dt, 1.0 / m.inv_m, m.damping)
        self.sleep_s, self.per_row_s = sleep_s, per_row_s
        self.step_times, self.step_starts = [], []

    def step(self, states, actions):
        t = time.perf_counter()
        self.step_starts.append(t)
        time.sleep(self.sleep_s + self.per_row_s * states.shape[0])
        out = super().step(states, actions)
        self.step_times.append(time.perf_counter() - t)
        return out


class RecordingClock:
    """perf_counter that remembers its readings: the first one of a plan is its start."""

    def __init__(self):
        self.readings = []

    def __call__(self):
        t = time.perf_counter()
        self.readings.append(t)
        return t


def _assert_within_budget(planner, dyn, clock, budget_ms, plan):
    """No model step starts after the deadline (so the overrun is at most one step plus the
    cost evaluation of a rollout that just made it); the wall-clock bound is loose because
    this box is shared."""
    deadline = clock.readings[0] + budget_ms * 1e-3
    late = [t - deadline for t in dyn.step_starts if t > deadline + 5e-3]
    assert not late, f'{len(late)} model steps started after the deadline: {late}'
    assert plan.stats.elapsed_ms <= budget_ms + 1e3 * max(dyn.step_times) + 50.0, plan.stats


def _reset_recorders(dyn, clock):
    dyn.step_times.clear()
    dyn.step_starts.clear()
    clock.readings.clear()


def test_time_budget_is_honoured_and_best_plan_returned(arm3):
    dyn = SlowDynamics(arm3, 0.002)
    # execute='best': the returned plan is the best sample itself (the mean's extra rollout and its
    # budget reserve, learnt from the first plan, are tested on their own below)
    planner, _ = _planner(arm3, dyn=dyn, horizon=10, num_iterations=20, time_budget_ms=60.0, execute='best')
    planner.clock = clock = RecordingClock()
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    for _ in range(3):
        _reset_recorders(dyn, clock)
        plan = planner.plan(s, _goal(arm3))
        st = plan.stats
        assert st.budget_cut and 1 <= st.iterations < 20
        _assert_within_budget(planner, dyn, clock, 60.0, plan)
        assert plan.states is not None and np.isfinite(plan.cost)


def test_budget_shrinks_the_population_so_an_iteration_fits(arm3):
    dyn = SlowDynamics(arm3, 0.0, per_row_s=5e-5)  # 200 samples x 10 steps = 100 ms > budget
    planner, _ = _planner(arm3, dyn=dyn, horizon=10, num_samples=200, num_elites=20, time_budget_ms=60.0)
    planner.clock = clock = RecordingClock()
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    first = planner.plan(s, _goal(arm3))  # no speed estimate yet: abandoned mid-rollout
    assert first.stats.iterations == 0 and first.states is None
    planned = 0
    for _ in range(4):
        _reset_recorders(dyn, clock)
        plan = planner.plan(s, _goal(arm3))
        assert plan.stats.population_capped, plan.stats
        _assert_within_budget(planner, dyn, clock, 60.0, plan)
        if plan.stats.iterations >= 1:
            assert 20 <= plan.stats.populations[0] < 200 and plan.states is not None
            planned += 1
    # The speed model adapts (a load spike may still cost one plan on this shared box).
    assert planned >= 3


def test_budget_too_small_for_one_iteration_returns_warm_start(arm3):
    dyn = SlowDynamics(arm3, 0.005)
    planner, _ = _planner(arm3, dyn=dyn, horizon=10, time_budget_ms=1.0)
    seq = np.full((10, 3), 0.5)
    planner._mean = seq.copy()
    plan = planner.plan(np.concatenate([arm3.home_q, np.zeros(3)]), _goal(arm3))
    assert plan.stats.iterations == 0 and plan.stats.budget_cut
    assert plan.states is None and plan.ee_path is None and plan.cost == float('inf')
    np.testing.assert_allclose(plan.actions, np.vstack([seq[1:], np.zeros((1, 3))]))
    assert len(dyn.step_times) == 1  # abandoned after the first step past the deadline


def test_planner_with_ensemble_adapter_avoids_uncertain_actions(arm3):
    """The risk term steers the plan: members disagree more the harder joint 0 is pushed."""
    ens = NumpyEnsemble(3, [np.array([0.05, 0.13, 0.03]), np.array([0.5, 0.13, 0.03]),
                            np.array([0.005, 0.13, 0.03])])
    dyn = EnsembleDynamics(ens)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    goal = arm3.fk(arm3.home_q + np.array([0.8, 0.0, 0.0]))  # reaching it needs joint 0
    push, risk = [], []
    for beta in (0.0, 50.0):
        cost = make_task_cost(arm3, CostWeights(uncertainty=beta))
        planner = Planner(PlannerConfig(horizon=10, num_samples=200, num_elites=20, time_budget_ms=0.0),
                          dyn, cost, -arm3.effort_max, arm3.effort_max)
        plan = planner.plan(s, goal)
        push.append(np.abs(plan.actions[:, 0]).mean())
        risk.append(plan.disagreement.sum())
        assert plan.disagreement.shape == (10,) and np.all(plan.disagreement >= 0)
    assert push[1] < 0.5 * push[0], push
    assert risk[1] < risk[0], risk
    # execute='mean' reports the mean sequence's own prediction and disagreement.
    planner.configure(planner.config.replace(execute='mean'))
    plan = planner.plan(s, goal)
    assert plan.states.shape == (11, 6) and plan.disagreement.shape == (10,)


def test_planner_rejects_mismatched_bounds(arm3):
    dyn = DoubleIntegratorDynamics.from_robot(arm3)
    with pytest.raises(ValueError, match='3 entries'):
        Planner(PlannerConfig(), dyn, make_task_cost(arm3), -np.ones(2), np.ones(2))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['arm3', 'arm7'])
def test_closed_loop_on_mujoco_sim_with_the_analytic_model(name):
    """Oracle check: the plant is the real MuJoCo arm (coupled, configuration-dependent inertia,
    gravity compensation), the planner's model only the diagonal double integrator. MPC
    feedback must still bring the end effector to the goal within 3 s."""
    from mbrl_ros.core.sim import SimArm
    robot = RobotModel.load(name)
    sim = SimArm(robot)
    sim.reset()
    planner, _ = _planner(robot, planner='icem')
    goal = _goal(robot)
    dists = []
    for _ in range(150):
        plan = planner.plan(np.concatenate([sim.q, sim.qd]), goal)
        sim.set_command(plan.action)
        sim.step(10)  # 0.02 s at 500 Hz
        dists.append(np.linalg.norm(sim.ee_position() - goal))
    assert dists[0] > 0.1
    assert np.mean(dists[-25:]) < 0.03, dists[-25:]


# ---- receding-horizon controller (what the node wires) -------------------------------------------
def test_mpc_controller_refuses_bad_inputs_and_plans_good_ones(arm3):
    from mbrl_ros.core.planning import MpcController
    mpc = MpcController(arm3, DoubleIntegratorDynamics.from_robot(arm3),
                        PlannerConfig(num_samples=60, num_elites=6, horizon=8, time_budget_ms=0.0))
    assert 'goal' in mpc.set_goal([0.1, float('nan'), 0.2])
    assert mpc.set_goal(_goal(arm3)) is None
    for q, qd in (([0, 0], [0, 0, 0]), ([0, 0, 'x'], [0, 0, 0]), ([0, 0, 0], [0, np.inf, 0]), (None, None)):
        res = mpc.compute(q, qd)
        assert res.command is None and res.plan is None and 'state' in res.reason
    res = mpc.compute(arm3.home_q, np.zeros(3), now=10.0)
    assert res.reason is None and res.command.shape == (3,)
    assert np.all(np.abs(res.command) <= arm3.effort_max)


def test_mpc_controller_live_parameters_all_or_nothing(arm3):
    from mbrl_ros.core.planning import MpcController
    mpc = MpcController(arm3, DoubleIntegratorDynamics.from_robot(arm3))
    default = mpc.config.horizon
    why = mpc.apply_parameters({'horizon': default + 3, 'num_elites': 5000})
    assert 'num_elites' in why and mpc.config.horizon == default  # nothing applied
    assert 'planner' in mpc.apply_parameters({'planner': 'mppi'})
    assert mpc.apply_parameters({'horizon': 8, 'uncertainty_penalty': 4.0, 'planner': 'cem'}) is None
    assert mpc.config.horizon == 8 and mpc.config.planner == 'cem'
    assert {t.name: t.weight for t in mpc.cost.terms}['uncertainty'] == 4.0
    mpc.set_goal(_goal(arm3))
    assert mpc.compute(arm3.home_q, np.zeros(3)).plan.actions.shape == (8, 3)


def test_mpc_controller_shifts_by_elapsed_periods_and_swaps_models(arm3):
    from mbrl_ros.core.planning import MpcController
    mpc = MpcController(arm3, DoubleIntegratorDynamics.from_robot(arm3),
                        PlannerConfig(num_samples=40, num_elites=4, horizon=10, num_iterations=1,
                                      init_std=0.01, min_std=0.0, alpha=0.99, time_budget_ms=0.0))
    mpc.set_goal(_goal(arm3))
    mpc.compute(arm3.home_q, np.zeros(3), now=1.0)
    seq = np.linspace(-1, 1, 30).reshape(10, 3)
    mpc.planner._mean = seq.copy()
    mpc.compute(arm3.home_q, np.zeros(3), now=1.06)  # three periods later (a missed cycle or two)
    np.testing.assert_allclose(mpc.planner.warm_start[:7], seq[3:], atol=0.02)
    with pytest.raises(ValueError, match='dims'):
        mpc.set_dynamics(DoubleIntegratorDynamics(2))
    ens = NumpyEnsemble(3, [1.0, 2.0])
    mpc.set_dynamics(EnsembleDynamics(ens, propagation='tsinf', num_particles=2))
    res = mpc.compute(arm3.home_q, np.zeros(3), now=2.0)
    assert res.command is not None and res.plan.disagreement.shape == (10,)
    assert ens.calls and ens.calls[0] % 2 == 0


def test_step_time_model_learns_fixed_and_per_row_cost():
    from mbrl_ros.core.planning.optimizers import StepTimeModel
    m = StepTimeModel()
    assert not m.ready
    m.observe(200, 0.001 + 200 * 1e-5)
    assert m.ready and m.rows_within(0.0015) == 100  # one batch size: proportional guess
    m.observe(50, 0.001 + 50 * 1e-5)
    assert m.predict(100) == pytest.approx(0.002)
    assert m.rows_within(0.002) == pytest.approx(100, abs=1)
    assert m.rows_within(0.0005) < 0  # not even the fixed cost fits


def test_planner_refuses_non_finite_inputs(arm3):
    planner, _ = _planner(arm3, num_samples=20, num_elites=4)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    with pytest.raises(ValueError, match='non-finite'):
        planner.plan(np.where(np.arange(6) == 2, np.nan, s), _goal(arm3))
    with pytest.raises(ValueError, match='non-finite'):
        planner.plan(s, [0.1, np.inf, 0.2])
    with pytest.raises(ValueError):
        planner.plan(s[:4], _goal(arm3))


def _linear_ensemble_onnx(path, weights):
    """A real ONNX ensemble without torch: member e predicts delta = [s, a] @ W_e (linear)."""
    onnx = pytest.importorskip('onnx')
    from onnx import TensorProto, helper, numpy_helper
    E, I, S = weights.shape
    A = I - S
    graph = helper.make_graph(
        [helper.make_node('Concat', ['state', 'action'], ['x'], axis=-1),
         helper.make_node('MatMul', ['x', 'W'], ['mean']),  # (B,I) @ (E,I,S) -> (E,B,S)
         helper.make_node('Mul', ['mean', 'zero'], ['z']),
         helper.make_node('Add', ['z', 'lv'], ['logvar'])],
        'linear_ensemble',
        [helper.make_tensor_value_info('state', TensorProto.FLOAT, ['B', S]),
         helper.make_tensor_value_info('action', TensorProto.FLOAT, ['B', A])],
        [helper.make_tensor_value_info('mean', TensorProto.FLOAT, [E, 'B', S]),
         helper.make_tensor_value_info('logvar', TensorProto.FLOAT, [E, 'B', S])],
        [numpy_helper.from_array(weights.astype(np.float32), 'W'),
         numpy_helper.from_array(np.zeros(1, np.float32), 'zero'),
         numpy_helper.from_array(np.full(1, -6.0, np.float32), 'lv')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


@pytest.mark.parametrize('mode, particles', [('expectation', 1), ('ts1', 2), ('tsinf', 2)])
def test_ensemble_adapter_over_the_onnx_runtime(tmp_path, arm3, mode, particles):
    """EnsembleDynamics on the real EnsembleRuntime (onnxruntime): every propagation mode plans."""
    from mbrl_ros.core.runtime.ensemble import EnsembleRuntime
    ref = DoubleIntegratorDynamics.from_robot(arm3)
    # Linear map of the double integrator's delta, one member with 20 % more inertia.
    w = np.zeros((2, 9, 6))
    for e, scale in enumerate((1.0, 1.0 / 1.2)):
        dt, inv_m = ref.dt, ref.inv_m * scale
        for j in range(3):
            # qd' - qd = dt·inv_m·(u - d·qd); q' - q = dt·qd'
            w[e, 3 + j, 3 + j] = -dt * inv_m[j] * ref.damping[j]
            w[e, 6 + j, 3 + j] = dt * inv_m[j]
            w[e, 3 + j, j] = dt * (1 - dt * inv_m[j] * ref.damping[j])
            w[e, 6 + j, j] = dt * dt * inv_m[j]
    _linear_ensemble_onnx(tmp_path / 'ensemble.onnx', w)
    rt = EnsembleRuntime(tmp_path / 'ensemble.onnx')
    dyn = EnsembleDynamics(rt, propagation=mode, num_particles=particles)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    u = np.array([[1.0, -2.0, 0.5]])
    if mode == 'expectation':
        nxt, dis = dyn.step(s[None], u)
        members = [DoubleIntegratorDynamics(3, ref.dt, 1 / (ref.inv_m * k), ref.damping) for k in (1.0, 1 / 1.2)]
        expected = np.mean([m.step(s[None], u)[0] for m in members], axis=0)
        np.testing.assert_allclose(nxt, expected, atol=1e-5)
        assert dis[0] > 0
    planner, _ = _planner(arm3, dyn=dyn, num_samples=60, num_elites=6, horizon=8)
    plan = planner.plan(s, _goal(arm3))
    assert plan.stats.iterations == 3 and np.isfinite(plan.cost)
    assert plan.disagreement.shape == (8,) and np.all(plan.disagreement >= 0)


def test_live_reconfiguration_between_plans_never_breaks_the_buffers(arm3):
    planner, _ = _planner(arm3, planner='icem', num_samples=100, num_elites=20, keep_elites_fraction=1.0)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    changes = [dict(num_elites=4, num_samples=20), dict(keep_elites_fraction=0.0), dict(planner='cem'),
               dict(planner='icem', keep_elites_fraction=1.0, num_elites=10), dict(horizon=5),
               dict(num_iterations=1, execute='mean')]
    for ch in changes:
        planner.plan(s, _goal(arm3))
        planner.configure(planner.config.replace(**ch))
        plan = planner.plan(s, _goal(arm3))
        assert plan.actions.shape == (planner.config.horizon, 3) and np.isfinite(plan.cost)


def test_property_any_valid_config_sequence_plans_within_bounds(arm3):
    """Whatever valid settings a user applies live, in any order, the next plan works."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    configs = st.builds(
        PlannerConfig, planner=st.sampled_from(['cem', 'icem']), horizon=st.integers(1, 8),
        num_samples=st.integers(12, 40), num_iterations=st.integers(1, 3), num_elites=st.integers(2, 12),
        alpha=st.floats(0.0, 0.9), noise_beta=st.floats(0.0, 3.0), population_decay=st.floats(1.0, 3.0),
        keep_elites_fraction=st.floats(0.0, 1.0), shift_fill=st.sampled_from(['zero', 'last']),
        execute=st.sampled_from(['best', 'mean']), time_budget_ms=st.just(0.0))
    planner, _ = _planner(arm3, num_samples=20, num_elites=4, horizon=4)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    goal = _goal(arm3)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(seq=st.lists(st.tuples(configs, st.integers(1, 4)), min_size=1, max_size=4))
    def run(seq):
        for cfg, shift in seq:
            planner.configure(cfg)
            plan = planner.plan(s, goal, shift=shift)
            assert plan.actions.shape == (cfg.horizon, 3)
            assert np.all(np.abs(plan.actions) <= arm3.effort_max + 1e-9)
            assert plan.states.shape == (cfg.horizon + 1, 6) and np.isfinite(plan.cost)
    run()


# ---- one member per sample through the partitioned graph (TS with P=1) -------------------------
class PartitionedNumpyEnsemble(NumpyEnsemble):
    """NumpyEnsemble with a 'partitioned graph': member e evaluates only row block e."""
    partitioned = True

    def predict_partitioned(self, states, actions):
        self.calls.append(('partitioned', states.shape))
        means = np.stack([m.step(np.asarray(s, float), np.asarray(a, float))[0] - s
                          for m, s, a in zip(self.members, states, actions)]).astype(np.float32)
        return means, np.full_like(means, -6.0)


@pytest.mark.parametrize('mode', ['ts1', 'tsinf'])
@pytest.mark.parametrize('rows', [9, 12])
def test_one_member_per_sample_uses_each_member_for_its_rows_only(mode, rows):
    ens = PartitionedNumpyEnsemble(1, [0.5, 1.0, 2.0])
    dyn = EnsembleDynamics(ens, propagation=mode, num_particles=1, seed=0)
    assert dyn.row_multiple == 3
    rng = np.random.default_rng(3)
    s = np.zeros((rows, 2))
    a = np.ones((rows, 1))
    dyn.begin_rollout(rows, rng)
    nxt, dis = dyn.step(s, a)
    # One partitioned call with rows padded to a multiple of E, no full-ensemble call.
    assert ens.calls == [('partitioned', (3, -(-rows // 3), 2))]
    gains = {round(v, 6) for v in nxt[:, 1] / 0.02}
    assert gains == {0.5, 1.0, 2.0}                     # every member gets rows
    members = [[0.5, 1.0, 2.0].index(round(0.02 / v, 6)) for v in nxt[:, 1]]   # gain = 1 / inertia
    # Round robin from the rotation: consecutive rows (e.g. the kept elites) use different members.
    assert all((members[i + 1] - members[i]) % 3 == 1 for i in range(rows - 1))
    np.testing.assert_array_equal(dis, 0.0)


def test_one_member_per_sample_matches_the_full_ensemble_on_the_shipped_bundle():
    from mbrl_ros.core.bundle import load_bundle
    from mbrl_ros.resources import find_resource
    rt = load_bundle(find_resource('models', 'arm7')).ensemble
    assert rt.partitioned is not None
    rng = np.random.default_rng(0)
    for rows in (20, 23):
        s, a = rng.standard_normal((rows, 14)), rng.standard_normal((rows, 7))
        dyn = EnsembleDynamics(rt, propagation='tsinf', num_particles=1)
        dyn.begin_rollout(rows, rng)
        nxt, _ = dyn.step(s, a)
        mean, _ = rt.predict(s, a)
        member = (np.arange(rows) + dyn._rotation) % rt.ensemble_size
        np.testing.assert_allclose(nxt, s + mean[member, np.arange(rows)], atol=1e-5)


def test_planner_rounds_populations_to_the_models_row_multiple(arm3):
    ens = PartitionedNumpyEnsemble(3, [1.0, 1.1, 0.9, 1.2, 0.8])
    dyn = EnsembleDynamics(ens, propagation='tsinf', num_particles=1)
    planner, _ = _planner(arm3, dyn=dyn, planner='icem', num_samples=41, num_elites=6, horizon=5)
    s = np.concatenate([arm3.home_q, np.zeros(3)])
    for _ in range(2):   # the second plan also carries elites over
        plan = planner.plan(s, _goal(arm3))
        assert all(p % 5 == 0 for p in plan.stats.populations), plan.stats.populations
        assert all(c[0] == 'partitioned' for c in ens.calls)


# ---- joint-space guidance: IK of the goal -------------------------------------------------------
def test_ik_reaches_goals_within_limits_near_the_reference(robot):
    from mbrl_ros.core.planning import solve_ik
    rng = np.random.default_rng(5)
    for _ in range(5):
        q_goal, q_ref = robot.sample_configurations(rng, 2, margin=0.2)
        goal = robot.fk(q_goal)
        q, err = solve_ik(robot, goal, q_ref, margin=0.1, rng=rng)
        assert err < 2e-3 and np.linalg.norm(robot.fk(q) - goal) < 2e-3
        assert np.all(q >= robot.q_min + 0.1 - 1e-9) and np.all(q <= robot.q_max - 0.1 + 1e-9)
    # A goal already reached from the reference: the reference itself (nearest solution) comes back.
    q, err = solve_ik(robot, robot.fk(q_ref), q_ref, margin=0.1)
    assert err < 2e-3 and np.linalg.norm(q - q_ref) < 0.05


def test_ik_of_an_unreachable_goal_reports_its_error(arm3):
    from mbrl_ros.core.planning import solve_ik
    q, err = solve_ik(arm3, [10.0, 0.0, 0.0], arm3.home_q)
    assert err > 1.0 and np.all(np.isfinite(q))


def test_joint_goal_cost_is_quadratic_and_off_without_target(arm7):
    w = CostWeights(joint_goal=2.0)
    cost = make_task_cost(arm7, w)
    term = cost.term('joint_goal')
    states = np.zeros((2, 1, 4, 14))
    states[1, :, 1:, :7] = 0.5
    batch = cost.batch(states, np.zeros((2, 3, 7)), np.zeros((2, 1, 3)), np.zeros(3))
    assert 'joint_goal' not in cost.breakdown(batch)     # no IK solution yet: not scored
    term.target = np.zeros(7)
    np.testing.assert_allclose(cost.breakdown(batch)['joint_goal'], [0.0, 2.0 * 3 * 0.25])


def test_mpc_solves_ik_over_its_first_plans_and_keeps_the_budget(arm7):
    from mbrl_ros.core.planning import MpcController
    dyn = DoubleIntegratorDynamics.from_robot(arm7)
    cfg = PlannerConfig(horizon=6, num_samples=30, num_elites=5, num_iterations=2, time_budget_ms=0.0)
    mpc = MpcController(arm7, dyn, cfg, CostWeights(joint_goal=0.5))
    rng = np.random.default_rng(2)
    q0, qg = arm7.sample_configurations(rng, 2, margin=0.2)
    assert mpc.set_goal(arm7.fk(qg)) is None
    plans = 0
    while mpc.joint_goal is None and plans < 20:
        assert mpc.compute(q0, np.zeros(7)).command is not None
        plans += 1
    assert 1 <= plans <= 10 and np.linalg.norm(arm7.fk(mpc.joint_goal) - arm7.fk(qg)) < 2e-3
    mpc.set_goal(arm7.fk(q0))                       # a new goal drops the old solution
    assert mpc.joint_goal is None
    off = MpcController(arm7, dyn, cfg, CostWeights(joint_goal=0.0))
    off.set_goal(arm7.fk(qg))
    off.compute(q0, np.zeros(7))
    assert off.joint_goal is None and off._ik is None   # weight 0: no IK work at all


def test_joint_goal_pull_ends_once_the_hand_is_at_the_goal(arm7):
    """A redundant arm reaches the goal in many configurations: near the goal the IK pull stops
    (for that goal), so it cannot drag the hand off towards the one solution it found."""
    from mbrl_ros.core.planning import MpcController
    dyn = DoubleIntegratorDynamics.from_robot(arm7)
    cfg = PlannerConfig(horizon=6, num_samples=30, num_elites=5, num_iterations=2, time_budget_ms=0.0)
    mpc = MpcController(arm7, dyn, cfg, CostWeights(joint_goal=0.5, joint_goal_release=0.05))
    rng = np.random.default_rng(2)
    q0, qg = arm7.sample_configurations(rng, 2, margin=0.2)
    goal = arm7.fk(qg)
    mpc.set_goal(goal)
    for _ in range(20):
        mpc.compute(q0, np.zeros(7))
    assert mpc.joint_goal is not None                        # far away: guided
    near = qg + 0.002                                        # hand within a few mm of the goal
    assert np.linalg.norm(arm7.fk(near) - goal) < 0.05
    mpc.compute(near, np.zeros(7))
    assert mpc.joint_goal is None
    for _ in range(5):                                       # and it stays off for this goal,
        mpc.compute(q0, np.zeros(7))
    assert mpc.joint_goal is None and mpc._ik is None
    mpc.set_goal(arm7.fk(q0))                                # a new goal is guided again
    for _ in range(20):
        mpc.compute(qg, np.zeros(7))
    assert mpc.joint_goal is not None
    never = MpcController(arm7, dyn, cfg, CostWeights(joint_goal=0.5, joint_goal_release=0.0))
    never.set_goal(goal)
    for _ in range(20):
        never.compute(q0, np.zeros(7))
    never.compute(near, np.zeros(7))
    assert never.joint_goal is not None                      # release 0: the pull never ends


def test_mean_execution_keeps_its_final_rollout_inside_the_budget(arm7):
    """execute='mean' rolls the final mean out once more: that time comes out of the budget.
    A model whose every call advances a fake clock (0.1 ms + 2 us per row) makes it exact."""
    from mbrl_ros.core.planning.costs import make_task_cost
    from mbrl_ros.core.planning.optimizers import Planner
    now = [0.0]
    inner = DoubleIntegratorDynamics.from_robot(arm7)

    class TimedDynamics:
        state_dim, action_dim, num_particles = inner.state_dim, inner.action_dim, 1

        def begin_rollout(self, rows, rng):
            inner.begin_rollout(rows, rng)

        def step(self, states, actions):
            now[0] += 1e-4 + 2e-6 * states.shape[0]
            return inner.step(states, actions)

    budget = 5.0
    for execute in ('mean', 'best'):
        cfg = PlannerConfig(horizon=8, num_samples=200, num_elites=10, num_iterations=20, time_budget_ms=budget,
                            execute=execute)
        planner = Planner(cfg, TimedDynamics(), make_task_cost(arm7, CostWeights(joint_goal=0.0)),
                          -arm7.effort_max, arm7.effort_max, clock=lambda: now[0])
        q0, qg = arm7.sample_configurations(np.random.default_rng(3), 2, margin=0.2)
        for i in range(10):
            plan = planner.plan(np.concatenate([q0, np.zeros(7)]), arm7.fk(qg))
            assert plan.stats.budget_cut and plan.stats.iterations >= 1
            if i > 0:   # the first plan learns the model's speed (its first iteration always runs)
                assert plan.stats.elapsed_ms <= budget, (execute, i, plan.stats.elapsed_ms)


def test_node_config_file_matches_the_planner_defaults():
    """config/mpc_controller.yaml carries the deployment settings = PlannerConfig()/CostWeights()."""
    import dataclasses

    import yaml

    from mbrl_ros.core.planning.mpc import ALIASES
    from mbrl_ros.resources import find_resource
    params = yaml.safe_load(find_resource('config', 'mpc_controller.yaml').read_text())
    params = {ALIASES.get(k, k): v for k, v in params['mpc_controller']['ros__parameters'].items()}
    checked = 0
    for cls in (PlannerConfig, CostWeights):
        for f in dataclasses.fields(cls):
            if f.name in params:
                assert params[f.name] == f.default, f'{f.name}: yaml {params[f.name]!r} != default {f.default!r}'
                checked += 1
    assert checked >= 20
    assert params['propagation'] in EnsembleDynamics.PROPAGATIONS


def test_offset_free_mpc_removes_the_steady_state_error_of_a_biased_model(arm3):
    """The plant has a constant disturbance torque the planner's model does not know: without the
    bias estimate the arm settles off the goal; with it (offset-free MPC) it settles on the goal."""
    from mbrl_ros.core.planning import MpcController
    model = DoubleIntegratorDynamics.from_robot(arm3)
    push = np.array([1.5, -1.0, 0.8])            # Nm the model does not know about

    def plant(s, u):
        return model.step(s[None], (u + push)[None])[0][0]

    goal = _goal(arm3)
    final = {}
    for gain in (0.0, 0.3):
        mpc = MpcController(arm3, model, PlannerConfig(num_samples=80, num_elites=8, horizon=10,
                                                       time_budget_ms=0.0, bias_gain=gain,
                                                       std_carry=1.5, min_std=0.005))
        mpc.set_goal(goal)
        s = np.concatenate([arm3.home_q, np.zeros(3)])
        for k in range(200):
            s = plant(s, mpc.compute(s[:3], s[3:], now=0.02 * k).command)
        final[gain] = np.linalg.norm(arm3.fk(s[:3]) - goal)
        if gain > 0:
            # The estimate is the disturbance's effect on one step: Δqd = push/m·dt.
            expected = push * model.inv_m * model.dt
            np.testing.assert_allclose(mpc.model_bias[3:], expected, rtol=0.2, atol=1e-4)
    assert final[0.0] > 0.01, final          # the biased model leaves the arm off the goal
    assert final[0.3] < 0.3 * final[0.0] and final[0.3] < 0.005, final


def test_carrying_the_sampling_std_across_plans_stops_the_hover_at_the_goal(arm3):
    """With a perfect model, re-drawing every plan from init_std re-randomises the executed mean each
    period and the arm hovers around the goal; starting from the last plan's spread it settles."""
    from mbrl_ros.core.planning import MpcController
    model = DoubleIntegratorDynamics.from_robot(arm3)
    goal = _goal(arm3)
    tail = {}
    for carry in (0.0, 1.5):
        mpc = MpcController(arm3, model, PlannerConfig(num_samples=100, num_elites=10, horizon=8,
                                                       time_budget_ms=0.0, std_carry=carry, min_std=0.005))
        mpc.set_goal(goal)
        s = np.concatenate([arm3.home_q, np.zeros(3)])
        d = []
        for k in range(250):
            s = model.step(s[None], mpc.compute(s[:3], s[3:], now=0.02 * k).command[None])[0][0]
            d.append(np.linalg.norm(arm3.fk(s[:3]) - goal))
        tail[carry] = max(d[-50:])
    assert tail[0.0] > 0.005 and tail[1.5] < 0.003 and tail[1.5] < 0.3 * tail[0.0], tail
    # A new goal widens the search again.
    mpc.set_goal(goal + 0.05)
    assert mpc.planner._std is None
# ---- planning within what the safety filter sends -------------------------------------------------
def _rate_ok(seq, last, step):
    prev = np.vstack([last[None], seq[:-1]])
    return np.all(np.abs(seq - prev) <= step + 1e-12)


@pytest.mark.parametrize('execute', ['mean', 'best'])
def test_planner_plans_within_scaled_bounds_and_the_rate_limit(arm3, execute):
    planner, _ = _planner(arm3, execute=execute, num_samples=80, num_elites=8, horizon=8)
    hi, step = 0.3 * arm3.effort_max, 0.1 * arm3.effort_max
    planner.set_action_bounds(-hi, hi, step)
    last = np.array([hi[0], -hi[1], 0.0])  # the filter last sent the extremes: a plan must ramp from there
    state = np.concatenate([arm3.home_q, np.zeros(3)])
    for k in range(3):
        plan = planner.plan(state, _goal(arm3), last_action=last)
        assert np.all(np.abs(plan.actions) <= hi + 1e-12)
        assert _rate_ok(plan.actions, last, step), (plan.actions, last)
        # Every sample rolled out was one the filter would pass unchanged, not only the executed one.
        assert _rate_ok(planner._samples[0], last, step)
        last = plan.action
    # Without a last action only the bounds hold (e.g. nothing was sent yet).
    plan = planner.plan(state, _goal(arm3))
    assert np.all(np.abs(plan.actions) <= hi + 1e-12)


def test_planner_refuses_bad_bounds_and_steps(arm3):
    planner, _ = _planner(arm3)
    e = arm3.effort_max
    for low, high, step in ((-e, -e, None), (-e[:2], e[:2], None), (-e, e, np.zeros(3)), (-e, e, [1.0, 1.0])):
        with pytest.raises(ValueError):
            planner.set_action_bounds(low, high, step)
    assert np.array_equal(planner.high, e)  # unchanged after refusals


def test_mpc_controller_follows_command_limits_and_margin(arm3):
    from mbrl_ros.core.planning import MpcController
    from mbrl_ros.core.safety import CommandLimits
    mpc = MpcController(arm3, DoubleIntegratorDynamics.from_robot(arm3),
                        PlannerConfig(num_samples=60, num_elites=6, horizon=8, time_budget_ms=0.0),
                        CostWeights(joint_limit_margin=0.1))
    mpc.set_goal(_goal(arm3))
    limits = CommandLimits(0.3 * arm3.effort_max, 0.1 * arm3.effort_max, np.full(3, 0.25))
    mpc.set_command_limits(limits)
    assert mpc.joint_limit_margin == 0.25 and mpc.cost.term('joint_limit').margin == 0.25
    last = np.zeros(3)
    for k in range(5):
        res = mpc.compute(arm3.home_q, np.zeros(3), now=float(k) * 0.02, last_action=last)
        assert np.all(np.abs(res.command) <= limits.effort + 1e-12)
        assert np.all(np.abs(res.command - last) <= limits.step + 1e-12)
        # What the filter would send is exactly the plan: nothing to clamp, nothing to rate-limit.
        assert np.allclose(limits.bound(res.command, last), res.command)
        last = res.command
    # A live change of the planner's own margin keeps the filter's floor; lifting the limits restores it.
    assert mpc.apply_parameters({'joint_limit_margin': 0.05}) is None
    assert mpc.cost.term('joint_limit').margin == 0.25
    mpc.set_command_limits(None)
    assert mpc.cost.term('joint_limit').margin == 0.05 and np.array_equal(mpc.planner.high, arm3.effort_max)
    # effort_limit_scale 0: a box of zero width in effect, no error.
    mpc.set_command_limits(CommandLimits(np.zeros(3), 0.1 * arm3.effort_max, np.zeros(3)))
    res = mpc.compute(arm3.home_q, np.zeros(3), last_action=last)
    assert np.all(np.abs(res.command) <= 1e-8 * arm3.effort_max)
    with pytest.raises(ValueError):
        mpc.set_command_limits(CommandLimits(np.ones(2), np.ones(2), np.zeros(2)))
