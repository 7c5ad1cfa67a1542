"""The operational-space PD baseline (ROS-free), the sim's payload and friction, and the
closed-loop / osc-tune bench CLIs."""
import json

import numpy as np
import pytest

from mbrl_ros.core.baseline import (RULE_CONTROL_PERIOD_S, RULE_MAX_STEP, OscGains, OscPd, TaskJacobian, arm_inertia,
                                    default_gains, load_gains_file, shipped_gains, tune_gains, write_gains)
from mbrl_ros.core.evaluation import evaluate_reaching
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.core.sim import SimArm


@pytest.mark.parametrize('name', ['arm3', 'arm7'])
def test_jacobian_matches_finite_differences_of_fk(name):
    robot = RobotModel.load(name)
    jac = TaskJacobian(robot)
    rng = np.random.default_rng(3)
    for q in robot.sample_configurations(rng, 5):
        x, J = jac(q)
        eps = 1e-6
        fd = np.stack([(robot.fk(q + e) - robot.fk(q - e)) / (2 * eps) for e in eps * np.eye(robot.dof)], axis=1)
        assert np.allclose(x, robot.fk(q), atol=1e-9)
        assert np.allclose(J, fd, atol=1e-6)


def test_law_zero_at_goal_at_rest_pushes_towards_goal_and_is_clipped(arm7):
    pd = OscPd(arm7, OscGains(kp=300.0, kd=40.0, kq=0.5))
    q = arm7.home_q.copy()
    x = arm7.fk(q)
    zero = np.zeros(arm7.dof)
    assert np.allclose(pd(q, zero, x), 0.0, atol=1e-12)
    # A goal 2 cm away along +x: the torque moves the hand towards it (first-order: J u along e).
    goal = x + np.array([0.02, 0.0, 0.0])
    u = pd(q, zero, goal)
    _, J = TaskJacobian(arm7)(q)
    assert np.dot(J @ u, goal - x) > 0
    assert np.allclose(u, J.T @ (300.0 * (goal - x)))
    # Moving with no error: damping opposes the motion (power u·qd < 0).
    qd = np.linspace(-0.5, 0.5, arm7.dof)
    assert np.dot(pd(q, qd, x), qd) < 0
    # A far goal with stiff gains saturates: within the effort limits, on some joint at the limit.
    stiff = OscPd(arm7, OscGains(kp=1e5, kd=0.0, kq=0.0))
    u = stiff(q, zero, x + np.array([0.5, 0.5, -0.3]))
    assert np.all(np.abs(u) <= arm7.effort_max + 1e-12)
    assert np.any(np.isclose(np.abs(u), arm7.effort_max))
    with pytest.raises(ValueError, match='3-vector goal'):
        pd(q, zero, [0.1, 0.2])
    with pytest.raises(ValueError, match='kp'):
        OscPd(arm7, OscGains(kp=-1.0, kd=1.0, kq=0.0))


def test_every_arm_has_sane_gains(arm3, arm7, tmp_path):
    for robot in (arm3, arm7):
        g = default_gains(robot)
        assert g.kp > 0 and g.kd > 0 and g.kq >= 0
        # The rule's cap: a 10 cm error asks no joint more than its limit (typical columns of J).
        assert np.all(g.kp * 0.1 * arm_inertia(robot).column_norms <= robot.effort_max * (1 + 1e-9))
        # Shipped for the built-in arms; an arm not in the file gets the rule.
        assert robot.name in load_gains_file()
        assert shipped_gains(robot, path=tmp_path / 'none.yaml') == default_gains(robot)
    # write_gains keeps the other robots' entries; a dof mismatch falls back to the rule.
    path = tmp_path / 'osc_pd.yaml'
    write_gains(arm3, OscGains(111.0, 22.0, 0.0), {'goals': 2}, path=path)
    write_gains(arm7, OscGains(333.0, 44.0, 1.0), {'goals': 2}, path=path)
    assert shipped_gains(arm3, path) == OscGains(111.0, 22.0, 0.0)
    assert shipped_gains(arm7, path) == OscGains(333.0, 44.0, 1.0)
    text = path.read_text().replace('dof: 3', 'dof: 4')
    path.write_text(text)
    assert shipped_gains(arm3, path) == default_gains(arm3)


