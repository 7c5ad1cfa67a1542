"""Issue 18: arms described as ROS describes them. URDF (chain, limits, inertials, meshes) and MJCF
from elsewhere (unnamed elements, several sites), a zoo of real arms from pybullet_data loaded and
simulated, and every description problem refused with what is wrong and the exact fix."""
import os
import textwrap

import mujoco
import numpy as np
import pybullet_data  # test extra: pybullet (real arms' URDFs); missing, the module errors instead of skipping
import pytest

from mbrl_ros.core.robot import RobotDescriptionError, RobotModel
from mbrl_ros.core.sim import SimArm

DATA = pybullet_data.getDataPath()
ZOO = {  # name: (path, load options, dof, joint names' first and last)
    'iiwa': (os.path.join(DATA, 'kuka_iiwa', 'model.urdf'), {}, 7, ('lbr_iiwa_joint_1', 'lbr_iiwa_joint_7')),
    'panda': (os.path.join(DATA, 'franka_panda', 'panda.urdf'), {'tip_link': 'panda_grasptarget'}, 7,
              ('panda_joint1', 'panda_joint7')),
    'xarm6': (os.path.join(DATA, 'xarm', 'xarm6_robot.urdf'), {}, 6, ('joint1', 'joint6')),
    'arm7': ('arm7', {}, 7, ('arm7_joint1', 'arm7_joint7')),
    'arm3': ('arm3', {}, 3, ('arm3_joint1', 'arm3_joint3')),
}


@pytest.mark.parametrize('arm', sorted(ZOO))
def test_zoo_loads_simulates_and_fk_matches_mujoco(arm):
    path, opts, dof, (first, last) = ZOO[arm]
    robot = RobotModel.load(path, **opts)
    assert robot.dof == dof and robot.joint_names[0] == first and robot.joint_names[-1] == last
    assert np.all(robot.q_max > robot.q_min) and np.all(robot.qd_max > 0) and np.all(robot.effort_max > 0)
    assert robot.within_limits(robot.home_q)
    sim = SimArm(robot)
    rng = np.random.default_rng(0)
    moved = 0.0
    for _ in range(40):  # 0.8 s of random torques: the arm moves, stays finite, FK stays exact
        sim.set_command(rng.uniform(-0.1, 0.1, dof) * robot.effort_max)
        sim.step(10)
        assert np.all(np.isfinite(sim.state))
        np.testing.assert_allclose(robot.fk(sim.q), sim.ee_position(), atol=1e-9)
        moved = max(moved, float(np.max(np.abs(sim.q - robot.home_q))))
    assert moved > 0.01
    qs = robot.sample_configurations(rng, 32)  # FK against MuJoCo's own kinematics over the range
    d = mujoco.MjData(sim.model)
    for q in qs:
        d.qpos[robot.qpos_adr] = q
        mujoco.mj_kinematics(sim.model, d)
        np.testing.assert_allclose(robot.fk(q), d.site_xpos[robot.ee_site_id], atol=1e-9)


def test_panda_limits_are_the_safety_controller_soft_limits_and_the_fingers_are_welded():
    robot = RobotModel.load(ZOO['panda'][0], tip_link='panda_hand')
    # <safety_controller soft_lower_limit="-2.8973" .../> inside <limit lower="-2.9671" ...>
    assert robot.q_min[0] == pytest.approx(-2.8973) and robot.q_max[3] == pytest.approx(-0.0698)
    assert robot.qd_max[0] == pytest.approx(2.175) and robot.effort_max[6] == pytest.approx(12.0)
    assert any('panda_finger_joint1' in n for n in robot.notes)
    # the fingers' mass is carried (welded), not dropped: hand 0.81 + 2 x 0.1 kg
    assert robot.model.body_subtreemass[robot.chain_bodies[-1]] == pytest.approx(0.81 + 0.2)


