"""Issue 18 through the launch runner: the stack on an arm given as a URDF as shipped (pybullet_data's
KUKA iiwa: meshes as relative paths, no end-effector site), and a description the nodes cannot use
(pybullet_data's Panda: the chain branches at the hand) ending the launch once, with the fix named,
instead of a respawn every 2 s."""
import os
import re

import pybullet_data  # the zoo's URDFs (test extra: pybullet); a missing package fails, not skips
import pytest
from sensor_msgs.msg import JointState

pytestmark = [pytest.mark.ros, pytest.mark.system]

DATA = pybullet_data.getDataPath()
IIWA = os.path.join(DATA, 'kuka_iiwa', 'model.urdf')
PANDA = os.path.join(DATA, 'franka_panda', 'panda.urdf')
IIWA_JOINTS = [f'lbr_iiwa_joint_{i}' for i in range(1, 8)]


def test_sim_arm_launch_runs_the_iiwa_urdf_as_shipped(launch_system):
    # No bundle for a new arm yet: the stack without world_model (sim, estimator, controllers waiting).
    args = {'robot': IIWA, 'world_model': 'false', 'control_thread_priority': '0',
            'sim_robot_priority': '0'}
    with launch_system('sim_arm.launch.yaml', args=args, wait_topics=['/joint_states', '/mbrl/state'],
                       timeout=90) as system:
        msg = system.probe.wait_for('/joint_states', JointState, timeout=20)
        assert msg is not None, system.output_text()[-3000:]
        assert list(msg.name) == IIWA_JOINTS
        assert len(msg.position) == 7 and len(msg.velocity) == 7
        # the one start line says what was dropped
        assert system.wait_for_output(r'URDF chain lbr_iiwa_link_0 -> lbr_iiwa_link_7 \(7 joints\); '
                                      r'16 meshes not loaded', timeout=20)
    assert system.returncode == 0


def test_unusable_description_ends_the_launch_once_with_the_fix(launch_system):
    from mbrl_ros.testing.pytest_plugin import LaunchFailed
    args = {'robot': PANDA, 'world_model': 'false', 'control_thread_priority': '0',
            'sim_robot_priority': '0'}
    with pytest.raises(LaunchFailed) as info:
        with launch_system('sim_arm.launch.yaml', args=args, wait_topics=['/joint_states'], timeout=60):
            pass
    out = str(info.value)
    assert 'the chain branches at link' in out and 'tip_link:=panda_hand' in out
    assert 'exited with code 78 (configuration error' in out and 'not respawning it' in out
    assert 'respawning in' not in out
    # The nodes that failed on the description said so in one line, without a traceback (a node
    # still importing when the launch's SIGINT came may print KeyboardInterrupt: not this check).
    failed = re.findall(r"node '(\w+)' \(pid \d+\) exited with code 78", out)
    assert failed
    for name in failed:
        assert f'[{name}] [FATAL] cannot start: ' in out and f'[{name}] Traceback' not in out


def test_sim_robot_takes_the_description_from_the_robot_description_parameter(tmp_path):
    # As robot_state_publisher gets it: the URDF text in a parameter (here through a params file).
    import subprocess
    import sys

    import yaml

    from mbrl_ros.testing.node_process import interrupt_after
    params = tmp_path / 'params.yaml'
    text = open(os.path.join(DATA, 'xarm', 'xarm6_robot.urdf')).read()
    params.write_text(yaml.safe_dump({'sim_robot': {'ros__parameters': {
        'robot_description': text, 'control_thread_priority': 0}}}))
    proc = subprocess.Popen([sys.executable, '-m', 'mbrl_ros.nodes.sim_robot', '--ros-args', '--params-file',
                             str(params)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # SIGINT 3 s after the start line: past construction (a SIGINT inside it is another matter).
    text = interrupt_after(proc, lambda line: "robot 'xarm6' (URDF <robot_description>)" in line, settle_s=3.0,
                           wait_s=60.0, timeout_s=20.0)
    assert "robot 'xarm6' (URDF <robot_description>): 6 joints joint1, joint2" in text, text
    assert proc.returncode == 0, text
