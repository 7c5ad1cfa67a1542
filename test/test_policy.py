"""Distilled policy core: network + ONNX export, onnxruntime policy, bundle integration, DAgger loop,
and the reaching evaluator (ROS-free)."""
import json

import numpy as np
import pytest
import torch
import yaml

from _model_helpers import write_bundle
from mbrl_ros.core.bundle import BundleError, load_bundle
from mbrl_ros.core.evaluation import evaluate_reaching, sample_goals
from mbrl_ros.core.policy import PolicyError, PolicyRuntime
from mbrl_ros.core.policy.distill import DistillConfig, attach_policy, distill, save_to_bundle
from mbrl_ros.core.policy.network import PolicyConfig, PolicyNet, _fk_parts, export_policy, fk_chain, jt_torch
from mbrl_ros.core.robot import RobotModel


def _net(robot, seed=0, scale=1.0):
    torch.manual_seed(seed)
    net = PolicyNet(PolicyConfig(dof=robot.dof, effort_max=list(robot.effort_max), hidden_sizes=[32, 32]))
    rng = np.random.default_rng(seed)
    q = robot.sample_configurations(rng, 200)
    net.set_normalisation(np.concatenate([q, rng.normal(size=q.shape)], 1), robot.fk(q))
    with torch.no_grad():   # a large output layer saturates the tanh (exercises the squashing)
        net.out.weight.mul_(scale)
        net.out.bias.mul_(scale)
    return net.eval()