def test_the_gain_rule_holds_a_light_wristed_urdf_arm_at_50_hz():
    """KUKA iiwa as pybullet_data ships it: home stretched straight up (singular: the apparent mass
    there is unbounded) and wrists of 1e-3 kg m^2 without rotor inertia. The rule once gave
    Kd = 3.6e6 N s/m and kq = 1.5 N m s/rad here (0 % of goals); gains from typical configurations,
    capped by what a 20 ms held command can damp, reach chained goals."""
    import pybullet_data
    robot = RobotModel.load(f'{pybullet_data.getDataPath()}/kuka_iiwa/model.urdf')
    g, arm = default_gains(robot), arm_inertia(robot)
    assert np.isfinite(arm.heavy_kg) and arm.heavy_kg < 100.0, arm
    T, s = RULE_CONTROL_PERIOD_S, RULE_MAX_STEP
    assert g.kq * T <= s * arm.lightest_joint * (1 + 1e-9) and g.kd * T <= s * arm.light_kg * (1 + 1e-9), g
    res = evaluate_reaching(OscPd(robot, g), robot, n_goals=6, seed=5)
    s = res.summary()
    assert s['success_rate'] >= 5 / 6 and s['final_distance_m']['median'] < 0.005, s
    assert not res.failures


def test_shipped_gains_reach_chained_goals_on_arm3(arm3):
    res = evaluate_reaching(OscPd(arm3), arm3, n_goals=8, seed=5)
    s = res.summary()
    assert s['success_rate'] >= 0.75, s
    assert s['final_distance_m']['median'] < 0.005, s
    assert not res.failures


def test_tune_gains_on_a_tiny_grid_picks_the_best_row(arm3):
    best, rows = tune_gains(arm3, n_goals=2, seed=4, kp=(5.0, 100.0), zeta=(0.7,), kq=(0.0,))
    assert len(rows) == 2 and best.kp == 100.0   # 5 N/m cannot move the arm 10 cm in 3 s
    assert rows[1]['success_rate'] > rows[0]['success_rate']


# ---- the sim's payload and friction ---------------------------------------------------------
def test_payload_sags_under_gravity_compensation_and_is_settable(arm3):
    nominal, loaded = SimArm(arm3), SimArm(arm3, payload_kg=1.0)
    for s in (nominal, loaded):
        s.step(250)   # 0.5 s at zero command
    assert np.linalg.norm(nominal.ee_position() - arm3.fk(arm3.home_q)) < 1e-9
    drop = arm3.fk(arm3.home_q)[2] - loaded.ee_position()[2]
    assert drop > 0.05
    # Its weight, exactly: the bias force differs by Jᵀ m g from the nominal arm's at the same q.
    nominal.reset(q=loaded.q)
    _, J = TaskJacobian(arm3)(loaded.q)
    loaded.reset(q=loaded.q)
    extra = loaded.gravity_torque() - nominal.gravity_torque()
    assert np.allclose(extra, J.T @ np.array([0.0, 0.0, 1.0 * 9.81]), atol=1e-6)
    loaded.set_payload(0.0)
    loaded.reset()
    loaded.step(250)
    assert np.linalg.norm(loaded.ee_position() - arm3.fk(arm3.home_q)) < 1e-9
    for bad in (-1.0, float('nan'), 1e6):
        with pytest.raises(ValueError, match='payload_kg'):
            SimArm(arm3, payload_kg=bad)


def test_friction_holds_a_small_torque_and_is_settable(arm3):
    sim = SimArm(arm3, joint_friction=1.5)
    sim.set_command([1.0, 0.0, 0.0])   # below the 1.5 Nm breakaway
    sim.step(250)
    held = abs(sim.q[0] - arm3.home_q[0])   # MuJoCo's friction is a soft constraint: it creeps a little
    sim.set_joint_friction(0.0)
    sim.reset()
    sim.set_command([1.0, 0.0, 0.0])
    sim.step(250)
    free = sim.q[0] - arm3.home_q[0]
    assert held < 0.01 and free > 10 * held, (held, free)
    for bad in (-0.1, [1.0, 2.0], 1e3):
        with pytest.raises(ValueError, match='joint_friction'):
            SimArm(arm3, joint_friction=bad)


