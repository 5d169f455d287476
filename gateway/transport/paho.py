"""The paho-mqtt 2.x adapter: the only module that imports paho.

paho is driven from the gateway's event loop through its external-loop API; there is no
network thread. The socket paho opens is watched with ``add_reader`` (→ ``loop_read``) and,
while paho has bytes to send (``on_socket_register_write``), ``add_writer`` (→
``loop_write``); a timer runs ``loop_misc`` every second for keepalive. paho's callbacks
therefore run on the loop: messages and PUBACKs collected during one ``loop_read`` are
handled right after it, with no lock, queue or wake-up byte in between. Publishes made in
one loop turn are written by the next ``loop_write`` together.

Only paho's ``reconnect()`` runs elsewhere, in a worker thread (``asyncio.to_thread``): it
blocks on the TCP connect and the TLS handshake (paho 2.2 completes ``do_handshake`` there,
before it makes the socket non-blocking and queues CONNECT). While it runs, publishes for
the window and acks wait here and go to paho once it returns, so nothing can be queued
before CONNECT. A lost connection is reconnected the same way, with exponential backoff
(0.1 s doubling up to ``max_reconnect_delay``); subscriptions are sent again on every
CONNACK and their SUBACK codes checked.

Settings that matter for speed and for not losing requests:

* TCP_NODELAY on the socket (without it every QoS 1 round trip waits ~44 ms);
* a raised in-flight window (paho's 20 halves QoS 1 throughput), kept here rather than by
  paho: publishes beyond it wait as small ``OutboundMessage`` objects, paho (~9 KB per
  ``MQTTMessage``, its window walked on every PUBACK) only ever holds the window;
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
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.errors import BrokerUnreachable, SubscriptionRefused
from gateway.transport.base import (
    MAX_STRIKES,
    NOT_REFUSALS,
    Confirmation,
    DrainWaiters,
    InboundMessage,
    LinkState,
    OutboundMessage,
    Transport,
)
from gateway.transport.options import ConnectOptions

log = logging.getLogger(__name__)

_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)  # never set: copied for each publish
BACKLOG_WARNING = 10_000  # replies waiting for the window before a warning says paho cannot keep up
_READS_PER_TURN = 512  # loop_read() calls per readable event, at most (each ends at EAGAIN or its packet count)
_MISC_INTERVAL = 1.0  # seconds between loop_misc() calls (keepalive, PINGRESP timeout)
_FIRST_RETRY = 0.1
_STABLE_AFTER = 10.0  # a connection that lived this long resets the backoff
_CLOSE_FLUSH = 1.0  # seconds close() waits for the DISCONNECT to be written


class PahoTransport(Transport):
    """An MQTT 5 (or 3.1.1) connection through paho-mqtt, driven by the event loop."""

    def __init__(self, options: ConnectOptions) -> None:
        self._options = options
        self._v5 = options.mqtt_version == 5
        self.messages: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._filters: list[tuple[str, int]] = []
        self._connack: asyncio.Future[str | None] | None = None  # the first connect: None or the refusal
        self._sub_waiters: dict[int, asyncio.Future[list[int]]] = {}
        # What paho's callbacks report during one loop_read(), handled right after it returns.
        self._reading = False
        self._inbox: list[InboundMessage] = []
        self._completed: list[int] = []
        self._closing = False
        self._link = LinkState()
        self._fd = -1  # the socket watched by the loop, or -1
        self._writing = False  # add_writer is set on _fd
        self._misc: asyncio.TimerHandle | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._in_reconnect = False  # paho's reconnect() runs in a worker thread
        self._deferred_acks: list[tuple[int, int]] = []  # acks made while it runs
        self._connected_since = 0.0
        self._delay = _FIRST_RETRY
        # The QoS 1/2 window, on the loop only: mid → message and confirmation of publishes handed to
        # paho, and the publishes waiting for a free slot, in order.
        self._in_flight: dict[int, tuple[OutboundMessage, Confirmation | None]] = {}
        self._strikes: dict[int, int] = {}  # mid → connections the broker ended while it was unacknowledged
        self._waiting: collections.deque[tuple[OutboundMessage, Confirmation | None]] = collections.deque()
        self._server_receive_maximum = 65535  # from the CONNACK
        self._broker_max_packet: int | None = None  # from the CONNACK
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
        if opts.username is not None:
            client.username_pw_set(opts.username, opts.password)
        if opts.ssl_context is not None:
            client.tls_set_context(opts.ssl_context)
        if opts.will_topic is not None:
            client.will_set(opts.will_topic, opts.will_payload, qos=1)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        return client

    # -- the socket on the loop -----------------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Called in the worker thread, inside reconnect(): the loop starts watching when it returns.
        with contextlib.suppress(OSError, AttributeError):  # unix sockets, websockets have no TCP_NODELAY
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._unwatch()

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Ignored while reconnect() runs (CONNECT is queued): _watch() adds the writer afterwards.
        if self._fd >= 0 and not self._writing and self._loop is not None:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._writing and self._loop is not None:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _watch(self) -> None:
        """Watch the socket paho's reconnect() just opened (on the loop, once it has returned)."""
        sock = self._client.socket()
        loop = self._loop
        if sock is None or loop is None:
            return
        self._unwatch()
        self._fd = sock.fileno()
        loop.add_reader(self._fd, self._readable)
        if self._client.want_write():
            self._writing = True
            loop.add_writer(self._fd, self._writable)
        if self._misc is None:
            self._misc = loop.call_later(_MISC_INTERVAL, self._tick)

    def _unwatch(self) -> None:
        loop = self._loop
        if self._fd < 0 or loop is None:
            return
        loop.remove_reader(self._fd)
        if self._writing:
            loop.remove_writer(self._fd)
            self._writing = False
        self._fd = -1

    def _readable(self) -> None:
        # loop_read() stops after as many packets as paho has messages in flight: one, for QoS 0
        # traffic. Read on while packets keep coming, up to a bound that lets the loop breathe.
        client = self._client
        self._reading = True
        try:
            reads = 0
            while True:
                before = len(self._inbox) + len(self._completed)
                if client.loop_read():
                    break
                sock = client.socket()
                if sock is None:
                    break
                # TLS: decrypted bytes left in the SSL object do not make the socket readable again.
                if isinstance(sock, ssl.SSLSocket) and sock.pending():
                    continue
                reads += 1
                if reads >= _READS_PER_TURN or len(self._inbox) + len(self._completed) == before:
                    break
        finally:
            self._reading = False
            self._take_reported()

    def _writable(self) -> None:
        self._reading = True  # QoS 0 publishes report when written: handled together afterwards
        try:
            self._client.loop_write()
        finally:
            self._reading = False
            self._take_reported()

    def _tick(self) -> None:
        self._misc = None
        if self._closing or self._fd < 0:
            return
        self._client.loop_misc()
        if self._fd >= 0 and self._loop is not None:
            self._misc = self._loop.call_later(_MISC_INTERVAL, self._tick)

    # -- paho's callbacks, on the loop --------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(str(reason))
            return
        log.info(
            "connected to %s:%d (session present: %s)",
            self._options.host,
            self._options.port,
            getattr(flags, "session_present", False),
        )
        receive_maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self._server_receive_maximum = receive_maximum if isinstance(receive_maximum, int) else 65535
        maximum_packet = getattr(props, "MaximumPacketSize", None) if props is not None else None
        self._broker_max_packet = maximum_packet if isinstance(maximum_packet, int) else None
        if self._filters:
            client.subscribe(self._subscriptions(self._filters))
        self.link.connects += 1
        self.link.connected = True
        self._connected_since = time.monotonic()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(None)
        if self._waiting and self._loop is not None:
            self._loop.call_soon(self._release_waiting)  # the window may be larger now

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if self.link.connected and time.monotonic() - self._connected_since >= _STABLE_AFTER:
            self._delay = _FIRST_RETRY
        self.link.connected = False
        if self._closing or self._connack is not None:
            return  # close(), or the first connect() sees it
        log.warning("disconnected from the broker (%s); reconnecting", reason)
        if getattr(reason, "value", None) not in NOT_REFUSALS:
            self._strike()
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.ensure_future(self._reconnect())

    def _strike(self) -> None:
        """The broker ended the connection: a strike for every unacknowledged publish; give up those at the limit.

        paho resends what is in its outgoing store on reconnect: a publish given up leaves that store here,
        while no connection is up (paho's reconnect recounts its in-flight messages from the store).
        """
        given_up = []
        for mid in self._in_flight:
            strikes = self._strikes[mid] = self._strikes.get(mid, 0) + 1
            if strikes >= MAX_STRIKES:
                given_up.append(mid)
        client = self._client
        for mid in given_up:
            del self._strikes[mid]
            message, confirmation = self._in_flight.pop(mid)
            with client._out_message_mutex:  # paho has no API to drop a queued publish: its own store
                client._out_messages.pop(mid, None)
            if confirmation is not None:
                confirmation()
            self.give_up(message, f"the broker ended the connection {MAX_STRIKES} times while it was unacknowledged")
        if given_up:
            self._release_waiting()

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
        if self._reading:
            self._inbox.append(inbound)
        else:
            self.deliver(inbound)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        codes = [int(r.value) for r in reasons]
        waiter = self._sub_waiters.pop(mid, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(codes)
            return
        # A subscription sent again on reconnect: nobody waits for it, so a refusal is logged.
        for (topic_filter, _), code in zip(self._filters, codes, strict=False):
            if code >= 0x80:
                log.error("the broker refused the renewed subscription to %r (reason code %#04x)", topic_filter, code)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # Every mid is reported (QoS 0 ones are not in the window and are ignored).
        self._completed.append(mid)
        if not self._reading:
            self._take_reported()

    def _take_reported(self) -> None:
        """Handle what paho's callbacks reported: completed publishes, then messages."""
        completed = self._completed
        if completed:
            self._completed = []
            in_flight = self._in_flight
            for mid in completed:
                if mid in in_flight:
                    confirmation = in_flight.pop(mid)[1]
                    if confirmation is not None:
                        confirmation()
            if self._strikes:
                for mid in completed:
                    self._strikes.pop(mid, None)
            self._release_waiting()
        batch = self._inbox
        if batch:
            self._inbox = []
            deliver = self.deliver
            for message in batch:
                deliver(message)

    # -- connecting -----------------------------------------------------------------------

    async def _run_reconnect(self) -> None:
        """paho's reconnect() (TCP connect, TLS handshake, CONNECT queued) in a worker thread."""
        self._unwatch()
        self._in_reconnect = True
        try:
            await asyncio.to_thread(self._client.reconnect)
        finally:
            self._in_reconnect = False
        if self._closing:
            with contextlib.suppress(Exception):
                sock = self._client.socket()
                if sock is not None:
                    sock.close()
            return
        self._watch()
        acks, self._deferred_acks = self._deferred_acks, []
        for mid, qos in acks:
            self._client.ack(mid, qos)
        self._release_waiting()

    async def connect(self, timeout: float) -> None:
        """Connect with backoff until ``timeout``; afterwards the loop keeps reconnecting."""
        self._loop = asyncio.get_running_loop()
        opts = self._options
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = opts.session_expiry
            props.ReceiveMaximum = min(opts.receive_maximum, 65535)
            if opts.max_packet_size is not None:
                props.MaximumPacketSize = opts.max_packet_size
        # connect_async only records the settings; reconnect() makes the connection.
        kwargs: dict[str, Any] = {"keepalive": opts.keepalive}
        if self._v5:
            kwargs["clean_start"] = opts.clean_start
            kwargs["properties"] = props
        self._client.connect_async(opts.host, opts.port, **kwargs)
        deadline = time.monotonic() + timeout
        delay = 0.2
        last_error = ""
        while True:
            try:
                await self._run_reconnect()
                break
            except (OSError, ssl.SSLError, ValueError) as exc:
                last_error = str(exc) or type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise BrokerUnreachable(f"cannot reach the broker at {opts.host}:{opts.port}: {last_error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self._connack = self._loop.create_future()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    refusal = await asyncio.wait_for(asyncio.shield(self._connack), min(left, 0.05))
                    if refusal is not None:
                        self._abort()
                        raise BrokerUnreachable(
                            f"the broker at {opts.host}:{opts.port} refused the connection: {refusal}"
                        )
                    return
                if self._fd < 0:  # lost before the CONNACK
                    break
            self._abort()
            raise BrokerUnreachable(f"no CONNACK from the broker at {opts.host}:{opts.port}")
        finally:
            self._connack = None

    def _abort(self) -> None:
        """Give up the connection without DISCONNECT (the first connect failed)."""
        self._closing = True
        self._unwatch()
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    async def _reconnect(self) -> None:
        """After a lost connection: reconnect with exponential backoff until connected or closed."""
        opts = self._options
        while not self._closing:
            delay = self._delay
            await asyncio.sleep(delay)
            self._delay = min(delay * 2, max(opts.max_reconnect_delay, _FIRST_RETRY))
            if self._closing:
                return
            try:
                await self._run_reconnect()
                return  # a refused CONNACK or a new loss starts another _reconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning(
                    "cannot reconnect to %s:%d: %s; retrying in %.1f s",
                    opts.host,
                    opts.port,
                    str(exc) or type(exc).__name__,
                    self._delay,
                )
            except Exception:
                # Whatever else goes wrong, this task must go on reconnecting.
                log.exception("reconnecting to %s:%d failed; retrying in %.1f s", opts.host, opts.port, self._delay)

    def _subscriptions(self, filters: list[tuple[str, int]]) -> list[tuple[str, Any]]:
        """paho's form of ``filters``: on MQTT 5, retained messages are not sent on subscribing and a live one keeps
        its retain flag (the gateway refuses retained requests); MQTT 3.1.1 has no such options."""
        if not self._v5:
            return list(filters)
        return [
            (f, SubscribeOptions(qos=qos, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
            for f, qos in filters
        ]

    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Subscribe and check every SUBACK reason code."""
        wanted = [(f, qos) for f in filters]
        self._filters.extend(wanted)
        if not wanted:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[int]] = loop.create_future()
        rc, mid = self._client.subscribe(self._subscriptions(wanted))
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise SubscriptionRefused(f"cannot subscribe: {mqtt.error_string(rc)}")
        self._sub_waiters[mid] = waiter
        codes = await asyncio.wait_for(waiter, timeout=10.0)
        for (topic_filter, _), code in zip(wanted, codes, strict=False):
            if code >= 0x80:
                raise SubscriptionRefused(
                    f"the broker refused the subscription to {topic_filter!r} (reason code {code:#04x})"
                )

    # -- publishing -----------------------------------------------------------------------

    def publish(self, message: OutboundMessage, on_confirmed: Confirmation | None = None) -> None:
        """Hand a PUBLISH to paho, or keep a QoS 1/2 one here until the window has room."""
        if message.qos and (self._waiting or self._in_reconnect or len(self._in_flight) >= self._window()):
            self._waiting.append((message, on_confirmed))
            if len(self._waiting) >= BACKLOG_WARNING and not self._backlog_warned:
                self._backlog_warned = True
                log.warning(
                    "%d replies wait to be sent: paho cannot keep up with this load (the fast transport, for"
                    " MQTT 5, can); they are kept, memory grows with them (roost_outbound_backlog)",
                    len(self._waiting),
                )
            return
        if self._in_reconnect:  # QoS 0: paho's socket is being made, nothing may go before CONNECT
            log.warning("publish to %r failed: %s", message.topic, mqtt.error_string(mqtt.MQTT_ERR_NO_CONN))
            if on_confirmed is not None:
                on_confirmed()
            return
        self._send(message, on_confirmed)

    @property
    def broker_max_packet_size(self) -> int | None:
        """The broker's Maximum Packet Size (its CONNACK), ``None`` if it set none."""
        return self._broker_max_packet

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
            self._in_flight[info.mid] = (message, on_confirmed)
            return
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %r failed: %s", message.topic, mqtt.error_string(info.rc))
        if on_confirmed is not None:
            on_confirmed()  # QoS 0, or refused: nothing is left to send

    def _release_waiting(self) -> None:
        """Hand waiting publishes to paho while the window has room; wake drain() once all are done."""
        waiting = self._waiting
        if self._backlog_warned and len(waiting) < BACKLOG_WARNING // 2:
            self._backlog_warned = False
            log.info("the reply backlog is down to %d", len(waiting))
        if not self._in_reconnect:
            window = self._window()
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
            if self._in_reconnect:
                self._deferred_acks.append(token)
            else:
                self._client.ack(token[0], token[1])

    async def drain(self, timeout: float) -> None:
        """Wait for outstanding QoS 1/2 publishes to be acknowledged."""
        await self._drainers.wait(timeout, lambda: self.outbound_backlog)

    async def close(self) -> None:
        """Send DISCONNECT, wait briefly for it to be written, and close the socket."""
        self._closing = True
        if self._reconnector is not None:
            if self._in_reconnect:  # let reconnect() return: then the new socket is closed
                await asyncio.wait({self._reconnector}, timeout=_CLOSE_FLUSH)
            self._reconnector.cancel()
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        client = self._client
        if client.socket() is not None and not self._in_reconnect:
            client.disconnect()  # queued; loop_write sends it and paho closes the socket
            client.loop_write()
            deadline = time.monotonic() + _CLOSE_FLUSH
            while client.socket() is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        self._unwatch()
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self.link.connected = False