# ---- network and export ----------------------------------------------------------------------
def test_export_matches_torch_and_squashes_to_effort_limits(arm3, tmp_path):
    net = _net(arm3, scale=20.0)   # large output weights: the output saturates
    rng = np.random.default_rng(1)
    s = rng.normal(scale=2.0, size=(300, 6))
    g = rng.normal(scale=2.0, size=(300, 3))
    err = export_policy(net, tmp_path / 'policy.onnx', check_states=s, check_goals=g)
    assert err <= 1e-5
    rt = PolicyRuntime(tmp_path / 'policy.onnx')
    out = rt.predict(s, g)
    with torch.no_grad():
        want = net(torch.tensor(s, dtype=torch.float32), torch.tensor(g, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(out, want, atol=1e-5 * 20)
    assert np.all(np.abs(out) <= arm3.effort_max + 1e-4)
    assert np.any(np.abs(out) > 0.9 * arm3.effort_max)   # saturated, so the clamp was exercised
    assert rt.architecture['hidden_sizes'] == [32, 32]


def test_normalisation_is_inside_the_graph(arm3, tmp_path):
    net = _net(arm3)
    with torch.no_grad():
        net.in_mean.add_(3.0)   # a different normalisation must change the exported output
    export_policy(net, tmp_path / 'a.onnx')
    with torch.no_grad():
        net.in_mean.sub_(3.0)
    export_policy(net, tmp_path / 'b.onnx')
    s, g = np.zeros((1, 6)), np.array([[0.3, 0.1, 0.3]])
    a, b = PolicyRuntime(tmp_path / 'a.onnx').predict(s, g), PolicyRuntime(tmp_path / 'b.onnx').predict(s, g)
    assert not np.allclose(a, b)


def test_runtime_refuses_bad_inputs_and_foreign_graphs(arm3, tmp_path):
    export_policy(_net(arm3), tmp_path / 'policy.onnx')
    rt = PolicyRuntime(tmp_path / 'policy.onnx')
    u = rt.act(arm3.home_q, np.zeros(3), [0.3, 0.1, 0.3])
    assert u.shape == (3,) and u.dtype == np.float64 and np.all(np.isfinite(u))
    for q, qd, g in ((arm3.home_q, np.zeros(3), [np.nan, 0, 0]), (arm3.home_q, [np.inf, 0, 0], [0, 0, 0.3]),
                     (arm3.home_q[:2], np.zeros(3), [0, 0, 0.3]), (arm3.home_q, np.zeros(3), [0, 0.3])):
        with pytest.raises(PolicyError):
            rt.act(q, qd, g)
    bundle = write_bundle(tmp_path / 'b', arm3)
    with pytest.raises(PolicyError, match='expected inputs state, goal'):
        PolicyRuntime(bundle / 'ensemble.onnx')


@pytest.mark.parametrize('name', ['arm3', 'arm7'])
def test_jacobian_features_are_the_fk_jacobian_transposed(name):
    """J^T e from the in-graph chain equals the finite-difference Jacobian of RobotModel.fk."""
    robot = RobotModel.load(name)
    rng = np.random.default_rng(4)
    q, e = robot.sample_configurations(rng, 20), rng.normal(size=(20, 3))
    ee, c, s, p_in = _fk_parts(torch.tensor(q, dtype=torch.float32), fk_chain(robot))
    jt = jt_torch(torch.tensor(e, dtype=torch.float32), c, s, p_in, fk_chain(robot)).numpy()
    h = 1e-6
    J = np.stack([(robot.fk(q + h * np.eye(robot.dof)[k]) - robot.fk(q - h * np.eye(robot.dof)[k])) / (2 * h)
                  for k in range(robot.dof)], axis=-1)                       # (20, 3, dof)
    np.testing.assert_allclose(ee.numpy(), robot.fk(q), atol=1e-5)
    np.testing.assert_allclose(jt, np.einsum('bik,bi->bk', J, e), atol=1e-5)


def test_export_with_fk_and_jacobian_features_matches_torch(tmp_path):
    arm7 = RobotModel.load('arm7')
    torch.manual_seed(0)
    net = PolicyNet(PolicyConfig(dof=7, effort_max=list(arm7.effort_max), hidden_sizes=[32], fk=fk_chain(arm7)))
    assert net.config.feature_dim == 2 * 7 + 3 + 2 * 7 + 9 + 2 * 7
    rng = np.random.default_rng(2)
    q = arm7.sample_configurations(rng, 300)
    s = np.concatenate([q, rng.uniform(-1, 1, q.shape) * arm7.qd_max], 1)
    g = arm7.fk(arm7.sample_configurations(rng, 300))
    net.set_normalisation(s, g)
    assert export_policy(net.eval(), tmp_path / 'p.onnx', check_states=s, check_goals=g) <= 1e-5
    # without the Jacobian inputs the graph is smaller and still exports
    small = PolicyNet(PolicyConfig(dof=7, effort_max=list(arm7.effort_max), hidden_sizes=[32], fk=fk_chain(arm7),
                                   jacobian=False))
    assert small.config.feature_dim == net.config.feature_dim - 14
    small.set_normalisation(s, g)
    assert export_policy(small.eval(), tmp_path / 'q.onnx', check_states=s, check_goals=g) <= 1e-5


def test_passive_head_exports_exactly_and_commands_nothing_at_the_goal_at_rest(tmp_path):
    """The passive head: whatever the weights, zero effort at the goal with the arm at rest (the goal is
    an equilibrium of the policy), and the ONNX graph computes the same as torch."""
    arm7 = RobotModel.load('arm7')
    torch.manual_seed(3)
    net = PolicyNet(PolicyConfig(dof=7, effort_max=list(arm7.effort_max), hidden_sizes=[32], fk=fk_chain(arm7),
                                 output='passive'))
    assert net.out.out_features == 3 * 7
    rng = np.random.default_rng(5)
    q = arm7.sample_configurations(rng, 300)
    s = np.concatenate([q, rng.uniform(-1, 1, q.shape) * arm7.qd_max], 1)
    g = arm7.fk(arm7.sample_configurations(rng, 300))
    net.set_normalisation(s, g)
    with torch.no_grad():   # large random gains: saturates, and a weight-independent zero is tested
        net.out.weight.normal_(0, 0.3)
        net.out.bias.normal_(0, 2.0)
    assert export_policy(net.eval(), tmp_path / 'p.onnx', check_states=s, check_goals=g) <= 1e-5
    rt = PolicyRuntime(tmp_path / 'p.onnx')
    moving = rt.predict(s, g)
    assert np.all(np.abs(moving) <= arm7.effort_max + 1e-4) and np.any(np.abs(moving) > 0.5 * arm7.effort_max)
    at_rest = np.concatenate([q, np.zeros_like(q)], 1)
    assert np.max(np.abs(rt.predict(at_rest, arm7.fk(q))) / arm7.effort_max) < 1e-3
    # untrained (initial weights): the gains are ~0, no hand-picked spring in it
    fresh = PolicyNet(PolicyConfig(dof=7, effort_max=list(arm7.effort_max), hidden_sizes=[32], fk=fk_chain(arm7),
                                   output='passive'))
    fresh.set_normalisation(s, g)
    with torch.no_grad():
        u = fresh(torch.tensor(s, dtype=torch.float32), torch.tensor(g, dtype=torch.float32)).numpy()
    assert np.median(np.abs(u) / arm7.effort_max) < 0.05
    with pytest.raises(ValueError, match='needs the FK'):
        PolicyNet(PolicyConfig(dof=7, effort_max=list(arm7.effort_max), fk=fk_chain(arm7), jacobian=False,
                               output='passive'))
    with pytest.raises(ValueError, match='output must be'):
        PolicyNet(PolicyConfig(dof=7, effort_max=list(arm7.effort_max), output='torque'))


def test_limit_spring_pushes_out_of_the_band_at_a_limit_and_is_silent_elsewhere(tmp_path):
    arm7 = RobotModel.load('arm7')
    torch.manual_seed(4)
    net = PolicyNet(PolicyConfig(dof=7, effort_max=list(arm7.effort_max), hidden_sizes=[32], fk=fk_chain(arm7),
                                 output='passive', joint_limits=[list(arm7.q_min), list(arm7.q_max)]))
    assert net.out.out_features == 4 * 7
    rng = np.random.default_rng(6)
    mid = (arm7.q_min + arm7.q_max) / 2
    q = np.repeat(mid[None], 3, axis=0)
    q[1, 2], q[2, 2] = arm7.q_min[2] + 0.01, arm7.q_max[2] - 0.01     # joint 3 deep in the lower / upper band
    s = np.concatenate([q, np.zeros_like(q)], 1)
    goal = arm7.fk(q)                                                 # at the goal, at rest
    net.set_normalisation(np.concatenate([arm7.sample_configurations(rng, 100), np.zeros((100, 7))], 1),
                          arm7.fk(arm7.sample_configurations(rng, 100)))
    with torch.no_grad():
        net.out.bias[21:] = 3.0                                       # a stiff limit spring
        u = net(torch.tensor(s, dtype=torch.float32), torch.tensor(goal, dtype=torch.float32)).numpy()
    assert np.max(np.abs(u[0]) / arm7.effort_max) < 1e-3              # mid-range at the goal: no effort
    assert u[1, 2] > 0.5 * arm7.effort_max[2] and u[2, 2] < -0.5 * arm7.effort_max[2]   # pushed inwards
    assert export_policy(net.eval(), tmp_path / 'p.onnx', check_states=s, check_goals=goal) <= 1e-5


def test_constant_features_are_left_unscaled_and_export_stays_exact(arm3, tmp_path):
    """Tiny data where the arm never moved (qd == 0): the qd features are not divided by ~0, so
    moving states do not blow up float32 rounding (the export parity check used to fail here)."""
    torch.manual_seed(1)
    net = PolicyNet(PolicyConfig(dof=3, effort_max=list(arm3.effort_max), hidden_sizes=[16], fk=fk_chain(arm3)))
    rng = np.random.default_rng(0)
    q = np.repeat(arm3.sample_configurations(rng, 2), 20, axis=0)
    net.set_normalisation(np.concatenate([q, np.zeros_like(q)], 1), np.repeat(arm3.fk(q[::20]), 20, axis=0))
    std = net.in_std.numpy()
    assert np.all(std[3:6] == 1.0)            # qd: constant -> unscaled
    assert np.all(std[:3] != 1.0)             # q varies -> standardised
    qs = arm3.sample_configurations(rng, 256)
    s = np.concatenate([qs, rng.uniform(-1, 1, qs.shape) * arm3.qd_max], 1)
    assert export_policy(net.eval(), tmp_path / 'p.onnx', check_states=s,
                         check_goals=arm3.fk(arm3.sample_configurations(rng, 256))) <= 1e-5


# ---- evaluator --------------------------------------------------------------------------------
def test_reaching_evaluator_scores_an_oracle_a_lazy_and_a_broken_controller(arm3):
    _, goal_q, goals = sample_goals(arm3, 6, seed=3)

    def oracle(q, qd, g):   # joint-space PD to the configuration the goal came from
        i = int(np.argmin(np.linalg.norm(goals - g, axis=1)))
        return 10.0 * (goal_q[i] - q) - 1.0 * qd

    good = evaluate_reaching(oracle, arm3, n_goals=6, seed=3, start='random')
    assert good.success_rate == 1.0 and np.all(good.final_distance_m < 0.02)
    assert len(good.step_ms) == 6 * 250 and not good.failures     # 5 s windows at 50 Hz
    lazy = evaluate_reaching(lambda q, qd, g: np.zeros(3), arm3, n_goals=6, seed=3, start='random')
    assert lazy.success_rate < 0.5
    broken = evaluate_reaching(lambda q, qd, g: np.full(3, np.nan), arm3, n_goals=2, seed=3)
    assert broken.success_rate == 0.0 and len(broken.failures) == 2 and 'invalid command' in broken.failures[0][1]
    s = good.summary()
    assert s['episodes'] == 6 and s['success_rate'] == 1.0 and s['step_ms']['p99'] > 0


# ---- DAgger --------------------------------------------------------------------------------
class LinearExpert:
    """Cheap goal-conditioned labeller: a fixed affine map, saturated at the effort limits."""

    def __init__(self, robot, seed=0):
        rng = np.random.default_rng(seed)
        self.K = rng.normal(scale=1.0, size=(robot.dof, 2 * robot.dof + 3))
        self.emax = robot.effort_max
        self.step_ms = []
        self.resets = 0

    def reset(self):
        self.resets += 1

    def __call__(self, q, qd, goal):
        self.step_ms.append(0.01)
        return np.clip(self.K @ np.concatenate([q, qd, goal]), -self.emax, self.emax) * 0.5


def test_dagger_mixes_expert_and_student_and_learns_the_labels(arm3, tmp_path):
    cfg = DistillConfig(rounds=3, episodes_per_round=8, episode_s=0.6, epochs_per_round=60, hidden_sizes=[64, 64],
                        holdout_every=4, eval_goals=2, val_goals=3, lr=3e-3, seed=0, label_every=1,
                        output='direct')   # an affine labeller: the passive head cannot (and should not) fit it
    expert = LinearExpert(arm3)
    res = distill(None, arm3, cfg, progress=False, expert=expert, log=lambda *_: None)
    r = res.rounds
    # the kept round: best validation success, ties to the later round; its figures are the test goals'
    val = [s.success_rate for s in r]
    assert res.final_benchmark['selected_round'] == max(i for i, v in enumerate(val) if v == max(val))
    assert res.final_benchmark['set'] == 'test' and res.final_benchmark['seed'] == cfg.eval_seed
    assert [s.beta for s in r] == [1.0, 0.5, 0.25]
    assert r[0].expert_share == 1.0 and 0.2 < r[1].expert_share < 0.8 and r[2].expert_share < 0.6
    # labels planned from scratch (no warm start): one reset per label, plus one per episode
    assert res.data_size == 3 * 8 * 30 and expert.resets == 24 + res.data_size
    assert r[-1].transitions == 3 * 6 * 30            # one held-out episode in four
    assert r[-1].action_rmse < 0.08, [s.action_rmse for s in r]   # imitates an affine map closely
    assert r[-1].action_rmse < r[0].action_rmse


def test_a_warm_started_expert_is_reset_once_per_episode_only(arm3):
    cfg = DistillConfig(rounds=1, episodes_per_round=3, episode_s=0.2, epochs_per_round=1, hidden_sizes=[8],
                        eval_goals=1, val_goals=1, expert_warm_start=True)
    expert = LinearExpert(arm3)
    distill(None, arm3, cfg, progress=False, expert=expert, log=lambda *_: None)
    assert expert.resets == 3


def test_save_to_bundle_writes_a_valid_policy_and_the_bundle_refuses_tampering(arm3, tmp_path):
    bdir = write_bundle(tmp_path / 'arm3', arm3)
    cfg = DistillConfig(rounds=2, episodes_per_round=2, episode_s=0.3, epochs_per_round=2, hidden_sizes=[16],
                        eval_goals=2, val_goals=1, expert={'horizon': 4, 'num_samples': 16, 'num_iterations': 1,
                                              'num_elites': 4, 'time_budget_ms': 0.0}, expert_cost={'joint_goal': 0.0},
                        output='passive', label_every=1)
    res = distill(load_bundle(bdir, arm3), arm3, cfg, progress=False, log=lambda *_: None)  # the real MPC expert
    assert len(res.expert_step_ms) == 2 * 2 * 15
    section = save_to_bundle(res, bdir, arm3, command='test')
    assert section['distillation']['expert']['cost'] == {'joint_goal': 0.0}
    assert 'spring-damper' in section['architecture']['output']
    b = load_bundle(bdir, arm3)
    assert b.policy_path == bdir.resolve() / 'policy.onnx'
    meta = yaml.safe_load((bdir / 'bundle.yaml').read_text())
    assert meta['policy']['architecture'] == section['architecture'] and meta['policy']['distillation']['rounds'] == 2
    assert meta['policy']['metrics']['onnx_parity_max_error'] <= 1e-5
    assert meta['policy']['inputs'] == {'state': ['batch', 6], 'goal': ['batch', 3]}
    report = json.loads((bdir / 'distill_report.json').read_text())
    assert len(report['rounds']) == 2 and (bdir / 'distill_report.png').stat().st_size > 1000
    assert report['final_benchmark']['set'] == 'test'
    m = meta['policy']['metrics']
    assert m['selected_round'] in (0, 1) and m['success_rate'] == round(res.final_benchmark['success_rate'], 4)
    assert m['benchmark'].startswith('reaching: 2 random reachable goals (seed 1000)')
    rt = PolicyRuntime(b.policy_path)
    assert np.all(np.abs(rt.act(arm3.home_q, np.zeros(3), [0.3, 0.1, 0.3])) <= arm3.effort_max)
    # A changed policy.onnx no longer matches its recorded sha256.
    data = bytearray((bdir / 'policy.onnx').read_bytes())
    data[-5] ^= 0xFF
    (bdir / 'policy.onnx').write_bytes(bytes(data))
    with pytest.raises(BundleError) as e:
        load_bundle(bdir, arm3)
    assert e.value.check == 'sha256'


def test_distill_config_refuses_nonsense():
    assert DistillConfig(rounds=0).errors()
    assert DistillConfig(beta_decay=1.5).errors()
    assert DistillConfig(expert={'horizon': 0}).errors()
    assert DistillConfig(expert={'bogus': 1}).errors()
    assert DistillConfig(expert_cost={'joint_goal': -1.0}).errors()
    assert DistillConfig(expert_cost={'bogus': 1.0}).errors()
    assert DistillConfig(val_seed=1000).errors()          # validation on the test goals
    assert DistillConfig(output='torque').errors()
    assert not DistillConfig().errors()
    with pytest.raises(ValueError, match='invalid distillation'):
        distill(None, RobotModel.load('arm3'), DistillConfig(rounds=0), progress=False)


def test_distill_cli_writes_into_a_copy_and_leaves_the_source_alone(arm3, tmp_path, capsys):
    from mbrl_ros.cli import main
    src = write_bundle(tmp_path / 'src', arm3)
    before = (src / 'bundle.yaml').read_text()
    rc = main(['distill', '--bundle', str(src), '--out', str(tmp_path / 'dst'), '--rounds', '1',
               '--episodes-per-round', '1', '--episode-s', '0.2', '--epochs', '1', '--hidden', '16',
               '--eval-goals', '1', '--val-goals', '1', '--expert-horizon', '3', '--expert-samples', '8', '--expert-iterations', '1',
               '--expert-elites', '2', '--no-progress'])
    assert rc == 0, capsys.readouterr()
    assert (src / 'bundle.yaml').read_text() == before and not (src / 'policy.onnx').exists()
    b = load_bundle(tmp_path / 'dst', arm3)
    assert b.policy_path is not None and b.meta['policy']['distillation']['rounds'] == 1
    assert 'wrote' in capsys.readouterr().out
    assert main(['distill', '--bundle', str(tmp_path / 'nope')]) == 2
    assert main(['distill', '--bundle', str(src), '--expert-cost', 'joint_goal']) == 2
    assert main(['distill', '--bundle', str(src), '--expert-cost', 'nonsense=1']) == 2
    assert 'expert cost' in capsys.readouterr().err


def test_attach_puts_a_distilled_policy_into_another_bundle_of_the_same_robot(arm3, tmp_path):
    src = write_bundle(tmp_path / 'src', arm3)
    cfg = DistillConfig(rounds=1, episodes_per_round=2, episode_s=0.2, epochs_per_round=2, hidden_sizes=[16],
                        eval_goals=1, val_goals=1, expert={'horizon': 3, 'num_samples': 8, 'num_iterations': 1,
                                              'num_elites': 2, 'time_budget_ms': 0.0})
    save_to_bundle(distill(load_bundle(src, arm3), arm3, cfg, progress=False, log=lambda *_: None), src, arm3)
    dst = write_bundle(tmp_path / 'dst', arm3, E=2)            # e.g. a retrained ensemble
    ens_before = (dst / 'ensemble.onnx').read_bytes()
    section = attach_policy(src, dst, arm3, eval_goals=2, command='test attach')
    b = load_bundle(dst, arm3)
    assert b.policy_path is not None and (dst / 'policy.onnx').read_bytes() == (src / 'policy.onnx').read_bytes()
    assert b.meta['policy']['attached_from']['bundle'] == str(src) and section['attach_command'] == 'test attach'
    assert b.meta['policy']['metrics']['benchmark'].startswith('reaching: 2 random')
    assert (dst / 'ensemble.onnx').read_bytes() == ens_before and b.meta['ensemble']['size'] == 2
    # refused: a source without a policy, and a bundle of another robot (left as it was)
    with pytest.raises(ValueError, match='no policy.onnx'):
        attach_policy(write_bundle(tmp_path / 'bare', arm3), dst, arm3, eval_goals=0)
    arm7 = RobotModel.load('arm7')
    other = write_bundle(tmp_path / 'arm7', arm7)
    before = (other / 'bundle.yaml').read_text()
    with pytest.raises(ValueError, match='different robots'):
        attach_policy(src, other, arm3, eval_goals=0)
    assert (other / 'bundle.yaml').read_text() == before and not (other / 'policy.onnx').exists()
    # the CLI form
    from mbrl_ros.cli import main
    dst2 = write_bundle(tmp_path / 'dst2', arm3)
    assert main(['distill', '--bundle', str(dst2), '--attach', str(src), '--eval-goals', '1', '--no-progress']) == 0
    assert load_bundle(dst2, arm3).policy_path is not None
    assert main(['distill', '--bundle', str(dst2), '--attach', str(tmp_path / 'bare')]) == 2

