"""Outbound session state of the fast transport, without I/O: packet ids and the in-flight window.

:class:`OutboundSession` outlives connections. While connected it writes
through the ``send`` callable given to :meth:`OutboundSession.connected`; while
not, QoS 1/2 publishes wait in memory and QoS 0 ones are dropped (as paho does).

A QoS 1/2 publish takes a packet id only while fewer than the broker's Receive
Maximum (and ``max_inflight``) are unacknowledged; the rest wait, in order.
After a reconnect that resumes the session the unacknowledged ones are sent
again with DUP set (PUBREL for those already PUBREC'd); when the session is
gone they are published again as new messages (at least once). A publish larger
than the broker's Maximum Packet Size is refused with a log line, not sent.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import mqtt5
from mqtt5 import PublishPacket, PubRelPacket, QoS

from gateway.errors import TransportError
from gateway.transport.base import MAX_STRIKES, Confirmation, DrainWaiters, OutboundMessage
from gateway.transport.native.reader import is_codec_panic

log = logging.getLogger(__name__)

_QOS = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
MAX_PACKET_SIZE = 268_435_455 + 5  # largest Remaining Length plus the fixed header
_LARGE_PAYLOAD = 1 << 27
_PUBREL_UNKNOWN = mqtt5.PubRelReasonCode.PACKET_ID_NOT_FOUND


class _Outgoing:
    """An outbound QoS 1/2 publish holding a packet id until the broker completes it."""

    __slots__ = ("message", "qos", "released", "strikes")

    def __init__(self, message: OutboundMessage, qos: int, strikes: int = 0) -> None:
        self.message = message
        self.qos = qos
        self.released = False  # QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP
        self.strikes = strikes  # connections the broker ended while this was unacknowledged


def encode_publish(message: OutboundMessage, qos: int, packet_id: int | None, duplicate: bool = False) -> bytes:
    """The PUBLISH packet for ``message``; ``ValueError`` if the codec cannot encode it."""
    payload = message.payload
    if type(payload) is not bytes:
        payload = bytes(payload)  # the codec takes exactly bytes
    if len(payload) >= _LARGE_PAYLOAD and len(payload) + len(message.topic) >= MAX_PACKET_SIZE - 64:
        raise ValueError(f"a {len(payload)}-byte payload is over MQTT's 256 MiB packet limit")  # the codec panics
    try:
        return PublishPacket(
            message.topic,
            payload,
            qos=_QOS[qos],
            packet_id=packet_id,
            duplicate=duplicate,
            response_topic=message.response_topic or None,
            correlation_data=message.correlation_data,
            message_expiry_interval=message.message_expiry or None,
        ).write()
    except (OverflowError, IndexError) as exc:
        raise ValueError(f"cannot encode a publish to {message.topic!r}: {exc}") from None
    except BaseException as exc:
        if is_codec_panic(exc):
            raise ValueError(f"cannot encode a publish to {message.topic!r}: {exc}") from None
        raise


class OutboundSession:
    """Packet ids, in-flight and waiting QoS 1/2 publishes, across reconnects."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max(1, max_inflight)
        self._send: Callable[[bytes], None] | None = None
        self._window = self.max_inflight
        self._max_packet_size = MAX_PACKET_SIZE
        self._max_qos = 2
        self._next_id = 1
        self._reserved: set[int] = set()  # ids of SUBSCRIBEs in flight
        self._inflight: dict[int, _Outgoing] = {}  # insertion order is sending order
        self._waiting: collections.deque[OutboundMessage] = collections.deque()
        self._drainers = DrainWaiters()
        # id(message) → its confirmation; the message object lives in _inflight or _waiting meanwhile.
        self._confirmations: dict[int, Confirmation] = {}
        # id(message) → its strikes, for a message back in _waiting after the broker forgot the session: a
        # publish the broker keeps refusing is given up however the session ends (session_expiry 0 too).
        self._strikes: dict[int, int] = {}

    # -- connection lifecycle ---------------------------------------------------------

    def connected(self, connack: mqtt5.ConnAckPacket, send: Callable[[bytes], None]) -> None:
        """Adopt the broker's limits and resend (session present) or republish (session gone)."""
        self._send = send
        self._window = min(connack.receive_max, self.max_inflight)
        self._max_packet_size = connack.max_packet_size or MAX_PACKET_SIZE
        self._max_qos = connack.max_qos.value
        if connack.session_present:
            for packet_id, out in list(self._inflight.items()):
                if out.released:
                    send(PubRelPacket(packet_id).write())
                    continue
                try:
                    send(encode_publish(out.message, out.qos, packet_id, duplicate=True))
                except ValueError as exc:
                    log.warning("dropped an unacknowledged publish to %r: %s", out.message.topic, exc)
                    del self._inflight[packet_id]
                    self._confirm(out.message)
        else:
            # The broker forgot the session: what it had not acknowledged is published again as new
            # messages (at least once), keeping its strikes; a PUBREC'd QoS 2 message was already
            # taken over by the broker, so it is confirmed (only its PUBREL was owed).
            again = []
            for out in self._inflight.values():
                if out.released:
                    self._confirm(out.message)
                    continue
                if out.strikes:
                    self._strikes[id(out.message)] = out.strikes
                again.append(out.message)
            self._inflight.clear()
            self._waiting.extendleft(reversed(again))
        self._pump()

    def disconnected(self, broker_ended: bool = False) -> list[OutboundMessage]:
        """Stop writing; what is unacknowledged stays for the next connection.

        ``broker_ended``: the broker closed the connection for a reason of its own (see
        :data:`~gateway.transport.base.MAX_STRIKES`): each unacknowledged publish takes a strike,
        and those at the limit are given up (confirmed, so nothing waits for them) and returned.
        """
        self._send = None
        if not broker_ended:
            return []
        given_up = []
        for packet_id, out in list(self._inflight.items()):
            if out.released:
                continue  # the broker has the message: only its PUBREL is owed
            out.strikes += 1
            if out.strikes >= MAX_STRIKES:
                del self._inflight[packet_id]
                self._confirm(out.message)
                given_up.append(out.message)
        return given_up

    def publish(self, message: OutboundMessage, on_confirmed: Confirmation | None = None) -> None:
        """Send now, or queue a QoS 1/2 message until connected and within the window.

        ``on_confirmed`` is called when the broker acknowledged it, refused it, or it was
        dropped (QoS 0 at once): in every case nothing is left to send.
        """
        if on_confirmed is not None:
            earlier = self._confirmations.get(id(message))
            if earlier is None:
                self._confirmations[id(message)] = on_confirmed
            else:  # the same object published twice: confirm both
                self._confirmations[id(message)] = _both(earlier, on_confirmed)
        qos = message.qos
        if qos > self._max_qos:
            if qos > 2:
                raise ValueError(f"invalid QoS {qos} for a publish to {message.topic!r}")
            qos = self._max_qos  # the broker's Maximum QoS
        send = self._send
        if qos <= 0:
            if qos < 0:
                raise ValueError(f"invalid QoS {qos} for a publish to {message.topic!r}")
            if send is None:
                log.debug("dropped a QoS 0 publish to %r while disconnected", message.topic)
                self._confirm(message)
                return
            try:
                data = encode_publish(message, 0, None)
            except ValueError:
                self._confirmations.pop(id(message), None)
                raise
            if len(data) <= self._max_packet_size:
                send(data)
                self._confirm(message)
            else:
                self._refuse(data, message)
            return
        inflight = self._inflight
        if send is not None and len(inflight) < self._window and not self._waiting:
            packet_id = self._next_id
            if packet_id in inflight or packet_id in self._reserved:
                packet_id = self.allocate_id()
            else:
                self._next_id = packet_id + 1 if packet_id < 65535 else 1
            try:
                data = encode_publish(message, qos, packet_id)
            except ValueError:
                self._confirmations.pop(id(message), None)
                raise
            if len(data) <= self._max_packet_size:
                inflight[packet_id] = _Outgoing(message, qos)
                send(data)
            else:
                self._refuse(data, message)
            return
        # Validate now so a bad message fails in the caller, not later in _pump.
        try:
            data = encode_publish(message, qos, 1)
        except ValueError:
            self._confirmations.pop(id(message), None)
            raise
        if self._fits(data, message):
            self._waiting.append(message)

    def _fits(self, data: bytes, message: OutboundMessage) -> bool:
        if len(data) <= self._max_packet_size:
            return True
        self._refuse(data, message)
        return False

    def _confirm(self, message: OutboundMessage) -> None:
        if self._confirmations:
            confirmation = self._confirmations.pop(id(message), None)
            if confirmation is not None:
                confirmation()

    def _refuse(self, data: bytes, message: OutboundMessage) -> None:
        self._confirm(message)
        log.warning(
            "refused a publish to %r: %d bytes exceed the broker's Maximum Packet Size of %d",
            message.topic,
            len(data),
            self._max_packet_size,
        )

    def _pump(self) -> None:
        """Send waiting publishes while the window allows."""
        send = self._send
        waiting = self._waiting
        while send is not None and waiting and len(self._inflight) < self._window:
            message = waiting.popleft()
            strikes = self._strikes.pop(id(message), 0) if self._strikes else 0
            qos = min(message.qos, self._max_qos)
            packet_id = self.allocate_id() if qos else None
            try:
                data = encode_publish(message, qos, packet_id)
            except ValueError as exc:
                log.warning("dropped a publish to %r: %s", message.topic, exc)
                self._confirm(message)
                continue
            if not self._fits(data, message):
                continue
            if packet_id is not None:
                self._inflight[packet_id] = _Outgoing(message, qos, strikes)
            send(data)
        if self._drainers and self.settled:
            self._drainers.wake()

    def allocate_id(self) -> int:
        """A packet id in use neither by an in-flight publish nor by a pending SUBSCRIBE."""
        inflight = self._inflight
        reserved = self._reserved
        packet_id = self._next_id
        for _ in range(65535):
            if packet_id not in inflight and packet_id not in reserved:
                self._next_id = packet_id + 1 if packet_id < 65535 else 1
                return packet_id
            packet_id = packet_id + 1 if packet_id < 65535 else 1
        raise TransportError("no free MQTT packet id: 65535 packets are in flight")

    def reserve_id(self) -> int:
        """A packet id for a SUBSCRIBE, held until :meth:`release_id`."""
        packet_id = self.allocate_id()
        self._reserved.add(packet_id)
        return packet_id

    def release_id(self, packet_id: int) -> None:
        """Return a SUBSCRIBE's packet id."""
        self._reserved.discard(packet_id)

    def on_puback(self, packet: mqtt5.PubAckPacket) -> None:
        """QoS 1 completed: free the id and the window slot."""
        out = self._inflight.pop(packet.packet_id, None)
        if out is None:
            log.debug("PUBACK for unknown packet id %d", packet.packet_id)
            return
        if packet.reason_code.value >= 0x80:
            log.warning("the broker refused a publish to %r: %s", out.message.topic, packet.reason_code.name)
        self._confirm(out.message)
        self._pump()

    def on_pubrec(self, packet: mqtt5.PubRecPacket) -> None:
        """QoS 2 received by the broker: answer PUBREL (or free the slot if it refused)."""
        packet_id = packet.packet_id
        out = self._inflight.get(packet_id)
        send = self._send
        if out is None:
            if send is not None:
                send(PubRelPacket(packet_id, reason_code=_PUBREL_UNKNOWN).write())
            return
        if packet.reason_code.value >= 0x80:
            del self._inflight[packet_id]
            log.warning("the broker refused a publish to %r: %s", out.message.topic, packet.reason_code.name)
            self._confirm(out.message)
            self._pump()
            return
        out.released = True
        if send is not None:
            send(PubRelPacket(packet_id).write())

    def on_pubcomp(self, packet: mqtt5.PubCompPacket) -> None:
        """QoS 2 completed: free the id and the window slot."""
        out = self._inflight.pop(packet.packet_id, None)
        if out is not None:
            self._confirm(out.message)
            self._pump()

    @property
    def broker_max_packet_size(self) -> int | None:
        """The broker's Maximum Packet Size from its last CONNACK, ``None`` if it set none."""
        return None if self._max_packet_size == MAX_PACKET_SIZE else self._max_packet_size

    @property
    def settled(self) -> bool:
        """No QoS 1/2 publish is waiting or unacknowledged."""
        return not self._inflight and not self._waiting

    @property
    def outstanding(self) -> int:
        """QoS 1/2 publishes waiting or unacknowledged."""
        return len(self._inflight) + len(self._waiting)

    async def drain(self, timeout: float) -> None:
        """Wait until :attr:`settled`, at most ``timeout`` seconds."""
        await self._drainers.wait(timeout, lambda: self.outstanding)


def _both(first: Confirmation, second: Confirmation) -> Confirmation:
    def confirm() -> None:
        first()
        second()

    return confirm
