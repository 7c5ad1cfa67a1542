"""A test-side ROS node for talking to the system under test over real DDS: wait for and
collect messages, publish, call services, and get/set parameters exactly as
`ros2 param set` does (through the node's parameter services).

    with RosProbe() as probe:
        msgs = probe.collect('/joint_states', JointState, duration=1.0)
        ok, reason = probe.set_param('/mpc_controller', 'horizon', 20)
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile


class RosProbe:
    def __init__(self, name: str = 'test_probe'):
        self._own_context = not rclpy.ok()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f'{name}_{int(time.time() * 1e3) % 100000}', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self._spinning and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.02)
            except Exception:  # context shut down under us
                break

    # ---- topics -------------------------------------------------------------------------
    def subscribe(self, topic: str, msg_type, qos: QoSProfile | int = 10,
                  callback: Optional[Callable[[Any, float], None]] = None) -> list:
        """Keep every message on `topic` as (receive_time, msg) in the returned list."""
        buf: list = []

        def cb(msg):
            t = time.time()
            with self._lock:
                buf.append((t, msg))
            if callback is not None:
                callback(msg, t)
        self.node.create_subscription(msg_type, topic, cb, qos)
        return buf

    def publisher(self, topic: str, msg_type, qos: QoSProfile | int = 10):
        return self.node.create_publisher(msg_type, topic, qos)

    def collect(self, topic: str, msg_type, duration: float, qos: QoSProfile | int = 10) -> list:
        buf = self.subscribe(topic, msg_type, qos)
        time.sleep(duration)
        with self._lock:
            return list(buf)

    def wait_for(self, topic: str, msg_type, timeout: float = 10.0,
                 predicate: Callable[[Any], bool] = lambda m: True, qos: QoSProfile | int = 10):
        """The first message on `topic` that satisfies `predicate`, or None after `timeout`."""
        buf = self.subscribe(topic, msg_type, qos)
        return self.wait_until(lambda: next((m for _, m in list(buf) if predicate(m)), None), timeout)

    @staticmethod
    def wait_until(fn: Callable[[], Any], timeout: float, period: float = 0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v is not None and v is not False:
                return v
            time.sleep(period)
        return None

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 10.0) -> bool:
        return bool(self.wait_until(lambda: self.node.count_publishers(topic) >= count, timeout))

    # ---- services -----------------------------------------------------------------------
    def call(self, srv_type, name: str, request=None, timeout: float = 5.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f'service {name} not available after {timeout}s')
            fut = client.call_async(request if request is not None else srv_type.Request())
            done = self.wait_until(lambda: fut.done(), timeout)
            if not done:
                raise TimeoutError(f'service {name} did not answer in {timeout}s')
            return fut.result()
        finally:
            self.node.destroy_client(client)

    # ---- parameters (the same services `ros2 param` uses) -------------------------------
    def set_param(self, node: str, name: str, value: Any, timeout: float = 10.0) -> tuple[bool, str]:
        req = SetParameters.Request()
        req.parameters = [Parameter(name, value=value).to_parameter_msg()]
        res = self.call(SetParameters, f'{node}/set_parameters', req, timeout)
        r = res.results[0]
        return r.successful, r.reason

    def get_param(self, node: str, name: str, timeout: float = 5.0) -> Any:
        req = GetParameters.Request(names=[name])
        res = self.call(GetParameters, f'{node}/get_parameters', req, timeout)
        return Parameter.from_parameter_msg(ParameterMsg(name=name, value=res.values[0])).value

    def close(self):
        self._spinning = False
        self._thread.join(timeout=2)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
