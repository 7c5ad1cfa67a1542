"""A tiny rclpy node for the launch runner tests: publishes std_msgs/String on `chatter`
(relative, so namespaces and remaps apply) and declares a few typed parameters."""
import sys

from rclpy.node import Node
from std_msgs.msg import String

from mbrl_ros.ros.node_main import main_for


class Talker(Node):
    def __init__(self):
        super().__init__('talker')
        self.declare_parameter('message', 'hello')
        self.declare_parameter('rate_hz', 20.0)
        self.declare_parameter('count', 0)
        self.declare_parameter('flag', False)
        self.declare_parameter('gains', [0.0])
        self.pub = self.create_publisher(String, 'chatter', 10)
        rate = float(self.get_parameter('rate_hz').value)
        self.create_timer(1.0 / rate, self._tick)
        print(f'talker {self.get_fully_qualified_name()} up: '
              f'message={self.get_parameter("message").value!r} count={self.get_parameter("count").value!r}',
              flush=True)

    def _tick(self):
        self.pub.publish(String(data=str(self.get_parameter('message').value)))


def main():
    main_for(Talker)


if __name__ == '__main__':
    sys.exit(main())
