"""The fast MQTT 5 transport: asyncio I/O and the ``mqtt5`` codec; the only package importing mqtt5.

No thread and no callback API. The parts, each in its own module:

* ``fast_reader``: bytes → packets (the codec's errors become ``MalformedPacket``);
* ``fast_connection``: the asyncio ``Protocol``, TCP_NODELAY, one write per loop turn;
* ``fast_outbound``: packet ids, the Receive Maximum window, retransmission;
* ``fast_inbound``: ack tokens, acks in order of arrival, QoS 2 receive state;
* ``fast_subscriptions``: SUBSCRIBE/SUBACK and renewal after a lost session;
* this module: connect, reconnect, keepalive, and routing packets to the above.

* CONNECT carries the client id, credentials, will, keepalive, session expiry
  and Receive Maximum = ``options.receive_maximum`` (the gateway's queue).
  Clean Start is sent on the first connection only when ``clean_start`` is set;
  reconnects always ask to resume, so nothing in flight is lost.
* Keepalive: PINGREQ when half the keepalive passed without traffic in either
  direction; no bytes from the broker for 1.5× keepalive drops the connection.
* Reconnect with exponential backoff (0.1 s doubling up to
  ``max_reconnect_delay``); subscriptions are renewed when the broker lost the
  session. A malformed packet or a server DISCONNECT (logged with its reason
  code) leads to the same reconnect; nothing of it reaches the gateway.
* ``ack(message)`` sends PUBACK for QoS 1 and PUBREC for QoS 2, in order of
  arrival whatever order the calls come in; PUBCOMP answers PUBREL at once.
* MQTT 3.1.1 is not spoken here (``ConfigError`` at construction): the paho
  transport serves such brokers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    DisconnectPacket,
    PingRespPacket,
    PubAckPacket,
    PubCompPacket,
    PublishPacket,
    PubRecPacket,
    PubRelPacket,
    QoS,
    SubAckPacket,
)

from gateway.errors import BrokerUnreachable, ConfigError
from gateway.transport.base import (
    MAX_STRIKES,
    NOT_REFUSALS,
    Confirmation,
    InboundMessage,
    OutboundMessage,
    Transport,
)
from gateway.transport.native.connection import Connection
from gateway.transport.native.inbound import InboundSession
from gateway.transport.native.outbound import OutboundSession
from gateway.transport.native.reader import MalformedPacket
from gateway.transport.native.subscriptions import Subscriptions
from gateway.transport.options import ConnectOptions

log = logging.getLogger(__name__)

_PINGREQ = mqtt5.PingReqPacket().write()
_DISCONNECT = DisconnectPacket().write()
CONNACK_TIMEOUT = 10.0  # per attempt, for the CONNACK after the TCP/TLS handshake
_FIRST_RETRY = 0.1
_STABLE_AFTER = 10.0  # a connection that lived this long resets the backoff


class _Refused(Exception):
    """The broker answered CONNECT with a failure reason code."""


class NativeTransport(Transport):
    """An MQTT 5 connection on the gateway's event loop, encoded and decoded by ``mqtt5``."""

    def __init__(self, options: ConnectOptions) -> None:
        if options.mqtt_version != 5:
            raise ConfigError(
                "the fast transport speaks MQTT 5 only; for an MQTT 3.1.1 broker "
                'use the paho transport (transport = "paho")'
            )
        self._options = options
        self.messages: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._outbound = OutboundSession(options.max_inflight)
        self._inbound = InboundSession()
        self._connect_clean = self._connect_packet(options.clean_start)
        self._connect_resume = self._connect_packet(False)
        self._first = True
        self._conn: Connection | None = None  # the connection whose CONNACK was accepted
        self._subscriptions = Subscriptions(self._outbound)
        self._supervisor: asyncio.Task[None] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def protocol_version(self) -> int:
        """Always 5."""
        return 5

    def _connect_packet(self, clean_start: bool) -> bytes:
        opts = self._options
        will = None
        if opts.will_topic is not None:
            will = mqtt5.Will(opts.will_topic, payload=opts.will_payload, qos=QoS.AT_LEAST_ONCE)
        try:
            return mqtt5.ConnectPacket(
                opts.client_id,
                username=opts.username,
                password=opts.password.encode() if opts.password is not None else None,
                clean_start=clean_start,
                will=will,
                keep_alive=opts.keepalive,
                session_expiry_interval=opts.session_expiry,
                receive_max=min(max(opts.receive_maximum, 1), 65535),
                max_packet_size=opts.max_packet_size,
            ).write()
        except (ValueError, OverflowError) as exc:
            raise ConfigError(f"cannot build the MQTT CONNECT packet from the settings: {exc}") from None

    # -- connecting -------------------------------------------------------------------

    async def connect(self, timeout: float) -> None:
        """Connect with backoff until ``timeout``; afterwards a background task keeps reconnecting."""
        opts = self._options
        where = f"{opts.host}:{opts.port}"
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            left = deadline - time.monotonic()
            try:
                conn = await self._establish(max(left, 0.05))
                break
            except _Refused as exc:
                raise BrokerUnreachable(f"the broker at {where} refused the connection: {exc}") from None
            except (OSError, TimeoutError, MalformedPacket) as exc:
                last_error = str(exc) or type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise BrokerUnreachable(f"cannot reach the broker at {where}: {last_error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self._supervisor = asyncio.create_task(self._stay_connected(conn), name="roost-mqtt-reconnect")

    async def _establish(self, timeout: float) -> Connection:
        """One attempt: TCP (+TLS), CONNECT, CONNACK; raise on any failure."""
        opts = self._options
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self._on_packets, self._on_lost, self._options.max_packet_size),
                    opts.host,
                    opts.port,
                    ssl=opts.ssl_context,
                    server_hostname=opts.host if opts.ssl_context is not None else None,
                )
        except TimeoutError:
            raise TimeoutError(f"TCP/TLS connection not established within {timeout:.1f} s") from None
        conn.send(self._connect_clean if self._first else self._connect_resume)
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.05)):
                connack = await conn.handshake
        except TimeoutError:
            conn.abort()
            raise TimeoutError("no CONNACK from the broker") from None
        except BaseException:
            conn.abort()
            raise
        if connack.reason_code.value >= 0x80:
            conn.abort()
            reason = connack.reason_str or ""
            raise _Refused(f"{connack.reason_code.name} ({connack.reason_code.value:#04x}) {reason}".rstrip())
        return conn

    async def _stay_connected(self, conn: Connection) -> None:
        """Wait for the connection to drop, then reconnect with exponential backoff, until closed."""
        opts = self._options
        delay = _FIRST_RETRY
        while True:
            since = time.monotonic()
            await asyncio.shield(conn.closed)
            if time.monotonic() - since >= _STABLE_AFTER:
                delay = _FIRST_RETRY
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(opts.max_reconnect_delay, _FIRST_RETRY))
                try:
                    conn = await self._establish(CONNACK_TIMEOUT)
                    break
                except _Refused as exc:
                    log.warning("the broker refused the connection: %s; retrying in %.1f s", exc, delay)
                except (OSError, TimeoutError, MalformedPacket) as exc:
                    log.warning(
                        "cannot reconnect to %s:%d: %s; retrying in %.1f s",
                        opts.host,
                        opts.port,
                        str(exc) or type(exc).__name__,
                        delay,
                    )
                except Exception:
                    # Whatever else goes wrong, this task must go on reconnecting.
                    log.exception("reconnecting to %s:%d failed; retrying in %.1f s", opts.host, opts.port, delay)

    # -- packets from the broker --------------------------------------------------------

    def _on_packets(self, conn: Connection, packets: list[mqtt5.Packet], now: float) -> None:
        """Route one chunk's packets; the PUBLISH path is kept short."""
        inbound = self._inbound
        outbound = self._outbound
        put = self._handler or self.messages.put_nowait
        for packet in packets:
            if conn is not self._conn:
                self._before_connack(conn, packet)
            elif isinstance(packet, PublishPacket):
                message = inbound.on_publish(packet, now)
                if message is not None:
                    put(message)
            elif isinstance(packet, PubAckPacket):
                outbound.on_puback(packet)
            elif isinstance(packet, PubRecPacket):
                outbound.on_pubrec(packet)
            elif isinstance(packet, PubCompPacket):
                outbound.on_pubcomp(packet)
            elif isinstance(packet, PubRelPacket):
                inbound.on_pubrel(packet)
            elif isinstance(packet, PingRespPacket):
                pass  # data_received already noted that the broker is alive
            elif isinstance(packet, SubAckPacket):
                self._subscriptions.on_suback(packet)
            elif isinstance(packet, DisconnectPacket):
                self._on_disconnect(conn, packet)
                return
            else:
                raise MalformedPacket(f"unexpected {type(packet).__name__} from the broker")

    def _before_connack(self, conn: Connection, packet: mqtt5.Packet) -> None:
        if conn.handshake.done():
            return  # a refused connection on its way out (the broker may add a DISCONNECT)
        if not isinstance(packet, ConnAckPacket):
            raise MalformedPacket(f"expected CONNACK, got {type(packet).__name__}")
        if packet.reason_code.value < 0x80:
            # Adopted here, not in _establish, so packets in the same chunk see a connected session.
            self._adopt(conn, packet)
        conn.handshake.set_result(packet)

    def _adopt(self, conn: Connection, connack: ConnAckPacket) -> None:
        opts = self._options
        self._conn = conn
        self._first = False
        link = self.link
        link.connected = True
        link.connects += 1
        present = connack.session_present
        log.info("connected to %s:%d (session present: %s)", opts.host, opts.port, present)
        self._subscriptions.connected(present, conn.send)
        self._inbound.connected(present, conn.send)
        self._outbound.connected(connack, conn.send)
        keepalive = connack.server_keep_alive if connack.server_keep_alive is not None else opts.keepalive
        if keepalive > 0:
            interval = max(keepalive / 4, 0.05)
            self._keepalive = asyncio.get_running_loop().call_later(interval, self._tick, conn, keepalive, interval)

    def _on_lost(self, conn: Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self.link.connected = False
        self._subscriptions.disconnected()
        self._inbound.disconnected()
        given_up = self._outbound.disconnected(broker_ended=conn.broker_ended and not self._closing)
        for message in given_up:
            self.give_up(message, f"the broker ended the connection {MAX_STRIKES} times while it was unacknowledged")
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if not self._closing:
            # Same wording as the paho adapter: tests and operators grep for it.
            log.warning("disconnected from the broker (%s); reconnecting", exc or "connection closed")

    def _on_disconnect(self, conn: Connection, packet: DisconnectPacket) -> None:
        code = packet.reason_code
        log.warning(
            "the broker disconnected us: %s (reason code %#04x)%s",
            code.name,
            code.value,
            f": {packet.reason_str}" if packet.reason_str else "",
        )
        # Going down, a keepalive timeout, another client taking the session over: nothing sent was refused.
        conn.broker_ended = code.value not in NOT_REFUSALS
        conn.abort()

    def _tick(self, conn: Connection, keepalive: int, interval: float) -> None:
        """Keepalive: ping when quiet, drop the connection when the broker is silent too long."""
        if conn is not self._conn:
            return
        now = time.monotonic()
        silent = now - conn.last_rx
        if silent >= 1.5 * keepalive:
            log.warning(
                "no bytes from the broker for %.1f s (keepalive %d s); dropping the connection", silent, keepalive
            )
            conn.broker_ended = False  # silence is not a refusal of what was sent
            conn.abort()
            return
        half = keepalive / 2
        if (silent >= half or now - conn.last_tx >= half) and now - conn.last_ping >= half:
            conn.last_ping = now
            conn.send(_PINGREQ)
        self._keepalive = asyncio.get_running_loop().call_later(interval, self._tick, conn, keepalive, interval)

    # -- the gateway's side ------------------------------------------------------------

    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Subscribe and check every SUBACK reason code; the filters are renewed if the session is lost."""
        opts = self._options
        await self._subscriptions.subscribe(filters, qos, f"{opts.host}:{opts.port}")

    @property
    def broker_max_packet_size(self) -> int | None:
        """The broker's Maximum Packet Size (its CONNACK), ``None`` if it set none."""
        return self._outbound.broker_max_packet_size

    def publish(self, message: OutboundMessage, on_confirmed: Confirmation | None = None) -> None:
        """Send now (or queue while disconnected / beyond the broker's Receive Maximum); never blocks.

        Raises ``ValueError`` for a message the codec cannot encode (a wildcard topic, say).
        """
        self._outbound.publish(message, on_confirmed)

    def ack(self, message: InboundMessage) -> None:
        """Acknowledge a QoS 1 (PUBACK) or QoS 2 (PUBREC) message; acks leave in order of arrival."""
        self._inbound.ack(message.ack_token)

    @property
    def outbound_backlog(self) -> int:
        """QoS 1/2 publishes in flight or waiting for the window."""
        return self._outbound.outstanding

    async def drain(self, timeout: float) -> None:
        """Wait until queued QoS 1/2 publishes are acknowledged by the broker, up to ``timeout``."""
        await self._outbound.drain(timeout)

    async def close(self) -> None:
        """Send DISCONNECT (normal: no will) and close; stop reconnecting."""
        self._closing = True
        supervisor = self._supervisor
        self._supervisor = None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        conn = self._conn
        if conn is not None:
            conn.send(_DISCONNECT)
            conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(conn.closed)