# ---- the bench CLIs ---------------------------------------------------------------------------
def _cli(capsys, *argv):
    from mbrl_ros.cli import main
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def test_bench_closed_loop_short_runs_three_controllers_on_the_same_goals(capsys):
    rc, out = _cli(capsys, 'bench', 'closed-loop', '--model', 'arm3', '--short', '--json', '--budgets', '5',
                   '--payload-kg', '0.2', '--friction', '0.1')
    assert rc == 0, out
    data = json.loads(out)
    assert [r['label'] for r in data['rows']] == ['mpc 5 ms', 'osc_pd', 'policy']
    assert data['payload_kg'] == 0.2 and data['start'] == 'chained'
    for r in data['rows']:
        assert r['episodes'] == 2 and r['failures'] == 0 and 'settle_time_s' in r


def test_bench_closed_loop_table_seeds_and_from_home(capsys):
    rc, out = _cli(capsys, 'bench', 'closed-loop', '--model', 'arm3', '--short', '--controller', 'osc_pd',
                   '--seeds', '1,2', '--from-home')
    assert rc == 0, out
    assert 'home' in out and out.count('osc_pd') >= 4   # header + a row per seed + the pooled row
    assert 'all' in out


@pytest.mark.parametrize('argv, words', [
    (('--controller', 'mpc,lqr'), 'unknown'), (('--budgets', 'fast'), '--budgets'),
    (('--payload-kg', '-1'), '--payload-kg'), (('--friction', 'nan'), '--friction'),
    (('--osc-gains', 'kp=1,ki=2'), 'ki'), (('--model', 'no_such_bundle'), 'not found'),
    (('--seeds', '1,x'), '--seeds')])
def test_bench_closed_loop_refuses_bad_input_without_a_traceback(capsys, argv, words):
    rc, out = _cli(capsys, 'bench', 'closed-loop', '--short', *argv)
    assert rc == 2 and words in out and 'Traceback' not in out, out


def test_bench_closed_loop_runs_a_bundle_of_an_arm_given_by_its_description(capsys, tmp_path):
    """A bundle learned on a URDF/MJCF arm names a robot that is not built in: --robot gives the
    description (checked against the bundle); without it a clear refusal says so."""
    import shutil

    from _model_helpers import write_bundle
    mjcf = tmp_path / 'my_arm.xml'
    shutil.copy(RobotModel.load('arm3').mjcf_path, mjcf)   # arm3's MJCF under another name
    robot = RobotModel.load(str(mjcf))
    assert robot.name not in ('arm3', 'arm7')
    bundle = write_bundle(tmp_path / 'bundle', robot)
    rc, out = _cli(capsys, 'bench', 'closed-loop', '--short', '--model', str(bundle), '--controller', 'osc_pd')
    assert rc == 2 and '--robot' in out and 'Traceback' not in out, out
    rc, out = _cli(capsys, 'bench', 'closed-loop', '--short', '--model', str(bundle), '--robot', 'arm7',
                   '--controller', 'osc_pd')
    assert rc == 2 and '[robot]' in out and 'Traceback' not in out, out
    rc, out = _cli(capsys, 'bench', 'closed-loop', '--short', '--model', str(bundle), '--robot', str(mjcf),
                   '--controller', 'osc_pd', '--json')
    assert rc == 0, out
    assert json.loads(out)['robot'] == robot.name


def test_bench_osc_tune_short(capsys, tmp_path):
    rc, out = _cli(capsys, 'bench', 'osc-tune', '--robot', 'arm3', '--short', '--json')
    assert rc == 0, out
    data = json.loads(out)
    assert len(data['rows']) == 2 and data['written'] is None
    rc, out = _cli(capsys, 'bench', 'osc-tune', '--robot', 'arm3', '--kp', '1,-2')
    assert rc == 2 and '--kp' in out


def test_bench_closed_loop_runs_the_pd_alone_on_any_arm_without_a_bundle(capsys):
    import pybullet_data
    rc, out = _cli(capsys, 'bench', 'closed-loop', '--short', '--controller', 'osc_pd', '--robot',
                   f'{pybullet_data.getDataPath()}/kuka_iiwa/model.urdf', '--json')
    assert rc == 0, out
    meta = json.loads(out)
    assert meta['robot'] == 'lbr_iiwa' and meta['bundle'] is None and meta['osc_gains']['source'] == 'default_gains rule'
    assert [r['label'] for r in meta['rows']] == ['osc_pd']
