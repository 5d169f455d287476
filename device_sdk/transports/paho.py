"""MQTT over paho-mqtt 2.x for CPython devices: the only SDK module that imports paho.

paho's network thread (``loop_start``) keeps the connection and reconnects
with back-off. Its callbacks only hand off: a :class:`Received` goes to the
device's callback (which files it), SUBACKs wake waiters. On every
(re)connection the transport subscribes to what the device lists, so handlers
keep working after a broker restart.

MQTT 5 sessions start clean on the first connection and then live for
``session_expiry`` seconds, so replies published during a short outage are
delivered after the reconnect; :meth:`PahoTransport.stop` ends the session.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device_sdk.errors import ConnectError, NotConnected, SdkError

log = logging.getLogger("device_sdk")


@dataclass(frozen=True, slots=True)
class Received:
    """A PUBLISH that arrived."""

    topic: str
    payload: bytes
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Will:
    """The last will: published by the broker when the device vanishes without closing."""

    topic: str
    payload: bytes
    retain: bool = False


class PahoTransport:
    """One MQTT connection (5 or 3.1.1) kept alive by paho's network thread."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        mqtt5: bool,
        keepalive: int,
        username: str | None,
        password: str | None,
        session_expiry: int,
        reconnect_delay: tuple[float, float],
    ) -> None:
        self._host, self._port = host, port
        self._mqtt5 = mqtt5
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        if mqtt5:
            self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True
            )
        self._client.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]  # paho accepts float seconds
        self._client.max_queued_messages_set(0)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_socket_open = _set_nodelay
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._deliver: Callable[[Received], None] = lambda message: None
        self._filters: Callable[[], list[tuple[str, int]]] = list
        self._ready = threading.Event()  # connected and subscribed
        self._refused: str | None = None
        self._ready_mid: int | None = None
        self._acks: dict[int, list[ReasonCode]] = {}
        self._acked = threading.Condition()
        self._started = False
        self._stopping = False
        self._connections = 0

    @property
    def connected(self) -> bool:
        """Connected, and subscribed to everything the device listed at that moment."""
        return self._ready.is_set()

    def start(
        self,
        deliver: Callable[[Received], None],
        filters: Callable[[], list[tuple[str, int]]],
        will: Will | None,
        timeout: float,
    ) -> None:
        """Connect and subscribe to ``filters()`` (again on every reconnection); raises :class:`ConnectError`."""
        self._deliver, self._filters = deliver, filters
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        kwargs: dict[str, Any] = {"keepalive": self._keepalive}
        if self._mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry
            kwargs["properties"] = props
        try:
            self._client.connect(self._host, self._port, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConnectError(f"cannot reach the broker at {self._host}:{self._port}: {exc}") from None
        self._started = True
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.01):
            if self._refused is not None:
                self.stop()
                raise ConnectError(f"the broker at {self._host}:{self._port} refused the connection: {self._refused}")
            if time.monotonic() > deadline:
                self.stop()
                raise ConnectError(f"no CONNACK and SUBACK from {self._host}:{self._port} within {timeout:g} s")

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed; whether that happened within ``timeout``."""
        return self._ready.wait(timeout)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Queue a PUBLISH (paho keeps QoS 1 messages across reconnections)."""
        props = None
        if self._mqtt5 and (response_topic is not None or correlation_data is not None):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise NotConnected(f"cannot publish to {topic!r}: {mqtt.error_string(info.rc)}")
        if qos == 0 and info.rc == mqtt.MQTT_ERR_NO_CONN:
            raise NotConnected(f"not connected: a QoS 0 message to {topic!r} is not queued")
        return info

    def subscribe(self, filters: list[tuple[str, int]], timeout: float) -> None:
        """Subscribe now and wait for the SUBACK (raises :class:`SdkError` when refused)."""
        rc, mid = self._client.subscribe(filters)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise NotConnected(f"cannot subscribe: {mqtt.error_string(rc)}")
        deadline = time.monotonic() + timeout
        with self._acked:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotConnected(f"no SUBACK within {timeout:g} s")
                self._acked.wait(left)
            reasons = self._acks.pop(mid)
        for (topic, _), reason in zip(filters, reasons, strict=False):
            if reason.is_failure:
                raise SdkError(f"the broker refused the subscription to {topic!r}: {reason}")

    def unsubscribe(self, topic: str) -> None:
        """Unsubscribe (without waiting for the UNSUBACK)."""
        self._client.unsubscribe(topic)

    def stop(self) -> None:
        """Disconnect (ending an MQTT 5 session at once) and stop paho's thread."""
        if not self._started:
            return
        self._stopping = True
        self._started = False
        props = None
        if self._mqtt5:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()
        self._ready.clear()

    # -- paho's network thread: hand off only ---------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.warning("the broker refused the connection: %s", reason)
            return
        self._connections += 1
        filters = self._filters()
        rc, mid = client.subscribe(filters)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("cannot subscribe after connecting: %s", mqtt.error_string(rc))
        self._ready_mid = mid

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        was_ready = self._ready.is_set()
        self._ready.clear()
        if not self._stopping and was_ready:
            log.warning("lost the broker connection (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.warning("dropped a message whose topic is not UTF-8")
            return
        try:
            self._deliver(Received(topic, bytes(msg.payload), correlation))
        except Exception:  # an exception here would end paho's network thread
            log.exception("dropped a message on %r", topic)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        if mid == self._ready_mid:
            self._ready_mid = None
            for reason in reasons:
                if reason.is_failure:
                    log.warning("the broker refused a subscription after connecting: %s", reason)
            if self._connections > 1:
                log.info("reconnected to the broker at %s:%d", self._host, self._port)
            self._ready.set()
            return
        with self._acked:
            self._acks[mid] = reasons
            self._acked.notify_all()


def _set_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # Without TCP_NODELAY every small QoS 1 packet can wait ~40 ms for a delayed ACK.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
