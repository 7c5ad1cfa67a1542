"""RobotModel: MJCF parsing, limits, and forward kinematics against MuJoCo itself."""
import functools
import hashlib

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbrl_ros.core.robot import RobotDescriptionError, RobotModel, builtin_path


def mujoco_site_positions(robot, Q):
    m = robot.model
    d = mujoco.MjData(m)
    out = np.empty((len(Q), 3))
    for i, q in enumerate(Q):
        d.qpos[robot.qpos_adr] = q
        mujoco.mj_kinematics(m, d)
        out[i] = d.site_xpos[robot.ee_site_id]
    return out


@pytest.mark.parametrize('name', ['arm7', 'arm3'])
def test_fk_matches_mujoco(name):
    robot = RobotModel.load(name)
    rng = np.random.default_rng(42)
    Q = robot.sample_configurations(rng, 300, margin=0.0)
    np.testing.assert_allclose(robot.fk(Q), mujoco_site_positions(robot, Q), atol=1e-6, rtol=0)
    # Angles outside one turn and at the half-turn (where tan(q/2) is singular) too.
    Q2 = rng.uniform(-7.0, 7.0, size=(200, robot.dof))
    Q2[0] = np.pi
    Q2[1] = -np.pi
    np.testing.assert_allclose(robot.fk(Q2), mujoco_site_positions(robot, Q2), atol=1e-6, rtol=0)


def test_fk_batch_shapes():
    robot = RobotModel.load('arm7')
    Q = robot.sample_configurations(np.random.default_rng(0), 24).reshape(2, 3, 4, 7)
    P = robot.fk(Q)
    assert P.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(P[1, 2, 3], robot.fk(Q[1, 2, 3]), atol=1e-12)
    assert robot.fk(robot.home_q).shape == (3,)
    with pytest.raises(ValueError, match='expected last dimension 7'):
        robot.fk(np.zeros(3))


def test_arm7_description():
    r = RobotModel.load('arm7')
    assert r.name == 'arm7' and r.dof == 7
    assert r.joint_names == [f'arm7_joint{i}' for i in range(1, 8)]
    np.testing.assert_allclose(r.effort_max, [87, 87, 87, 87, 12, 12, 12])
    np.testing.assert_allclose(r.qd_max, [2.175] * 4 + [2.61] * 3)
    assert np.all(r.q_min < r.q_max) and np.all(r.damping > 0)
    assert r.within_limits(r.home_q)
    assert r.description_hash == hashlib.sha256(builtin_path('arm7').read_bytes()).hexdigest()
    # Panda-like reach: the ready pose puts the flange ~0.3 m forward, ~0.6 m up.
    np.testing.assert_allclose(r.fk(r.home_q), [0.307, 0.0, 0.590], atol=0.01)


def test_sample_configurations_respect_margin():
    r = RobotModel.load('arm3')
    Q = r.sample_configurations(np.random.default_rng(1), 1000, margin=0.1)
    assert Q.shape == (1000, 3)
    assert np.all(Q >= r.q_min + 0.1) and np.all(Q <= r.q_max - 0.1)


def test_other_serial_arm_works_unchanged(tmp_path):
    """An MJCF with arbitrary axes, anchors, a slide joint and a rotated site: fk follows MuJoCo."""
    xml = """
    <mujoco model="odd">
      <custom><numeric name="qd_max_default" data="1.5"/></custom>
      <worldbody>
        <body name="a" pos="0.1 -0.2 0.3" quat="0.9 0.1 0.3 -0.2">
          <inertial pos="0 0 0" mass="1" diaginertia="0.01 0.01 0.01"/>
          <joint name="j1" axis="0.3 0.5 0.8" pos="0.05 0.02 -0.01" range="-2 2" ref="0.3"/>
          <body name="b" pos="0.2 0.1 0.0" euler="0.4 -0.2 1.1">
            <inertial pos="0 0 0" mass="1" diaginertia="0.01 0.01 0.01"/>
            <joint name="j2" type="slide" axis="1 1 0" range="-0.1 0.2"/>
            <joint name="j3" axis="0 1 0" pos="0.1 0 0" range="-1 1"/>
            <site name="tool" pos="0.05 0.3 -0.1" quat="0.5 0.5 0.5 0.5"/>
          </body>
        </body>
      </worldbody>
      <actuator>
        <motor joint="j1" ctrlrange="-5 5" gear="2"/>
        <motor joint="j2" ctrlrange="-50 50"/>
        <motor joint="j3" ctrlrange="-3 3"/>
      </actuator>
    </mujoco>"""
    p = tmp_path / 'odd.xml'
    p.write_text(xml)
    r = RobotModel.load(p)
    assert r.ee_site == 'tool' and r.dof == 3 and r.name == 'odd'
    np.testing.assert_allclose(r.effort_max, [10, 50, 3])
    np.testing.assert_allclose(r.qd_max, [1.5, 1.5, 1.5])
    Q = r.sample_configurations(np.random.default_rng(2), 300, margin=0.0)
    np.testing.assert_allclose(r.fk(Q), mujoco_site_positions(r, Q), atol=1e-6, rtol=0)


def _write(tmp_path, body):
    p = tmp_path / 'bad.xml'
    p.write_text(f'<mujoco><worldbody>{body}</worldbody></mujoco>')
    return p


def test_non_serial_tree_is_refused(tmp_path):
    p = _write(tmp_path, """
      <body name="a"><joint name="j1" axis="0 0 1" range="-1 1"/><geom size="0.1"/>
        <body name="b"><joint name="j2" axis="0 1 0" range="-1 1"/><geom size="0.1"/>
          <site name="ee_site"/></body>
        <body name="c"><joint name="j3" axis="0 1 0" range="-1 1"/><geom size="0.1"/></body>
      </body>""")
    with pytest.raises(RobotDescriptionError, match="not a serial chain.*'j3'"):
        RobotModel.load(p)


def test_ball_joint_is_refused(tmp_path):
    p = _write(tmp_path, """
      <body name="a"><joint name="ball" type="ball"/><geom size="0.1"/><site name="ee_site"/></body>""")
    with pytest.raises(RobotDescriptionError, match="'ball' is a .*BALL.*only hinge and slide"):
        RobotModel.load(p)


def test_missing_velocity_limit_names_the_fix(tmp_path):
    p = tmp_path / 'novel.xml'
    p.write_text("""<mujoco><worldbody><body><joint name="j" axis="0 0 1" range="-1 1"/>
      <geom size="0.1"/><site name="ee_site"/></body></worldbody>
      <actuator><motor joint="j" ctrlrange="-1 1"/></actuator></mujoco>""")
    with pytest.raises(RobotDescriptionError, match='qd_max_j'):
        RobotModel.load(p)


def test_unknown_robot():
    with pytest.raises(RobotDescriptionError, match="unknown robot 'arm99'"):
        RobotModel.load('arm99')


@functools.lru_cache(maxsize=1)
def _arm7():
    return RobotModel.load('arm7')


@given(st.lists(st.floats(-10.0, 10.0), min_size=7, max_size=7))
@settings(max_examples=200, deadline=None)
def test_fk_matches_mujoco_anywhere(q):
    robot = _arm7()
    np.testing.assert_allclose(robot.fk(np.array(q)), mujoco_site_positions(robot, [q])[0], atol=1e-6, rtol=0)

