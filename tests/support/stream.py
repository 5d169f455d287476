"""A device that streams QoS 1 requests at a steady rate and records every reply, for crash and soak tests.

It keeps a persistent MQTT 5 session (never a clean start: the client id is fresh,
a session expiry), so replies published while it is disconnected (a broker
restart) wait at the broker; paho reconnects and resends unacknowledged
requests by itself.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.probe import device_of, nodelay
from tests.support.timeouts import scaled

#: Builds request ``n``: (topic, arguments).
RequestMaker = Callable[[int], tuple[str, dict[str, Any]]]


class StreamingDevice:
    """One paho connection: a publishing thread and a reply log keyed by request number."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        # Each request's reply comes to roost/replies/<its topic's device>/<token>: inside that device's space.
        self.token = f"stream-{uuid.uuid4().hex}"
        # A device that logs in (a broker with ACLs) may subscribe only inside its own reply space.
        self.reply_filter = f"roost/replies/{username or '+'}/{self.token}"
        self.replies: dict[int, list[Any]] = collections.defaultdict(list)
        self.sent_at: dict[int, float] = {}  # request number: when it was published (time.monotonic())
        self.first_reply_at: dict[int, float] = {}  # request number: when its first reply came
        self._lock = threading.Lock()
        self._count = 0
        self.sent = 0
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        client_id = f"stream-{uuid.uuid4().hex[:10]}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 1)
        client.on_message = self._on_message
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.on_socket_open = nodelay  # Nagle's algorithm would hold each small request back ~40 ms
        client.on_connect = lambda c, *args: c.subscribe(self.reply_filter, 1)
        if username is not None:
            client.username_pw_set(username, password)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        client.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        assert self._subscribed.wait(scaled(10)), "no SUBACK for the reply topic"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr is None:
            return
        decoded = msgpack.unpackb(msg.payload, raw=False)
        now = time.monotonic()
        with self._lock:
            self.first_reply_at.setdefault(int(corr), now)
            self.replies[int(corr)].append(decoded)
            self._count += 1

    @property
    def reply_count(self) -> int:
        """Replies received, duplicates included."""
        with self._lock:
            return self._count

    @property
    def answered(self) -> int:
        """Distinct requests with at least one reply."""
        with self._lock:
            return len(self.replies)

    def start(self, total: int, rate: float, make: RequestMaker) -> None:
        """Publish ``total`` requests at ``rate`` per second from a background thread."""
        self._thread = threading.Thread(target=self._stream, args=(total, rate, make), daemon=True)
        self._thread.start()

    def _stream(self, total: int, rate: float, make: RequestMaker) -> None:
        started = time.monotonic()
        for n in range(total):
            if self._stop.is_set():
                return
            # Pacing (not synchronisation): request n leaves at its slot on the schedule.
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            topic, args = make(n)
            reply_topic = f"roost/replies/{device_of(topic)}/{self.token}"
            self.sent_at[n] = time.monotonic()
            self.client.publish(topic, msgpack.packb(args), qos=1, properties=reply_properties(reply_topic, n))
            self.sent = n + 1

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until true (``timeout`` in base seconds) or fail naming ``what``."""
        deadline = time.monotonic() + scaled(timeout)
        while not condition():
            assert time.monotonic() < deadline, f"timed out on {what} (sent {self.sent}, answered {self.answered})"
            time.sleep(0.01)  # a poll interval inside a bounded wait

    def close(self) -> None:
        """Stop streaming and disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(scaled(10))
        self.client.disconnect()
        self.client.loop_stop()


def reply_properties(reply_topic: str, number: int) -> Properties:
    """MQTT 5 PUBLISH properties of request ``number``: its Response Topic and Correlation Data."""
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = reply_topic
    props.CorrelationData = str(number).encode()
    return props
