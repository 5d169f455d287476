"""The paho-mqtt 2.x adapter: the only module that imports paho.

paho runs its own network thread (``loop_start``). Its callbacks only build an
:class:`InboundMessage` and hand it to the event loop's queue; decoding,
validation and dispatch happen on the loop. Settings that matter for speed and
for not losing requests:

* TCP_NODELAY on the socket (without it every QoS 1 round trip waits ~44 ms);
* a raised max in-flight window (paho's 20 halves QoS 1 throughput);
* ``clean_start=False`` with an explicit session expiry, so requests queued at
  the broker while the gateway restarts are delivered after it comes back;
* manual acknowledgement, so the gateway decides when a request is acked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import BrokerUnreachable, SubscriptionRefused
from gateway.transport.base import Confirmation, InboundMessage, LinkState, OutboundMessage, Transport
from gateway.transport.options import ConnectOptions

log = logging.getLogger(__name__)


UNCONFIRMED_SWEEP = 10_000  # outstanding QoS 1/2 publishes before a full sweep of confirmed ones

class PahoTransport(Transport):
    """An MQTT 5 (or 3.1.1) connection through paho-mqtt's network thread."""

    def __init__(self, options: ConnectOptions) -> None:
        self._options = options
        self._v5 = options.mqtt_version == 5
        self.messages: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._filters: list[tuple[str, int]] = []
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._sub_waiters: dict[int, asyncio.Future[list[int]]] = {}
        self._unconfirmed: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
        self._sweep_at = UNCONFIRMED_SWEEP
        # Messages from paho's thread wait here; one wake-up of the loop takes them all. A
        # call_soon_threadsafe per message would fill the loop's self-pipe under load, and then a
        # SIGTERM's wake-up byte is dropped and the gateway never stops.
        self._inbox: collections.deque[InboundMessage] = collections.deque()
        self._inbox_lock = threading.Lock()
        self._wakeup_pending = False
        self._closing = False
        self._link = LinkState()  # created here, before paho's thread writes to it
        self._confirmations: dict[int, Confirmation] = {}  # mid → callback, on the loop only
        self._tracking = False  # set once: from then on paho's thread hands every PUBACK'd mid over
        self._client = self._build_client()

    @property
    def protocol_version(self) -> int:
        """5 or 4."""
        return 5 if self._v5 else 4

    def _build_client(self) -> mqtt.Client:
        opts = self._options
        if self._v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=opts.client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=opts.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=opts.clean_start,
                manual_ack=True,
            )
        client.max_inflight_messages_set(opts.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=opts.max_reconnect_delay)
        if opts.username is not None:
            client.username_pw_set(opts.username, opts.password)
        if opts.ssl_context is not None:
            client.tls_set_context(opts.ssl_context)
        if opts.will_topic is not None:
            client.will_set(opts.will_topic, opts.will_payload, qos=1)
        client.on_socket_open = _set_nodelay
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        return client

    # -- paho's network thread: hand off only -------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            log.warning("broker refused the connection: %s", reason)
            return
        log.info(
            "connected to %s:%d (session present: %s)",
            self._options.host,
            self._options.port,
            getattr(flags, "session_present", False),
        )
        if self._filters:
            client.subscribe(self._filters)
        # Plain attribute writes from paho's thread: read on the loop only for health and metrics.
        self.link.connects += 1
        self.link.connected = True
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._connected.clear()
        self.link.connected = False
        if not self._closing:
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        response_topic = correlation = expiry = None
        props = getattr(msg, "properties", None)
        if props is not None:
            response_topic = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
            expiry = getattr(props, "MessageExpiryInterval", None)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.warning("dropped a message whose topic is not UTF-8")
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            return
        inbound = InboundMessage(
            topic=topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            received_at=time.monotonic(),
            response_topic=response_topic,
            correlation_data=correlation,
            message_expiry=expiry,
            retain=bool(msg.retain),
            ack_token=(msg.mid, msg.qos),
        )
        loop = self._loop
        if loop is None:
            return
        with self._inbox_lock:
            self._inbox.append(inbound)
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        loop.call_soon_threadsafe(self._take_inbox)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        loop = self._loop
        if loop is not None:
            codes = [int(r.value) for r in reasons]
            loop.call_soon_threadsafe(self._resolve_subscribe, mid, codes)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        loop = self._loop
        # Checked here, not per mid: the PUBACK may arrive before publish() has stored its callback.
        if self._tracking and loop is not None:
            loop.call_soon_threadsafe(self._confirmed, mid)

    # -- event loop side ----------------------------------------------------------------

    def _take_inbox(self) -> None:
        """Deliver, in order, every message paho's thread has handed over since the last wake-up."""
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
            self._wakeup_pending = False
        deliver = self.deliver
        for message in batch:
            deliver(message)

    def _confirmed(self, mid: int) -> None:
        confirmation = self._confirmations.pop(mid, None)
        if confirmation is not None:
            confirmation()

    def _resolve_subscribe(self, mid: int, codes: list[int]) -> None:
        waiter = self._sub_waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(codes)

    async def connect(self, timeout: float) -> None:
        """Connect with backoff until ``timeout``; then paho's thread keeps reconnecting."""
        self._loop = asyncio.get_running_loop()
        opts = self._options
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = opts.session_expiry
            props.ReceiveMaximum = min(opts.receive_maximum, 65535)
        deadline = time.monotonic() + timeout
        delay = 0.2
        last_error = ""
        while True:
            self._connect_error = None
            try:
                kwargs: dict[str, Any] = {"keepalive": opts.keepalive}
                if self._v5:
                    kwargs["clean_start"] = opts.clean_start
                    kwargs["properties"] = props
                await asyncio.to_thread(self._client.connect, opts.host, opts.port, **kwargs)
                break
            except (OSError, ssl.SSLError, ValueError) as exc:
                last_error = str(exc) or type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise BrokerUnreachable(f"cannot reach the broker at {opts.host}:{opts.port}: {last_error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self._client.loop_start()
        while not self._connected.is_set():
            if self._connect_error is not None:
                self._client.loop_stop()
                raise BrokerUnreachable(
                    f"the broker at {opts.host}:{opts.port} refused the connection: {self._connect_error}"
                )
            if time.monotonic() > deadline:
                self._client.loop_stop()
                raise BrokerUnreachable(f"no CONNACK from the broker at {opts.host}:{opts.port}")
            await asyncio.sleep(0.01)

    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Subscribe and check every SUBACK reason code."""
        wanted = [(f, qos) for f in filters]
        self._filters.extend(wanted)
        if not wanted:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[int]] = loop.create_future()
        rc, mid = self._client.subscribe(wanted)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise SubscriptionRefused(f"cannot subscribe: {mqtt.error_string(rc)}")
        self._sub_waiters[mid] = waiter
        codes = await asyncio.wait_for(waiter, timeout=10.0)
        for (topic_filter, _), code in zip(wanted, codes, strict=False):
            if code >= 0x80:
                raise SubscriptionRefused(
                    f"the broker refused the subscription to {topic_filter!r} (reason code {code:#04x})"
                )

    def publish(self, message: OutboundMessage, on_confirmed: Confirmation | None = None) -> None:
        """Queue a PUBLISH; paho's thread sends it."""
        if on_confirmed is not None and message.qos:
            self._tracking = True
        props = None
        if self._v5 and (message.correlation_data is not None or message.response_topic or message.message_expiry):
            props = Properties(PacketTypes.PUBLISH)
            if message.correlation_data is not None:
                props.CorrelationData = message.correlation_data
            if message.response_topic:
                props.ResponseTopic = message.response_topic
            if message.message_expiry:
                props.MessageExpiryInterval = message.message_expiry
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=False, properties=props)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and message.qos:
            # paho keeps it and sends it once connected; is_published() would raise on this rc.
            info.rc = mqtt.MQTT_ERR_SUCCESS
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %r failed: %s", message.topic, mqtt.error_string(info.rc))
        if on_confirmed is not None:
            if message.qos and info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._confirmations[info.mid] = on_confirmed
            else:
                on_confirmed()
        if message.qos:
            unconfirmed = self._unconfirmed
            unconfirmed.append(info)
            while unconfirmed and unconfirmed[0].is_published():
                unconfirmed.popleft()
            if len(unconfirmed) > self._sweep_at:
                # A publish never confirmed (its session was lost) must not pin every later one.
                self._unconfirmed = collections.deque(i for i in unconfirmed if not i.is_published())
                self._sweep_at = max(UNCONFIRMED_SWEEP, 2 * len(self._unconfirmed))

    def ack(self, message: InboundMessage) -> None:
        """Send the PUBACK (QoS 1) or PUBCOMP (QoS 2; paho sent PUBREC on arrival)."""
        token = message.ack_token
        if isinstance(token, tuple) and token[1]:
            self._client.ack(token[0], token[1])

    async def drain(self, timeout: float) -> None:
        """Wait for outstanding QoS 1/2 publishes to be acknowledged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            unconfirmed = self._unconfirmed
            while unconfirmed and unconfirmed[0].is_published():
                unconfirmed.popleft()
            if not unconfirmed:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Disconnect and stop paho's thread."""
        self._closing = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)


def _set_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):  # unix sockets, websockets have no TCP_NODELAY
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
