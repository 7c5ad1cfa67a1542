"""Bundle validation: a good bundle loads; every failed check is named by BundleError.check."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from _model_helpers import make_model, toy_data, write_bundle
from mbrl_ros.core.bundle import (BundleError, load_bundle, read_bundle_meta, sha256_file, update_bundle_meta,
                                  write_bundle_meta)
from mbrl_ros.core.robot import RobotModel


@pytest.fixture(scope='module')
def robot():
    return RobotModel.load('arm3')


@pytest.fixture(scope='module')
def good(tmp_path_factory, robot):
    return write_bundle(tmp_path_factory.mktemp('good'), robot)


@pytest.fixture
def bundle(tmp_path, good):
    d = tmp_path / 'b'
    shutil.copytree(good, d)
    return d


def edit_yaml(d, fn):
    meta = yaml.safe_load((d / 'bundle.yaml').read_text())
    fn(meta)
    (d / 'bundle.yaml').write_text(yaml.safe_dump(meta))


def rehash(d, name='ensemble.onnx'):
    edit_yaml(d, lambda m: m['files'].__setitem__(name, {'sha256': sha256_file(d / name)}))


def expect(check, d, robot=None, match=None):
    with pytest.raises(BundleError) as ei:
        load_bundle(d, robot)
    assert ei.value.check == check, str(ei.value)
    assert f'[{check}]' in str(ei.value)
    if match:
        assert match in str(ei.value), str(ei.value)
    return ei.value


def test_good_bundle_loads(good, robot):
    b = load_bundle(good, robot)
    assert b.sha256 == sha256_file(good / 'ensemble.onnx')
    assert b.identity == f'{good.resolve()} {b.sha256}'
    assert b.dt == 0.02 and b.joint_names == robot.joint_names
    assert b.ensemble.ensemble_size == 3 and b.ensemble.partitioned is not None
    assert b.policy_path is None
    mean, _ = b.ensemble.predict(np.zeros((2, 6)), np.zeros((2, 3)))
    assert mean.shape == (3, 2, 6)
    load_bundle(good)   # without a robot: the robot checks are skipped


def test_meta_read_write_update(bundle, robot):
    """The owner's writers keep the bundle loadable; its reader refuses what load_bundle refuses."""
    meta = read_bundle_meta(bundle)
    assert meta == yaml.safe_load((bundle / 'bundle.yaml').read_text())
    (bundle / 'policy.onnx').write_bytes(b'x')
    update_bundle_meta(bundle, {'note': {'a': 1}}, hash_files=['policy.onnx'])
    got = read_bundle_meta(bundle)
    assert list(got)[-1] == 'note' and got['note'] == {'a': 1}
    assert got['files']['policy.onnx'] == {'sha256': sha256_file(bundle / 'policy.onnx')}
    (bundle / 'policy.onnx').unlink()
    write_bundle_meta(bundle, meta)
    assert not (bundle / 'bundle.yaml.tmp').exists()
    assert load_bundle(bundle, robot).meta == meta
    (bundle / 'bundle.yaml').write_text('a: &a [x, x, x, x, x, x, x, x, x, x]\n' + ''.join(
        f'{c}: &{c} [' + ', '.join([f'*{p}'] * 10) + ']\n' for p, c in zip('abcdefgh', 'bcdefghi')))
    with pytest.raises(BundleError) as ei:
        read_bundle_meta(bundle)
    assert ei.value.check == 'yaml' and 'alias bomb' in str(ei.value)


def test_missing_files(bundle, robot):
    (bundle / 'ensemble_partitioned.onnx').unlink()
    expect('missing_file', bundle, robot, 'ensemble_partitioned.onnx')
    (bundle / 'ensemble.onnx').unlink()
    expect('missing_file', bundle, robot, 'ensemble.onnx')
    (bundle / 'bundle.yaml').unlink()
    expect('missing_file', bundle, robot, 'bundle.yaml')
    expect('missing_file', bundle / 'nope', robot)


@pytest.mark.parametrize('text', ['schema_version: [1\n  robot: {', '- just\n- a list\n', '42\n', ''])
def test_bad_yaml(bundle, robot, text):
    (bundle / 'bundle.yaml').write_text(text)
    expect('yaml', bundle, robot)


def test_yaml_never_constructs_python_objects(bundle, robot):
    (bundle / 'bundle.yaml').write_text('!!python/object/apply:os.system ["echo pwned"]\n')
    expect('yaml', bundle, robot)


