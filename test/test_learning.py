"""The PETS loop (`mbrl-ros learn`) end to end on the 3-DOF arm at tiny sizes, and its pieces."""
from __future__ import annotations

import numpy as np
import yaml

from mbrl_ros.core.bundle import load_bundle
from mbrl_ros.core.learning.agent import MpcAgent, planner_config
from mbrl_ros.core.learning.pets import LearnConfig, _episodes_to_dataset, learn
from mbrl_ros.core.planning import DoubleIntegratorDynamics, PlannerConfig

TINY = dict(robot='arm3', seed=3, init_transitions=400, episode_len=100, iterations=2, episodes_per_iteration=2,
            episode_s=0.4, ensemble_size=2, hidden_sizes=[16, 16], epochs=3, patience=3,
            planner={'horizon': 4, 'num_samples': 16, 'num_iterations': 1, 'num_elites': 4, 'time_budget_ms': 0.0})


def test_config_refuses_more_environment_steps_than_the_budget():
    cfg = LearnConfig(init_transitions=15000, iterations=3, episodes_per_iteration=20, episode_s=3.0)
    errs = cfg.errors()
    assert any('max_env_steps 20000' in e and '24000' in e for e in errs), errs
    assert LearnConfig().planned_env_steps() <= 20000 and not LearnConfig().errors()
    assert any('planner' in e for e in LearnConfig(planner={'num_samples': 2, 'num_elites': 5}).errors())


def test_episode_records_become_consecutive_transitions(arm3):
    rng = np.random.default_rng(0)
    records = [(ep, rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)) for ep in (0, 1) for _ in range(5)]
    ds = _episodes_to_dataset(records, arm3, 0.02, {'source': 'mpc'})
    assert len(ds) == 8 and ds.num_episodes == 2       # the last step of each episode has no next state
    s = [np.concatenate([q, qd]) for _, q, qd, _ in records]
    np.testing.assert_allclose(ds.states[0], s[0])
    np.testing.assert_allclose(ds.next_states[0], s[1])
    np.testing.assert_allclose(ds.states[4], s[5])      # episode 1 starts fresh, no cross-episode pair
    np.testing.assert_allclose(ds.actions[3], records[3][3])


def test_mpc_agent_drives_a_known_model_toward_the_goal(arm3):
    from mbrl_ros.core.evaluation.reaching import evaluate_reaching
    dyn = DoubleIntegratorDynamics.from_robot(arm3)
    agent = MpcAgent(arm3, dyn, planner_config(horizon=10, num_samples=60, num_elites=6, time_budget_ms=0.0))
    res = evaluate_reaching(agent, arm3, n_goals=2, seed=5, settle_s=1.0, goal_s=1.0)
    assert res.failures == [] and len(agent.iterations) == 100 and min(agent.iterations) >= 1
    assert agent.no_command == 0


def test_learn_end_to_end_on_arm3(tmp_path, arm3):
    cfg = LearnConfig(**TINY, eval_goals=1, eval_budget_ms=50.0, eval_planner={'horizon': 5, 'num_samples': 20,
                                                                             'num_elites': 4})
    out = tmp_path / 'arm3_pets'
    report = learn(cfg, out, work_dir=tmp_path / 'work', command='mbrl-ros learn (test)', progress=False,
                   log=lambda *a: None)
    steps_per_ep = 20
    assert report['environment_steps'] == {'random': 400, 'mpc': 2 * 2 * steps_per_ep,
                                           'training_data_total': 480}
    its = report['iterations']
    assert [s['iteration'] for s in its] == [0, 1, 2]
    # Each batch of MPC episodes adds its transitions (one per episode has no next state) to the next model's data.
    assert [s['data_on_policy'] for s in its] == [0, 2 * (steps_per_ep - 1), 4 * (steps_per_ep - 1)]
    assert all(s['data_random'] == 400 for s in its)
    assert its[0]['success_rate'] is not None and its[-1]['success_rate'] is None
    assert (tmp_path / 'work' / 'iter0' / 'bundle.yaml').is_file() and (tmp_path / 'work' / 'iter1').is_dir()
    assert report['closed_loop']['goals'] == 1 and report['closed_loop']['planner']['time_budget_ms'] == 50.0
    assert report['closed_loop']['planner']['horizon'] == 5 and report['closed_loop']['planner']['num_iterations'] == 3

    bundle = load_bundle(out, arm3)      # the final bundle validates (sha256s, dims, test inference)
    meta = yaml.safe_load((out / 'bundle.yaml').read_text())
    assert meta['command'] == 'mbrl-ros learn (test)' and meta['seed'] == 3
    assert meta['learning']['data_size_by_source'] == {'random_exploration': 400, 'on_policy_mpc': 76}
    assert meta['training']['data']['transitions'] == 476 and 'on-policy' in meta['training']['data']['source']
    assert len(meta['learning']['iterations']) == 3
    # Issue 18: the exploration amplitude is derived from the arm (TINY gives none) and recorded
    derived = meta['learning']['derived']['exploration_amplitude']
    assert len(derived['amplitude']) == 3 and all(0 < a <= 1 for a in derived['amplitude'])
    assert '0.6 x qd_max' in derived['target'] and len(derived['reached_fraction']) == 3
    assert yaml.safe_load(meta['training']['data']['provenance']['amplitude']) == derived['amplitude']
    assert yaml.safe_load((out / 'learn_report.yaml').read_text())['environment_steps']['training_data_total'] == 480
    assert bundle.ensemble.ensemble_size == 2