def test_iiwa_as_shipped_says_what_was_dropped_and_the_tip_offset_moves_the_ee():
    path = ZOO['iiwa'][0]
    robot = RobotModel.load(path)
    assert robot.format == 'urdf' and robot.name == 'lbr_iiwa'
    line = robot.describe()
    assert 'lbr_iiwa_link_0 -> lbr_iiwa_link_7' in line and '16 meshes not loaded' in line
    tool = RobotModel.load(path, ee_offset=[0, 0, 0.1])
    q = robot.home_q
    assert np.linalg.norm(tool.fk(q) - robot.fk(q)) == pytest.approx(0.1)
    assert tool.description_hash != robot.description_hash  # a bundle for one is not for the other
    # relative mesh paths resolve against the file: loaded with an (empty) package map
    meshed = RobotModel.load(path, package_paths={})
    assert meshed.model.nmesh == 8 and np.allclose(meshed.fk(q), robot.fk(q))


def test_robot_description_text_is_accepted():
    path = ZOO['xarm6'][0]
    text = open(path).read()
    a, b = RobotModel.load(text), RobotModel.load(path)
    assert a.joint_names == b.joint_names and np.allclose(a.fk(a.home_q), b.fk(b.home_q))
    assert any('balanceinertia' in n for n in b.notes)  # xarm6's link2/link3 tensors are not physical


# ---- description problems: RobotDescriptionError with the fix ---------------------------------
def urdf(joints: str, links=('base', 'l1', 'l2'), extra_links='') -> str:
    inert = '<inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial>'
    body = ''.join(f'<link name="{n}">{inert}</link>' for n in links) + extra_links
    return f'<robot name="t">{body}{joints}</robot>'


def rev(name, parent, child, limit='<limit lower="-1" upper="1" effort="10" velocity="2"/>', kind='revolute'):
    return (f'<joint name="{name}" type="{kind}"><parent link="{parent}"/><child link="{child}"/>'
            f'<origin xyz="0 0 0.2"/><axis xyz="0 1 0"/>{limit}</joint>')


def test_a_small_urdf_works():
    r = RobotModel.load(urdf(rev('j1', 'base', 'l1') + rev('j2', 'l1', 'l2')))
    assert r.joint_names == ['j1', 'j2'] and np.allclose(r.fk(np.zeros(2)), [0, 0, 0.4])
    assert np.allclose(r.q_max, 1.0) and np.allclose(r.qd_max, 2.0) and np.allclose(r.effort_max, 10.0)


@pytest.mark.parametrize('text, needles', [
    (urdf(rev('j1', 'base', 'l1', limit='') + rev('j2', 'l1', 'l2')),
     ["joint 'j1' has no <limit>", '<limit lower="-2.9" upper="2.9" effort="<max Nm>" velocity="<max rad/s>"/> '
      'inside <joint name="j1">']),
    (urdf(rev('j1', 'base', 'l1', limit='<limit lower="-1" upper="1" effort="10"/>') + rev('j2', 'l1', 'l2')),
     ["joint 'j1': <limit> needs a positive velocity=", 'velocity="<max rad/s>"']),
    (urdf(rev('j1', 'base', 'l1', limit='<limit effort="5" velocity="1"/>', kind='continuous') + rev('j2', 'l1', 'l2')),
     None),  # continuous: no lower/upper needed
    (urdf(rev('j1', 'base', 'l1') + rev('j2', 'base', 'l2')),
     ["the chain branches at link 'base'", 'tip_link:=base']),
    (urdf(rev('j1', 'base', 'l1', kind='floating') + rev('j2', 'l1', 'l2')),
     ["joint 'j1' is floating", 'mount the arm with a fixed joint']),
    (urdf(rev('j1', 'base', 'l1', kind='fixed') + rev('j2', 'l1', 'l2', kind='fixed')),
     ["no movable joint between base_link 'base' and tip_link 'l2'"]),
    (urdf(rev('', 'base', 'l1') + rev('j2', 'l1', 'l2')),
     ['joint #0 has no name; give it name="..."']),
    (urdf(rev('j1', 'base', 'l1') + rev('j2', 'l1', 'l9')),
     ["joint 'j2': child link 'l9' is not a <link>"]),
    (urdf(rev('j1', 'base', 'l1') + rev('j2', 'l1', 'l2'),
          extra_links='') .replace('<axis xyz="0 1 0"/>', '<axis xyz="0 0 0"/>', 1),
     ["<axis xyz> is zero", '<axis xyz="0 0 1"/>']),
    (urdf(rev('j1', 'base', 'l1', limit='<limit lower="-1" upper="1" effort="10" velocity="2"/>'
              '<dynamics damping="0.5Nms"/>') + rev('j2', 'l1', 'l2')),
     ["joint 'j1' <dynamics>: damping=\"0.5Nms\" is not a number"]),
])
def test_description_problems_say_what_and_how_to_fix(text, needles):
    if needles is None:
        assert RobotModel.load(text).dof == 2
        return
    with pytest.raises(RobotDescriptionError) as info:
        RobotModel.load(text)
    for n in needles:
        assert n in str(info.value), str(info.value)