@pytest.mark.parametrize('mutate,match', [
    (lambda m: m.__setitem__('schema_version', 99), 'schema_version 99'),
    (lambda m: m.pop('dt'), "'dt'"),
    (lambda m: m.__setitem__('dt', 'fast'), 'dt must be'),
    (lambda m: m.__setitem__('dt', -0.02), 'dt must be > 0'),
    (lambda m: m['robot'].pop('description_hash'), 'description_hash'),
    (lambda m: m['state'].__setitem__('dim', '6'), 'state.dim'),
    (lambda m: m['files']['ensemble.onnx'].__setitem__('sha256', 'abc'), 'not a sha256'),
    (lambda m: m['files'].pop('ensemble.onnx'), 'ensemble.onnx'),
    (lambda m: m['files'].__setitem__('../x.onnx', {'sha256': '0' * 64}), 'plain file name'),
])
def test_schema(bundle, robot, mutate, match):
    edit_yaml(bundle, mutate)
    expect('schema', bundle, robot, match)


def test_robot(bundle, robot):
    edit_yaml(bundle, lambda m: m['robot'].__setitem__('name', 'arm7'))
    expect('robot', bundle, robot, "'arm7'")
    load_bundle(bundle)                      # nothing to compare against without a robot


def test_robot_description_hash(bundle, robot):
    edit_yaml(bundle, lambda m: m['robot'].__setitem__('description_hash', '0' * 64))
    expect('robot', bundle, robot, 'description hash')


def test_joint_names(bundle, robot):
    edit_yaml(bundle, lambda m: m.__setitem__('joint_names', ['a', 'b', 'c']))
    expect('joint_names', bundle, robot, "['a', 'b', 'c']")
    edit_yaml(bundle, lambda m: m.__setitem__('joint_names', ['a', 'a', 'c']))
    expect('joint_names', bundle, None, 'duplicate')


def test_dims_vs_yaml_and_robot(bundle, robot):
    edit_yaml(bundle, lambda m: m['state'].__setitem__('dim', 7))
    expect('dims', bundle, robot, 'state dim 7')


def test_dims_vs_robot(tmp_path, robot):
    arm7 = RobotModel.load('arm7')
    d = write_bundle(tmp_path, robot)
    # Claims to be for arm7 (name, hash, joints) but the graph and dims are arm3's.
    edit_yaml(d, lambda m: m.update(robot={'name': 'arm7', 'description_hash': arm7.description_hash},
                                    joint_names=list(arm7.joint_names)[:3]))
    edit_yaml(d, lambda m: None)
    with pytest.raises(BundleError) as ei:
        load_bundle(d, arm7)
    assert ei.value.check in ('joint_names', 'dims')


def test_dims_vs_graph(bundle, robot):
    edit_yaml(bundle, lambda m: m['ensemble'].__setitem__('size', 5))
    expect('dims', bundle, robot, '3 members')


def test_sha256(bundle, robot):
    data = bytearray((bundle / 'ensemble.onnx').read_bytes())
    data[-10] ^= 0xFF
    (bundle / 'ensemble.onnx').write_bytes(bytes(data))
    expect('sha256', bundle, robot, 'ensemble.onnx')


@pytest.mark.parametrize('corrupt', ['random', 'truncated'])
def test_onnx_load(bundle, robot, corrupt):
    p = bundle / 'ensemble.onnx'
    raw = p.read_bytes()
    p.write_bytes(np.random.default_rng(0).bytes(4096) if corrupt == 'random' else raw[: len(raw) // 2])
    rehash(bundle)      # sha matches: the bytes themselves are bad
    expect('onnx_load', bundle, robot, 'cannot load ensemble.onnx')


def test_test_inference_non_finite(tmp_path, robot):
    m = make_model(6, 3, E=3)
    with torch.no_grad():
        m.hidden[0].weight[1, 0, 0] = float('nan')
    with pytest.raises(Exception):
        write_bundle(tmp_path, robot, model=m)       # export's parity check cannot pass with NaN
    # Craft it directly: valid graph, NaN weights.
    from mbrl_ros.core.dynamics.export import build_graph
    import onnx
    d = write_bundle(tmp_path / 'ok', robot)
    onnx.save_model(build_graph(m), str(d / 'ensemble.onnx'))
    onnx.save_model(build_graph(m, partitioned=True), str(d / 'ensemble_partitioned.onnx'))
    rehash(d)
    rehash(d, 'ensemble_partitioned.onnx')
    expect('test_inference', d, robot, 'non-finite')


def test_policy_is_validated_when_present(bundle, robot):
    import onnx
    from onnx import TensorProto, helper
    # A minimal policy: (state, goal) -> action = first 3 state dims.
    g = helper.make_graph(
        [helper.make_node('Slice', ['state', 'st', 'en', 'ax'], ['action'])], 'policy',
        [helper.make_tensor_value_info('state', TensorProto.FLOAT, ['batch', 6]),
         helper.make_tensor_value_info('goal', TensorProto.FLOAT, ['batch', 3])],
        [helper.make_tensor_value_info('action', TensorProto.FLOAT, ['batch', 3])],
        [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (('st', 0), ('en', 3), ('ax', 1))])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]), str(bundle / 'policy.onnx'))
    expect('sha256', bundle, robot, 'policy.onnx')                  # present but not listed
    rehash(bundle, 'policy.onnx')
    assert load_bundle(bundle, robot).policy_path == (bundle / 'policy.onnx').resolve()
    (bundle / 'policy.onnx').write_bytes(b'not onnx')
    rehash(bundle, 'policy.onnx')
    expect('onnx_load', bundle, robot, 'policy.onnx')