def test_learn_is_reproducible_from_the_seed(tmp_path):
    kw = dict(TINY, iterations=1, episodes_per_iteration=1)
    reps = [learn(LearnConfig(**kw), tmp_path / f'b{i}', progress=False, log=lambda *a: None) for i in range(2)]
    a, b = (yaml.safe_load((tmp_path / f'b{i}' / 'bundle.yaml').read_text()) for i in range(2))
    assert a['files']['ensemble.onnx']['sha256'] == b['files']['ensemble.onnx']['sha256']
    assert reps[0]['iterations'][0]['final_distance_median_m'] == reps[1]['iterations'][0]['final_distance_median_m']
    assert not (tmp_path / '.b0.learn').exists()      # per-iteration bundles are removed without --work-dir


def test_learn_command_refuses_bad_settings(capsys):
    from mbrl_ros.cli import main
    assert main(['learn', '--out', '/tmp/never', '--robot', 'arm3', '--init', '30000']) == 2
    assert 'max_env_steps' in capsys.readouterr().err
    assert main(['learn', '--out', '/tmp/never', '--hidden', '16,x']) == 2
    assert main(['learn', '--out', '/tmp/never', '--init-episode-len', '0']) == 2
    assert 'episode_len must be >= 1, got 0' in capsys.readouterr().err
    assert main(['learn', '--out', '/tmp/never', '--eval-planner', 'horizon=0']) == 2
    assert 'eval_planner' in capsys.readouterr().err
    assert main(['learn', '--out', '/tmp/never', '--distill-rounds', '1', '--distill-expert-cost', 'joint_goal=-1']) == 2
    assert 'distillation: joint_goal' in capsys.readouterr().err
    assert main(['learn', '--out', '/tmp/never', '--distill-rounds', '1', '--distill-expert', 'horizon=0']) == 2
    assert PlannerConfig().time_budget_ms == LearnConfig().eval_budget_ms    # the evaluation's budget is the node's


# The hook itself (distill -> save_to_bundle) is what this exercises. On these tiny runs the arm hardly
# moves, so some policy features have ~0 variance: core/policy leaves those unscaled (it used to divide
# by 1e-3 and failed the 1e-5 export parity check).
def test_learn_distils_a_policy_into_the_bundle(tmp_path, arm3):
    cfg = LearnConfig(**dict(TINY, iterations=0), distill_rounds=1, distill_episodes_per_round=2,
                      distill_eval_goals=1, distill_val_goals=1, distill_epochs=2, distill_hidden=[16],
                      distill_output='passive',
                      distill_expert={'num_samples': 12}, distill_expert_cost={'joint_goal': 0.0})
    report = learn(cfg, tmp_path / 'b', progress=False, log=lambda *a: None)
    assert report['environment_steps']['distill'] == 40 and report['distillation']['labels'] > 0
    bundle = load_bundle(tmp_path / 'b', arm3)      # policy.onnx listed with its sha256 and validated
    assert bundle.policy_path is not None and 'learning' in bundle.meta and 'policy' in bundle.meta
    expert = bundle.meta['policy']['distillation']['expert']
    assert expert['num_samples'] == 12 and expert['cost'] == {'joint_goal': 0.0}
    assert 'spring-damper' in bundle.meta['policy']['architecture']['output']