def test_chain_options_are_checked():
    text = urdf(rev('j1', 'base', 'l1') + rev('j2', 'l1', 'l2'))
    assert RobotModel.load(text, tip_link='l1').joint_names == ['j1']
    assert RobotModel.load(text, base_link='l1').joint_names == ['j2']
    with pytest.raises(RobotDescriptionError, match=r"tip_link 'l7' is not a link \(links: \['base', 'l1', 'l2'\]\)"):
        RobotModel.load(text, tip_link='l7')
    with pytest.raises(RobotDescriptionError, match="tip_link 'l1' is not below base_link 'l2'"):
        RobotModel.load(text, base_link='l2', tip_link='l1')
    with pytest.raises(RobotDescriptionError, match='tip_link applies to a URDF'):
        RobotModel.load('arm3', tip_link='x')


def test_unreadable_or_unsupported_meshes_and_unknown_packages():
    mesh = lambda uri: (f'<link name="l2"><visual><geometry><mesh filename="{uri}"/></geometry></visual>'
                        '<inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/>'
                        '</inertial></link>')
    joints = rev('j1', 'base', 'l1') + rev('j2', 'l1', 'l2')
    for uri, maps, needle in [
            ('package://my_arm/meshes/l2.stl', {}, "package 'my_arm' is not in the package path map; add my_arm:=/path/to/my_arm"),
            ('package://my_arm/meshes/l2.stl', {'my_arm': '/nonexistent'}, '/nonexistent/meshes/l2.stl: no such readable file'),
            ('package://my_arm/meshes/l2.dae', {'my_arm': '/tmp'}, "MuJoCo reads .stl, .obj, .msh meshes, not '.dae'")]:
        text = urdf(joints, links=('base', 'l1'), extra_links=mesh(uri))
        assert RobotModel.load(text).dof == 2  # without a package map no mesh is read
        with pytest.raises(RobotDescriptionError) as info:
            RobotModel.load(text, package_paths=maps)
        assert needle in str(info.value)


# ---- MJCF from elsewhere ------------------------------------------------------------------
FOREIGN = textwrap.dedent('''\
    <mujoco model="foreign">
      <option timestep="0.001" integrator="RK4"/>
      <custom><numeric name="qd_max_default" data="3"/></custom>
      <worldbody>
        <body pos="0 0 0.1">
          <joint axis="0 0 1" range="-2 2"/><geom size="0.05" mass="1"/>
          <body name="b2" pos="0 0 0.2">
            <joint axis="0 1 0" range="-2 2"/><geom size="0.05" mass="1"/>
            <site name="tool" pos="0 0 0.2"/><site name="camera" pos="0.05 0 0.1"/>
          </body>
        </body>
      </worldbody>
      <actuator><motor joint="b2_joint" ctrlrange="-5 5"/></actuator>
    </mujoco>''')


