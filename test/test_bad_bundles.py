"""Bad model files (issue 7, item 5), short CI form. The long form is `mbrl-ros check bad-bundles --count 100`.

1. Without ROS: one bundle of every kind in mbrl_ros.testing.bad_bundles.KINDS is refused by
   load_bundle (with model roots) with exactly the check it breaks.
2. Over real DDS: 15 bad bundles covering every check are set as world_model's model_dir on the
   live sim stack while the MPC reaches (and announced on active_model to mpc_controller, policy
   and safety_filter): each is refused with the failed check named in the set-parameters result,
   active_model never changes, every node still runs the good model, predictions and MPC commands
   go on. Missed control periods are printed against a baseline (timing depends on the machine's
   load, so it is reported, not asserted).
"""
import shutil

import pytest

from mbrl_ros.core.bundle import CHECKS, BundleError, load_bundle
from mbrl_ros.core.robot import RobotModel
from mbrl_ros.resources import default_model_dir
from mbrl_ros.testing.bad_bundles import KINDS, format_report, make_bad_bundles, run_against_stack
from mbrl_ros.testing.fuzz import STACK_TOPICS

CI_KINDS = ['truncated_onnx', 'flipped_byte', 'graph_of_other_robot', 'reversed_joint_names', 'robot_hash',
            'missing_ensemble_onnx', 'yaml_syntax', 'yaml_alias_bomb', 'yaml_huge', 'schema_dt', 'nan_weights',
            'policy_unlisted', 'huge_onnx_sparse', 'symlink_dir_out_of_root', 'dotdot_out_of_root']


@pytest.fixture(scope='module')
def layout(tmp_path_factory):
    """<tmp>/roots/good/arm3 (the good bundle; its folder is a model root) and <tmp>/outside."""
    work = tmp_path_factory.mktemp('bad_bundles')
    good = work / 'roots' / 'good' / 'arm3'
    shutil.copytree(default_model_dir('arm3'), good, ignore=shutil.ignore_patterns('*.png'))
    return good, work / 'outside'


def test_every_kind_is_refused_with_its_check(layout):
    good, outside = layout
    robot = RobotModel.load('arm3')
    bad = make_bad_bundles(good, good.parent / 'each_kind', len(KINDS), outside=outside)
    assert sorted({b.kind for b in bad}) == sorted(KINDS)
    roots = [str(good.parent)]
    load_bundle(good, robot, roots=roots)  # the original is fine
    wrong = []
    for b in bad:
        try:
            load_bundle(b.path, robot, roots=roots)
            wrong.append(f'{b.kind}: accepted')
        except BundleError as exc:
            if exc.check != b.check or f'[{b.check}]' not in str(exc):
                wrong.append(f'{b.kind}: want {b.check}, got {exc}')
    assert not wrong, '\n'.join(wrong)
    # every check the loader has is exercised by some kind
    assert {c for c, _ in KINDS.values()} == set(CHECKS)


@pytest.mark.ros
@pytest.mark.system
def test_bad_bundles_refused_by_the_live_stack(layout, launch_system):
    good, outside = layout
    bad = make_bad_bundles(good, good.parent / 'ci', len(CI_KINDS), outside=outside, kinds=CI_KINDS)
    assert {b.check for b in bad} == set(CHECKS)
    args = {'robot': 'arm3', 'model_dir': str(good), 'respawn': False}   # no node respawned: a death shows
    with launch_system('sim_arm.launch.yaml', args=args, wait_topics=STACK_TOPICS, timeout=120,
                       echo=False) as system:
        report = run_against_stack(system, bad, baseline_s=5.0)
        print(format_report(report))
        # respawn off: a node that died would have ended the launch
        assert system.runner.poll() is None, system.output_text()[-4000:]
    for o in report.outcomes:
        assert o.refused, f'{o.bundle.kind} accepted'
        assert o.check_named, f'{o.bundle.kind}: want [{o.bundle.check}] in {o.reason!r}'
    assert report.active_models and all(a == report.good_identity for a in report.active_models)
    assert all(v == report.good_identity for v in report.models_in_use.values()), report.models_in_use
    assert all(v > 0 for v in report.follower_refusals.values()), report.follower_refusals
    assert report.predictions['after_last_refusal'] > 0
    assert report.during['commands'] > 0
