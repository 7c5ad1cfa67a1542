"""Unit tests of the world-model data layer: exploration, sim collection, the npz dataset."""
import numpy as np
import pytest

from mbrl_ros.core.data.collect import collect_sim
from mbrl_ros.core.data.dataset import DatasetError, TransitionDataset
from mbrl_ros.core.data.exploration import Exploration, colored_noise, spectrum_slope


def _toy(n=50, d=2, episodes=5, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, 2 * d))
    return TransitionDataset(s, rng.normal(size=(n, d)), s + 0.01, np.repeat(np.arange(episodes), n // episodes),
                             0.02, [f'j{i}' for i in range(d)], 'toy', {'seed': seed})


# ---- exploration ---------------------------------------------------------------------------------
@pytest.mark.parametrize('beta', [0.0, 1.0, 2.0])
def test_colored_noise_has_the_requested_spectrum_slope(beta):
    x = colored_noise(beta, (32, 1024), np.random.default_rng(1))
    assert abs(np.std(x) - 1.0) < 0.25
    assert spectrum_slope(x) == pytest.approx(-beta, abs=0.15)


def test_colored_noise_is_seeded():
    a = colored_noise(1.0, (3, 100), np.random.default_rng(5))
    b = colored_noise(1.0, (3, 100), np.random.default_rng(5))
    c = colored_noise(1.0, (3, 100), np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize('kind', ['colored', 'uniform'])
def test_exploration_stays_within_effort_limits_everywhere(arm7, kind):
    rng = np.random.default_rng(0)
    expl = Exploration(arm7, kind, amplitude=1.0, beta=2.0, seed=3, limit_gain=5.0)
    expl.reset(500)
    for _ in range(500):
        # Any state, including far outside the joint limits and at absurd speeds.
        q = rng.uniform(arm7.q_min - 1, arm7.q_max + 1)
        qd = rng.uniform(-10, 10, size=arm7.dof) * arm7.qd_max
        a = expl(q, qd)
        assert a.shape == (arm7.dof,)
        assert np.all(np.abs(a) <= arm7.effort_max + 1e-12)


def test_exploration_base_noise_is_scaled_by_amplitude(arm7):
    for kind in ('colored', 'uniform'):
        seq = Exploration(arm7, kind, amplitude=0.25, seed=0).base_sequence(2000)
        assert np.all(np.abs(seq) <= 0.25 * arm7.effort_max + 1e-12)
        # ... and actually uses a good part of that range.
        assert np.all(np.abs(seq).max(axis=0) > 0.15 * arm7.effort_max)


def test_colored_exploration_is_temporally_correlated_and_uniform_is_not(arm7):
    col = Exploration(arm7, 'colored', beta=2.0, seed=0).base_sequence(4000)
    uni = Exploration(arm7, 'uniform', seed=0).base_sequence(4000)

    def lag1(x):
        x = x - x.mean(0)
        return float(np.mean(np.sum(x[1:] * x[:-1], 0) / np.sum(x * x, 0)))
    assert lag1(col) > 0.8
    assert abs(lag1(uni)) < 0.1


def test_joint_limit_term_pushes_back_near_limits(arm3):
    expl = Exploration(arm3, 'uniform', amplitude=0.01, seed=0, limit_margin=0.1)
    zero = np.zeros(arm3.dof)
    mid = 0.5 * (arm3.q_min + arm3.q_max)
    assert np.allclose(expl.limit_push(mid, zero), 0.0)
    near_low = arm3.q_min + 0.01 * (arm3.q_max - arm3.q_min)
    near_high = arm3.q_max - 0.01 * (arm3.q_max - arm3.q_min)
    assert np.all(expl.limit_push(near_low, zero) > 0)
    assert np.all(expl.limit_push(near_high, zero) < 0)
    # Moving towards the limit is resisted more than resting there.
    assert np.all(expl.limit_push(near_high, arm3.qd_max) < expl.limit_push(near_high, zero))


def test_exploration_rejects_bad_settings(arm3):
    with pytest.raises(ValueError, match='exploration must be one of'):
        Exploration(arm3, 'pink')
    with pytest.raises(ValueError, match='amplitude'):
        Exploration(arm3, amplitude=1.5)


# ---- collection ------------------------------------------------------------------------------------
def test_collect_sim_shapes_and_limits(arm3):
    ds = collect_sim(arm3, 450, seed=1, episode_len=100, progress=False)
    assert len(ds) == 450
    assert ds.states.shape == (450, 6) and ds.actions.shape == (450, 3) and ds.next_states.shape == (450, 6)
    assert ds.joint_names == list(arm3.joint_names) and ds.robot == arm3.name and ds.dt == 0.02
    assert list(np.unique(ds.episode)) == [0, 1, 2, 3, 4]
    assert np.bincount(ds.episode).tolist() == [100, 100, 100, 100, 50]
    assert np.all(np.abs(ds.actions) <= arm3.effort_max + 1e-12)
    # Within an episode the next state of one row is the state of the next row.
    same = ds.episode[1:] == ds.episode[:-1]
    assert np.array_equal(ds.next_states[:-1][same], ds.states[1:][same])
    # The arm actually moves (data worth learning from).
    assert np.abs(ds.deltas[:, 3:]).mean() > 1e-3


def test_collect_sim_is_deterministic_in_seed(arm3):
    a = collect_sim(arm3, 120, seed=7, episode_len=60, progress=False)
    b = collect_sim(arm3, 120, seed=7, episode_len=60, progress=False)
    c = collect_sim(arm3, 120, seed=8, episode_len=60, progress=False)
    assert np.array_equal(a.states, b.states) and np.array_equal(a.actions, b.actions)
    assert np.array_equal(a.next_states, b.next_states)
    assert not np.array_equal(a.states, c.states)


def test_episodes_start_outside_the_limit_push_band(arm7):
    """A start inside the band would begin with a push of up to effort_max from rest."""
    ds = collect_sim(arm7, 40 * 5, seed=3, episode_len=5, amplitude=0.1, progress=False)
    first = np.flatnonzero(np.r_[True, ds.episode[1:] != ds.episode[:-1]])
    assert len(first) == 40
    q0 = ds.states[first, :arm7.dof]
    band = 0.1 * (arm7.q_max - arm7.q_min)
    assert np.all(q0 >= arm7.q_min + band - 1e-9) and np.all(q0 <= arm7.q_max - band + 1e-9)
    assert np.allclose(ds.states[first, arm7.dof:], 0.0)
    # No push at the start: the first command is the base noise (|.| <= amplitude * effort_max).
    assert np.all(np.abs(ds.actions[first]) <= 0.1 * arm7.effort_max + 1e-9)


def test_joint_limit_term_keeps_data_off_the_limits(arm3):
    def frac_at_limits(ds):
        q = ds.states[:, :arm3.dof]
        band = 0.02 * (arm3.q_max - arm3.q_min)
        return float(np.mean((q < arm3.q_min + band) | (q > arm3.q_max - band)))
    kw = dict(n_transitions=3000, exploration='colored', seed=2, episode_len=300, amplitude=0.6, beta=2.0,
              progress=False)
    with_push = frac_at_limits(collect_sim(arm3, limit_margin=0.15, **kw))
    without = frac_at_limits(collect_sim(arm3, limit_margin=0.0, **kw))
    assert with_push < without


# ---- dataset -----------------------------------------------------------------------------------------
def test_npz_round_trip(tmp_path):
    ds = _toy()
    path = ds.save(tmp_path / 'd')
    assert path.name == 'd.npz'
    back = TransitionDataset.load(path)
    for f in ('states', 'actions', 'next_states', 'episode'):
        assert np.array_equal(getattr(back, f), getattr(ds, f))
    assert (back.dt, back.joint_names, back.robot) == (ds.dt, ds.joint_names, ds.robot)
    assert back.meta == {'seed': '0'}
    # No pickles anywhere in the file.
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_load_refuses_non_dataset_npz(tmp_path):
    np.savez(tmp_path / 'x.npz', a=np.zeros(3))
    with pytest.raises(DatasetError, match='missing'):
        TransitionDataset.load(tmp_path / 'x.npz')


def test_dataset_validates_shapes():
    with pytest.raises(DatasetError, match='actions has shape'):
        TransitionDataset(np.zeros((4, 4)), np.zeros((4, 3)), np.zeros((4, 4)), np.zeros(4), 0.02, ['a', 'b'], 'r')
    with pytest.raises(DatasetError, match='NaN'):
        TransitionDataset(np.full((1, 2), np.nan), np.zeros((1, 1)), np.zeros((1, 2)), [0], 0.02, ['a'], 'r')


def test_concat_keeps_episodes_distinct():
    a, b = _toy(seed=0), _toy(seed=1)
    c = a.concat(b)
    assert len(c) == len(a) + len(b) and c.num_episodes == a.num_episodes + b.num_episodes
    assert np.array_equal(TransitionDataset.concat([a, b]).states, c.states)
    with pytest.raises(DatasetError, match='joint names'):
        a.concat(TransitionDataset(np.zeros((1, 2)), np.zeros((1, 1)), np.zeros((1, 2)), [0], 0.02, ['x'], 'toy'))


def test_split_by_episode_is_disjoint_and_seeded():
    ds = _toy(n=100, episodes=10)
    train, hold = ds.split_by_episode(0.2, seed=3)
    assert len(train) + len(hold) == len(ds)
    assert hold.num_episodes == 2 and train.num_episodes == 8
    assert not set(train.episode) & set(hold.episode)
    again = ds.split_by_episode(0.2, seed=3)[1]
    assert np.array_equal(again.states, hold.states)


def test_summary_is_plain_yaml():
    import yaml
    s = _toy().summary()
    assert s['num_transitions'] == 50 and s['num_episodes'] == 5 and s['dt'] == 0.02
    assert len(s['state']['mean']) == 4 and len(s['action']['std']) == 2
    assert yaml.safe_load(yaml.safe_dump(s)) == s


def test_exploration_amplitude_is_calibrated_on_the_arms_dynamics():
    # Issue 18: a fixed 0.1 x effort_max suits arm7; an arm with a tenth of arm3's effort limits needs
    # ~10x the fraction to move alike. Calibrated per joint so random commands reach 0.6 x qd_max
    # (95th percentile of |qd|).
    from mbrl_ros.core.data.exploration import VELOCITY_FRACTION, calibrate_amplitude
    from mbrl_ros.core.robot import RobotModel
    strong = RobotModel.load('arm3')
    c = calibrate_amplitude(strong, transitions=1000)
    assert np.all(np.abs(np.log(np.array(c['reached_fraction']) / VELOCITY_FRACTION)) < np.log(1.15)), c
    assert all(0.02 < a < 0.5 for a in c['amplitude']), c
    weak = RobotModel(None, xml=open(strong.mjcf_path).read().replace('ctrlrange="-20 20"', 'ctrlrange="-2 2"')
                      .replace('ctrlrange="-10 10"', 'ctrlrange="-1 1"'))
    assert np.allclose(weak.effort_max, 0.1 * strong.effort_max)
    w = calibrate_amplitude(weak, transitions=1000)
    ratio = np.array(w['amplitude']) / np.array(c['amplitude'])
    assert np.all(ratio > 3), (w, c)   # the light arm gets a much larger fraction of its limit
    for a, r in zip(w['amplitude'], w['reached_fraction']):   # reached, or at the full limit and saying so
        assert abs(np.log(r / VELOCITY_FRACTION)) < np.log(1.15) or (a == 1.0 and r < VELOCITY_FRACTION), w
