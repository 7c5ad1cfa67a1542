"""Session-wide test setup: an isolated ROS domain and a check that no process is left behind."""
import os

from mbrl_ros.testing.isolation import describe_isolation, isolate_ros_session

DOMAIN_ID = isolate_ros_session()

import psutil  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope='module')
def arm3():
    from mbrl_ros.core.robot import RobotModel
    return RobotModel.load('arm3')


@pytest.fixture(scope='module')
def arm7():
    from mbrl_ros.core.robot import RobotModel
    return RobotModel.load('arm7')


@pytest.fixture(scope='module')
def probe(request):
    """One RosProbe per test module (a test node on the session's isolated domain), named after it."""
    from mbrl_ros.testing.ros_probe import RosProbe
    with RosProbe(request.module.__name__.rpartition('.')[2] + '_probe') as p:
        yield p


def pytest_report_header(config):
    return describe_isolation()


@pytest.fixture(scope='session', autouse=True)
def _no_orphan_processes():
    yield
    me = psutil.Process(os.getpid())
    left = [p for p in me.children(recursive=True) if p.is_running()]
    for p in left:
        p.kill()
    assert not left, 'test session left processes behind: ' + ', '.join(
        f'{p.pid} {" ".join(p.cmdline()[:3])}' for p in left)



pytest_plugins = ['mbrl_ros.testing.pytest_plugin']
