"""The stack observer's bookkeeping, fed by hand (no DDS): commands checked with check_command,
counted per publisher, the mode in force at each, goals, diagnostics."""
import math
from types import SimpleNamespace

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from std_msgs.msg import Float64MultiArray, String

from mbrl_ros.core.robot import RobotModel
from mbrl_ros.testing.stack_observer import StackObserver
from mbrl_ros.topics import COMMAND_TOPIC, DIAGNOSTICS_TOPIC, GOAL_TOPIC, SAFETY_MODE_TOPIC


class _Node:
    def __init__(self):
        self.subscribed = []

    def create_subscription(self, typ, topic, cb, qos, raw=False):
        self.subscribed.append(topic)


def _observer(**kw):
    node = _Node()
    robot = RobotModel.load('arm3')
    return StackObserver(SimpleNamespace(node=node), robot, **kw), robot, node


def test_commands_checked_counted_and_moded():
    obs, robot, node = _observer()
    assert COMMAND_TOPIC in node.subscribed and DIAGNOSTICS_TOPIC in node.subscribed
    lim = [float(v) for v in robot.effort_max]
    obs.take(SAFETY_MODE_TOPIC, String(data='mpc'), 1.0)
    obs.take(COMMAND_TOPIC, Float64MultiArray(data=lim), 1.02)
    obs.take(COMMAND_TOPIC, Float64MultiArray(data=[lim[0] * 1.01] + lim[1:]), 1.04)
    obs.take(SAFETY_MODE_TOPIC, String(data='hold'), 1.05)
    obs.take(COMMAND_TOPIC, Float64MultiArray(data=[0.0, math.nan, 0.0]), 1.06)
    obs.take(COMMAND_TOPIC, Float64MultiArray(data=[0.0, 0.0]), 1.08)
    n, bad, first = obs.snapshot()
    assert (n, bad) == (4, 3) and 'beyond limits' in first
    assert 'non-finite' in obs.violation_examples[1][1] and 'expected 3' in obs.violation_examples[2][1]
    t, modes = obs.commands(1.03, 1.07)
    assert list(t) == [1.04, 1.06] and modes == ['mpc', 'hold']
    assert obs.mode_changes(1.01) == [(1.05, 'hold')]


def test_ignored_commands_goals_and_diagnostics():
    seen = []
    obs, _, node = _observer(watch=('commands', 'goals', 'diagnostics'), status_log=True,
                             ignore=lambda m: m.layout.data_offset == 7,
                             on_status=lambda name, st, values, t: seen.append((name, values)))
    assert SAFETY_MODE_TOPIC not in node.subscribed
    mine = Float64MultiArray(data=[1e9, 0.0, 0.0])
    mine.layout.data_offset = 7
    obs.take(COMMAND_TOPIC, mine, 1.0)
    assert obs.snapshot() == (0, 0, '')
    g = PointStamped()
    g.point.x = 0.3
    for t in (1.0, 2.0):
        obs.take(GOAL_TOPIC, g, t)     # re-sent: the same goal
    assert list(obs.goal_record()[0]) == [1.0]
    st = DiagnosticStatus(name='/mpc_controller', message='ok',
                          values=[KeyValue(key='plan_ms_p50', value='12.5'), KeyValue(key='plan_ms_p99', value='20')])
    obs.take(DIAGNOSTICS_TOPIC, DiagnosticArray(status=[st]), 3.0)
    assert obs.diag_values('mpc_controller')['plan_ms_p50'] == '12.5'
    assert obs.plan_ms == [(3.0, 12.5, 20.0)] and seen[0][0] == 'mpc_controller'
    assert obs.status_count() == 1 and obs.statuses_since(1) == []
