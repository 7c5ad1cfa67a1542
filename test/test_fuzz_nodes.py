"""Short CI form of the fuzzing check (issue 7, item 1): every subscribed topic of the live sim
stack gets 60 hypothesis-generated messages (mbrl_ros.testing.fuzz) over real DDS,
while the MPC is reaching. No node process may exit, every command the safety filter sends
must be finite and within the effort limits, every node must still answer a parameter get and
publish /diagnostics, and no node may count an internal error (an exception its callbacks
caught). The long form is `mbrl-ros check fuzz --messages 10000`.
"""
import os

import pytest

from mbrl_ros.core.robot import RobotModel
from mbrl_ros.testing.fuzz import STACK_ARGS, STACK_TOPICS, TARGETS, format_table, fuzz_stack

pytestmark = [pytest.mark.ros, pytest.mark.system]

MESSAGES = int(os.environ.get('MBRL_FUZZ_MESSAGES', '60'))


def test_fuzz_every_subscriber_of_the_live_stack(launch_system):
    robot = RobotModel.load('arm3')
    with launch_system('sim_arm.launch.yaml', args=STACK_ARGS, wait_topics=STACK_TOPICS, timeout=120,
                       echo=False) as system:
        results = fuzz_stack(system, robot, MESSAGES, seed=int(os.environ.get('MBRL_FUZZ_SEED', '0')))
        print(format_table(results))
    assert [r.topic for r in results] == [t for t, _, _ in TARGETS]
    for r in results:
        assert r.sent + r.publish_errors == MESSAGES and r.sent >= 0.9 * MESSAGES, r
        assert not r.crashed, f'{r.topic}: {r.crashed} exited\n' + system.output_text()[-5000:]
        # The check could fail: the filter's commands kept coming and each one was looked at.
        assert r.filter_commands > 0, f'{r.topic}: no safety-filter command seen while fuzzing'
        assert r.out_of_limit == 0, f'{r.topic}: {r.out_of_limit} commands out of limits, e.g. {r.first_bad}'
        assert all(v == 'yes' for v in r.responsive.values()), f'{r.topic}: {r.responsive}'
        assert not r.internal_errors, f'{r.topic}: internal errors {r.internal_errors}\n' + \
            system.output_text()[-5000:]
