"""The paho-mqtt 2.x adapter: the only module that imports paho.

paho runs its own network thread (``loop_start``). Its callbacks only build an
:class:`InboundMessage` and hand it to the event loop's queue; decoding,
validation and dispatch happen on the loop. Settings that matter for speed and
for not losing requests:

* TCP_NODELAY on the socket (without it every QoS 1 round trip waits ~44 ms);
* a raised in-flight window (paho's 20 halves QoS 1 throughput), kept here rather than by
  paho. paho's thread shares the GIL with the loop and, under load, sends replies slower than
  the loop makes them (after a broker restart, tens of thousands wait). paho would keep each
  of them as an ``MQTTMessage`` of ~9 KB and walk its window on every PUBACK: hundreds of MB
  that the process never gives back. Here they wait as small ``OutboundMessage`` objects and
  paho only ever holds the window;
* PUBLISH properties copied from one template: a new ``Properties`` builds its own name and
  type tables, ~8 KB per message held until the PUBACK;
* ``clean_start=False`` with an explicit session expiry, so requests queued at
  the broker while the gateway restarts are delivered after it comes back;
* manual acknowledgement, so the gateway decides when a request is acked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
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
from gateway.transport.base import Confirmation, DrainWaiters, InboundMessage, LinkState, OutboundMessage, Transport
from gateway.transport.options import ConnectOptions

log = logging.getLogger(__name__)

_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)  # never set: copied for each publish
BACKLOG_WARNING = 10_000  # replies waiting for the window before a warning says paho cannot keep up


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
        # Messages and completed publishes (mids) from paho's thread wait here; one wake-up of the
        # loop takes them all. A call_soon_threadsafe per message or PUBACK would fill the loop's
        # self-pipe under load (then a SIGTERM's wake-up byte is dropped and the gateway never
        # stops), and each is a syscall that makes paho's thread wait for the GIL again.
        self._inbox: collections.deque[InboundMessage] = collections.deque()
        self._completed: list[int] = []
        self._inbox_lock = threading.Lock()
        self._wakeup_pending = False
        self._closing = False
        self._link = LinkState()  # created here, before paho's thread writes to it
        # The QoS 1/2 window, on the loop only: mid → confirmation of publishes handed to paho, and
        # the publishes waiting for a free slot, in order.
        self._in_flight: dict[int, Confirmation | None] = {}
        self._waiting: collections.deque[tuple[OutboundMessage, Confirmation | None]] = collections.deque()
        self._server_receive_maximum = 65535  # from the CONNACK, written by paho's thread
        self._drainers = DrainWaiters()
        self._backlog_warned = False  # logged once per episode of a large backlog
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
        client.max_inflight_messages_set(0)  # unlimited: the window is kept by publish(), see above
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
        receive_maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self._server_receive_maximum = receive_maximum if isinstance(receive_maximum, int) else 65535
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
        # Every mid is handed over (QoS 0 ones are ignored on the loop): the PUBACK may arrive
        # before publish() has recorded its mid, and the loop sees it only after that.
        loop = self._loop
        if loop is None:
            return
        with self._inbox_lock:
            self._completed.append(mid)
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        loop.call_soon_threadsafe(self._take_inbox)

    # -- event loop side ----------------------------------------------------------------

    def _take_inbox(self) -> None:
        """Take what paho's thread handed over since the last wake-up: completed publishes, then messages."""
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
            completed, self._completed = self._completed, []
            self._wakeup_pending = False
        in_flight = self._in_flight
        for mid in completed:
            if mid in in_flight:
                confirmation = in_flight.pop(mid)
                if confirmation is not None:
                    confirmation()
        if completed:
            self._release_waiting()
        deliver = self.deliver
        for message in batch:
            deliver(message)

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
        """Hand a PUBLISH to paho's thread, or keep a QoS 1/2 one here until the window has room."""
        if message.qos and (self._waiting or len(self._in_flight) >= self._window()):
            self._waiting.append((message, on_confirmed))
            if len(self._waiting) >= BACKLOG_WARNING and not self._backlog_warned:
                self._backlog_warned = True
                log.warning(
                    "%d replies wait to be sent: paho cannot keep up with this load (the fast transport, for"
                    " MQTT 5, can); they are kept, memory grows with them (roost_outbound_backlog)",
                    len(self._waiting),
                )
            return
        self._send(message, on_confirmed)

    @property
    def outbound_backlog(self) -> int:
        """QoS 1/2 publishes in flight or waiting for the window."""
        return len(self._in_flight) + len(self._waiting)

    def _window(self) -> int:
        return max(1, min(self._options.max_inflight, self._server_receive_maximum))

    def _send(self, message: OutboundMessage, on_confirmed: Confirmation | None) -> None:
        props = None
        if self._v5 and (message.correlation_data is not None or message.response_topic or message.message_expiry):
            props = copy.copy(_PUBLISH_PROPERTIES)  # shares the template's read-only tables
            if message.correlation_data is not None:
                props.CorrelationData = message.correlation_data
            if message.response_topic:
                props.ResponseTopic = message.response_topic
            if message.message_expiry:
                props.MessageExpiryInterval = message.message_expiry
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=False, properties=props)
        # MQTT_ERR_NO_CONN: a QoS 1/2 publish stays with paho, which sends it once connected.
        if message.qos and info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._in_flight[info.mid] = on_confirmed
            return
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %r failed: %s", message.topic, mqtt.error_string(info.rc))
        if on_confirmed is not None:
            on_confirmed()  # QoS 0, or refused: nothing is left to send

    def _release_waiting(self) -> None:
        """Hand waiting publishes to paho while the window has room; wake drain() once all are done."""
        waiting = self._waiting
        window = self._window()
        if self._backlog_warned and len(waiting) < BACKLOG_WARNING // 2:
            self._backlog_warned = False
            log.info("the reply backlog is down to %d", len(waiting))
        while waiting and len(self._in_flight) < window:
            message, on_confirmed = waiting.popleft()
            try:
                self._send(message, on_confirmed)
            except (ValueError, TypeError) as exc:  # no caller to raise to any more
                log.warning("dropped a publish to %r: %s", message.topic, exc)
                if on_confirmed is not None:
                    on_confirmed()
        if self._drainers and not waiting and not self._in_flight:
            self._drainers.wake()

    def ack(self, message: InboundMessage) -> None:
        """Send the PUBACK (QoS 1) or PUBCOMP (QoS 2; paho sent PUBREC on arrival)."""
        token = message.ack_token
        if isinstance(token, tuple) and token[1]:
            self._client.ack(token[0], token[1])

    async def drain(self, timeout: float) -> None:
        """Wait for outstanding QoS 1/2 publishes to be acknowledged."""
        await self._drainers.wait(timeout, lambda: self.outbound_backlog)

    async def close(self) -> None:
        """Disconnect and stop paho's thread."""
        self._closing = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)


def _set_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):  # unix sockets, websockets have no TCP_NODELAY
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