def test_foreign_mjcf_with_unnamed_elements_and_several_sites(tmp_path):
    f = tmp_path / 'foreign.xml'
    f.write_text(FOREIGN.replace('<motor joint="b2_joint"', '<motor joint="body1_joint" ctrlrange="-5 5"/><motor joint="b2_joint"'))
    with pytest.raises(RobotDescriptionError, match=r"no end-effector site 'ee_site' \(sites: \['tool', 'camera'\]\): "
                                                    r"set ee_site"):
        RobotModel.load(f)
    r = RobotModel.load(f, ee_site='tool')
    assert r.joint_names == ['body1_joint', 'b2_joint'] and any('unnamed MJCF elements named' in n for n in r.notes)
    assert (r.timestep, r.integrator) == (0.001, 'mjINT_RK4')
    sim = SimArm(r)  # unnamed <motor>s: used to fail in _compile with "actuator(): incompatible function arguments"
    sim.set_command([1.0, 1.0])
    sim.step(50)
    np.testing.assert_allclose(r.fk(sim.q), sim.ee_position(), atol=1e-12)
    assert sim.dt == pytest.approx(0.002)  # the sim runs its physics_rate_hz; the node's start line says both


def test_foreign_mjcf_without_velocity_limits_says_the_xml_to_add(tmp_path):
    f = tmp_path / 'foreign.xml'
    f.write_text(FOREIGN.replace('<custom><numeric name="qd_max_default" data="3"/></custom>', '')
                 .replace('<motor joint="b2_joint"', '<motor joint="body1_joint" ctrlrange="-5 5"/><motor joint="b2_joint"'))
    with pytest.raises(RobotDescriptionError, match=r"no velocity limit for 'body1_joint'; add "
                                                    r'<custom><numeric name="qd_max_body1_joint" data="..."/></custom>'):
        RobotModel.load(f, ee_site='tool')


def test_learn_refuses_an_unusable_description_with_its_message_not_a_traceback(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'learn', '--robot', ZOO['panda'][0],
                        '--out', str(tmp_path / 'x')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert 'the chain branches at link' in r.stderr and 'tip_link' in r.stderr


def test_a_robot_yaml_carries_the_chain_options_where_only_a_path_fits(tmp_path):
    # CLI --robot and LearnConfig.robot take one string: a robot YAML names the file and its options.
    (tmp_path / 'panda.yaml').write_text(f'description: {ZOO["panda"][0]}\ntip_link: panda_hand\n'
                                         'ee_offset: [0, 0, 0.1034]\n')
    r = RobotModel.load(str(tmp_path / 'panda.yaml'))
    direct = RobotModel.load(ZOO['panda'][0], tip_link='panda_hand', ee_offset=[0, 0, 0.1034])
    assert r.joint_names == direct.joint_names and r.description_hash == direct.description_hash
    np.testing.assert_allclose(r.fk(r.home_q), direct.fk(direct.home_q))
    (tmp_path / 'bad.yaml').write_text(f'description: {ZOO["panda"][0]}\ntip: panda_hand\n')
    with pytest.raises(RobotDescriptionError, match=r"unknown: \['tip'\]"):
        RobotModel.load(str(tmp_path / 'bad.yaml'))


def test_the_sims_gravity_compensation_holds_what_the_chain_carries():
    """Panda's fingers hang off the chain (welded): the drives' compensation holds them too, so the
    arm stays put under zero effort (uncompensated, their 0.2 kg sagged the arm and left the PD
    4 mm below every goal)."""
    from mbrl_ros.core.sim import SimArm
    robot = RobotModel.load(ZOO['panda'][0], **ZOO['panda'][1])
    sim = SimArm(robot)
    q0 = robot.q_min + 0.5 * (robot.q_max - robot.q_min)
    sim.reset(q=q0)
    x0 = sim.ee_position()
    for _ in range(50):   # 1 s at 50 Hz, no effort on top of the compensation
        sim.set_command(np.zeros(robot.dof))
        sim.step(10)
    assert np.linalg.norm(sim.ee_position() - x0) < 1e-4, sim.ee_position() - x0
