"""A synchronous MQTT test client (paho) that plays a device: publish raw requests, wait for replies."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.timeouts import scaled


def reply_topic_for(device_id: str) -> str:
    """A fresh reply topic inside ``device_id``'s default reply space (the gateway refuses others)."""
    return f"roost/replies/{device_id}/{uuid.uuid4().hex}"


def device_of(topic: str) -> str:
    """The device id of a call topic in the default namespace (``devices/{device_id}/...``)."""
    levels = topic.split("/")
    return levels[1] if len(levels) > 2 and levels[0] == "devices" else "nobody"


@dataclass(frozen=True)
class Received:
    """A message the probe received."""

    topic: str
    payload: bytes
    qos: int
    correlation_data: bytes | None
    retain: bool

    def decoded(self) -> Any:
        """The msgpack-decoded payload."""
        return msgpack.unpackb(self.payload, raw=False)


class Probe:
    """One MQTT connection (v5 or 3.1.1) with a queue of received messages."""

    def __init__(
        self,
        port: int,
        *,
        version: int = 5,
        client_id: str | None = None,
        clean: bool = True,
        session_expiry: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.client_id = client_id or f"probe-{uuid.uuid4().hex[:10]}"
        self.version = version
        if version == 5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311, clean_session=clean
            )
        self.client.max_inflight_messages_set(1000)
        self.received: queue.Queue[Received] = queue.Queue()
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_socket_open = nodelay
        if username is not None:
            self.client.username_pw_set(username, password)
        kwargs: dict[str, Any] = {}
        if version == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
            kwargs = {"clean_start": clean, "properties": props}
        self.client.connect("127.0.0.1", port, keepalive=30, **kwargs)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        self.received.put(Received(msg.topic, bytes(msg.payload), msg.qos, corr, bool(msg.retain)))

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> None:
        """Subscribe and wait for the SUBACK (``timeout`` in base seconds, as every wait here)."""
        self._subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self._subscribed.wait(scaled(timeout)), f"no SUBACK for {topic}"

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry: int | None = None,
        retain: bool = False,
    ) -> None:
        """Publish raw bytes with optional MQTT 5 properties and wait until it is sent."""
        props = None
        if self.version == 5 and (response_topic or correlation_data is not None or expiry is not None):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if expiry is not None:
                props.MessageExpiryInterval = expiry
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(scaled(5.0))

    def request(
        self,
        topic: str,
        args: Any = None,
        *,
        qos: int = 1,
        raw: bytes | None = None,
        timeout: float = 10.0,
        expiry: int | None = None,
    ) -> Any:
        """An MQTT 5 request with a fresh response topic in the device's reply space; the decoded reply."""
        reply_topic = reply_topic_for(device_of(topic))
        self.subscribe(reply_topic)
        corr = uuid.uuid4().bytes
        payload = raw if raw is not None else (b"" if args is None else msgpack.packb(args, use_bin_type=True))
        self.publish(topic, payload, qos, response_topic=reply_topic, correlation_data=corr, expiry=expiry)
        msg = self.wait_for(reply_topic, timeout)
        assert msg.correlation_data == corr
        return msg.decoded()

    def wait_for(self, topic: str, timeout: float = 10.0) -> Received:
        """The next message on ``topic``; other messages are kept for later calls."""
        limit = scaled(timeout)
        deadline = time.monotonic() + limit
        kept: list[Received] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message on {topic!r} within {limit:g} s")
                try:
                    msg = self.received.get(timeout=left)
                except queue.Empty:
                    continue
                if msg.topic == topic:
                    return msg
                kept.append(msg)
        finally:
            for msg in kept:
                self.received.put(msg)

    def nothing_else(self) -> None:
        """Assert that nothing else has arrived: call it after a message that any unwanted one would have preceded."""
        try:
            msg = self.received.get_nowait()
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic!r}: {msg.payload!r}")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open: TCP_NODELAY on the connection."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