def test_train_and_evaluate_commands(tmp_path, robot):
    """`mbrl-ros train --data x.npz` -> a bundle that validates; `evaluate-model --data` reads it."""
    from mbrl_ros.core.data.dataset import TransitionDataset
    toy = toy_data(1200, S=6, A=3, seed=0)
    ds = TransitionDataset(toy.states, toy.actions, toy.next_states, np.repeat(np.arange(12), 100), 0.02,
                           robot.joint_names, robot.name)
    data = ds.save(tmp_path / 'd.npz')
    out = tmp_path / 'bundle'
    r = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'train', '--data', str(data), '--robot', 'arm3',
                        '--out', str(out), '--epochs', '3', '--hidden', '16,16', '--ensemble-size', '2',
                        '--no-progress'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'one-step nRMSE' in r.stdout
    b = load_bundle(out, robot)
    assert b.meta['ensemble']['size'] == 2 and b.meta['training']['data']['transitions'] == 1200
    assert 'one_step_nrmse' in b.meta['evaluation'] and (out / 'training_curve.png').is_file()
    assert '--epochs 3' in b.meta['command']
    r = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'evaluate-model', str(out), '--data', str(data),
                        '--json'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"calibration_2sigma"' in r.stdout
    # A bad bundle is refused with the check's name and exit code 2.
    (out / 'ensemble.onnx').write_bytes(b'junk')
    r = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'evaluate-model', str(out), '--data', str(data)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and '[sha256]' in r.stderr


def test_train_collect_and_evaluate_fresh_data(tmp_path):
    """End to end on the simulated arm3: collect, train, export, validate; evaluate on fresh trajectories."""
    out = tmp_path / 'arm3'
    r = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'train', '--collect', '800', '--robot', 'arm3',
                        '--episode-len', '100', '--out', str(out), '--epochs', '2', '--hidden', '16',
                        '--ensemble-size', '2', '--no-progress'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    b = load_bundle(out, RobotModel.load('arm3'))
    assert b.meta['training']['data']['provenance']['amplitude'] == '0.1'
    assert b.meta['evaluation']['open_loop_windows'] > 0
    r = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'evaluate-model', str(out), '--transitions', '400',
                        '--json'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'amplitude 0.1' in r.stderr and '"open_loop_ee_error_median_m"' in r.stdout


def test_dims_partitioned_graph_from_another_model(bundle, robot, tmp_path):
    other = write_bundle(tmp_path / 'other', robot, E=2)
    shutil.copy(other / 'ensemble_partitioned.onnx', bundle / 'ensemble_partitioned.onnx')
    rehash(bundle, 'ensemble_partitioned.onnx')
    expect('dims', bundle, robot, 'ensemble_partitioned.onnx')


def test_the_planners_mean_only_graphs_are_built_and_checked_at_load(bundle, robot, tmp_path, monkeypatch):
    import mbrl_ros.core.runtime.ensemble as ens
    b = load_bundle(bundle, robot)
    assert b.ensemble.mean_session is not None and b.ensemble.partitioned_mean is not None
    # A mean-only graph that is not the bundle's (here: another model's) is refused, naming the check.
    other = write_bundle(tmp_path / 'other', robot, model=make_model(6, 3, seed=7))
    monkeypatch.setattr(ens, 'mean_only_graph', lambda path, **_: open(other / path.name, 'rb').read())
    with pytest.raises(BundleError) as e:
        load_bundle(bundle, robot)
    assert e.value.check == 'test_inference' and 'mean-only' in str(e.value)

    # Without the onnx package the means come from the full graphs: the bundle still loads.
    def no_onnx(path):
        raise ImportError('No module named onnx')
    monkeypatch.setattr(ens, 'mean_only_graph', no_onnx)
    b = load_bundle(bundle, robot)
    assert b.ensemble.mean_session is None
    s, a = np.zeros((2, 6), np.float32), np.zeros((2, 3), np.float32)
    np.testing.assert_array_equal(b.ensemble.predict_mean(s, a), b.ensemble.predict(s, a)[0])
