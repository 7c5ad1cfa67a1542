"""Record a running system's topics into a rosbag2 MCAP bag (what `ros2 bag record` would write).

Subscribes to each topic raw (the CDR bytes as received, no deserialisation cost) on a given
node and writes them with the project's bag writer (mbrl_ros.core.data.bags.BagWriter, so the
bag has metadata.yaml and opens in `ros2 bag info` / rosbags' AnyReader). Topics whose content
the caller wants too get a callback with the deserialised message and its receive time.

QoS: reliable with a deep queue (every publisher here is reliable; a busy recorder queues
rather than drops), transient-local for the latched topics so their last value is recorded
even if it was published before the recorder joined.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from mbrl_ros.core.data.bags import BagWriter

RECORD_QOS = QoSProfile(depth=500, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_RECORD_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST,
                                reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)


def ros_type_name(msg_type) -> str:
    """'sensor_msgs/msg/JointState' for the rclpy class sensor_msgs.msg.JointState."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


class TopicBagWriter(BagWriter):
    """BagWriter with any number of topics (BagWriter itself knows the two arm topics)."""

    def add_topic(self, topic: str, msg_type) -> None:
        if topic in self._conns:
            return
        self._conns[topic] = self._w.add_connection(topic, ros_type_name(msg_type), typestore=self._ts)
        self.counts[topic] = 0


class RunRecorder:
    """Records `topics` ({topic: msg class}) on `node` into a bag at `path`.

    `callbacks` ({topic: fn(msg, receive_time_s)}) also get the deserialised messages;
    `latched` topics are subscribed transient-local; `decimate` ({topic: n}) hands only every
    n-th message of a topic to its callback (all are recorded). Callbacks run in the node's executor;
    an exception in one is counted (`callback_errors`), never lets the recording stop.
    """

    def __init__(self, node, path, topics: dict, callbacks: Optional[dict] = None, latched=(),
                 custom: Optional[dict] = None, decimate: Optional[dict] = None):
        self.path = path
        self.writer = TopicBagWriter(path, custom=custom)
        self.callbacks: dict[str, Callable] = dict(callbacks or {})
        self._every = {t: max(1, int(n)) for t, n in (decimate or {}).items()}
        self._seen: dict[str, int] = {}
        self.callback_errors = 0
        self.last_callback_error = ''
        self._lock = threading.Lock()
        self._closed = False
        self._node = node
        self._subs = []
        for topic, msg_type in topics.items():
            self.writer.add_topic(topic, msg_type)
            qos = LATCHED_RECORD_QOS if topic in latched else RECORD_QOS
            self._subs.append(node.create_subscription(
                msg_type, topic, lambda raw, t=topic, mt=msg_type: self._on_raw(t, mt, raw), qos, raw=True))

    def _on_raw(self, topic: str, msg_type, raw: bytes) -> None:
        t_ns = time.time_ns()
        with self._lock:
            if self._closed:
                return
            self.writer.write_raw(topic, t_ns, raw)
        cb = self.callbacks.get(topic)
        n = self._seen[topic] = self._seen.get(topic, -1) + 1
        if cb is not None and n % self._every.get(topic, 1) == 0:
            try:
                cb(deserialize_message(raw, msg_type), t_ns * 1e-9)
            except Exception as exc:  # a bad message or a reader bug must not stop the recording
                self.callback_errors += 1
                self.last_callback_error = f'{topic}: {exc!r}'

    @property
    def counts(self) -> dict:
        with self._lock:
            return dict(self.writer.counts)

    def close(self) -> dict:
        """Stop recording and finish the bag (idempotent); the message counts per topic."""
        with self._lock:
            first = not self._closed
            if first:
                self._closed = True
                self.writer.close()
            counts = dict(self.writer.counts)
        if first:  # outside the lock: a callback may be waiting on it in the executor thread
            for s in self._subs:
                try:
                    self._node.destroy_subscription(s)
                except Exception:  # the node may already be gone; the bag is what matters
                    pass
        return counts
