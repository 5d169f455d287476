"""Inbound session state of the fast transport, without I/O: ack tokens and acks in order of arrival.

Every inbound QoS 1/2 message gets a :class:`Delivery` as its ack token. Acks
go out only when the gateway calls ``ack`` and only in order of arrival (MQTT
requires it): an ack for a later message is held until every earlier one is
acked.

QoS 2: the gateway's ack sends PUBREC, because PUBREC is where the receiver
takes the message over from the broker (the delivery-guarantees work acks
after a durable enqueue). The broker's PUBREL is then answered with PUBCOMP at
once; a duplicate PUBLISH of a PUBREC'd id is answered with PUBREC again and
not delivered twice.

After a reconnect that resumes the session, the broker redelivers (DUP set) what
we had not acked. If the gateway still holds the first copy, the redelivery is
not handed over again: it takes the first copy's place in the ack order, and
the gateway's ack of that copy acknowledges it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import mqtt5
from mqtt5 import PubAckPacket, PubCompPacket, PubRecPacket

from gateway.transport.base import InboundMessage
from gateway.transport.native.reader import MalformedPacket

log = logging.getLogger(__name__)

_PUBCOMP_UNKNOWN = mqtt5.PubCompReasonCode.PACKET_ID_NOT_FOUND


class Delivery:
    """The ack token of one inbound QoS 1/2 message."""

    __slots__ = ("acked", "packet_id", "qos", "topic")

    def __init__(self, packet_id: int, qos: int, topic: str) -> None:
        self.packet_id = packet_id
        self.qos = qos
        self.topic = topic
        self.acked = False


class InboundSession:
    """Turns PUBLISH packets into :class:`InboundMessage` objects and sends their acks in order."""

    def __init__(self) -> None:
        self._send: Callable[[bytes], None] | None = None
        self._deliveries: collections.deque[Delivery] = collections.deque()  # handed over, ack not yet sent
        self._redelivery: dict[int, Delivery] = {}  # unacked when a connection dropped, by packet id
        self._pubrec_sent: set[int] = set()  # QoS 2 ids waiting for PUBREL

    def connected(self, session_present: bool, send: Callable[[bytes], None]) -> None:
        """Write through ``send``; forget the old session's ids when the broker did."""
        self._send = send
        if not session_present:
            # Acks of messages from the lost session have nothing left to acknowledge.
            self._redelivery.clear()
            self._pubrec_sent.clear()

    def disconnected(self) -> None:
        """Stop writing; keep unacked deliveries in case the broker redelivers them."""
        self._send = None
        for delivery in self._deliveries:
            self._redelivery[delivery.packet_id] = delivery
        self._deliveries.clear()

    @property
    def unacked(self) -> int:
        """Messages of this connection whose ack has not been sent."""
        return len(self._deliveries)

    def on_publish(self, packet: mqtt5.PublishPacket, received_at: float) -> InboundMessage | None:
        """The message to hand to the gateway, or ``None`` for a duplicate it already has."""
        qos = packet.qos.value
        token: Delivery | None = None
        if qos:
            packet_id = packet.packet_id
            if packet_id is None:  # the codec refuses this; the check is for the type checker
                raise MalformedPacket("a QoS 1/2 PUBLISH without a packet id")
            if qos == 2 and packet_id in self._pubrec_sent:
                self._write(PubRecPacket(packet_id).write())  # our PUBREC was lost: say it again
                return None
            if self._redelivery and packet.duplicate:
                earlier = self._redelivery.pop(packet_id, None)
                if earlier is not None and earlier.qos == qos and earlier.topic == packet.topic:
                    self._deliveries.append(earlier)
                    if earlier.acked:
                        self._flush()
                    return None
            token = Delivery(packet_id, qos, packet.topic)
            self._deliveries.append(token)
        # Positional: keyword arguments cost a microsecond more per message on the frozen dataclass.
        return InboundMessage(
            packet.topic,
            packet.payload,
            qos,
            received_at,
            packet.response_topic,
            packet.correlation_data,
            packet.message_expiry_interval,
            packet.retain,
            token,
        )

    def ack(self, token: object) -> None:
        """Mark a delivery acknowledged; send every ack that is now first in line."""
        if not isinstance(token, Delivery) or token.acked:
            return
        token.acked = True
        deliveries = self._deliveries
        if deliveries and deliveries[0].acked:
            self._flush()

    def _flush(self) -> None:
        deliveries = self._deliveries
        send = self._send
        if send is None:
            return
        while deliveries and deliveries[0].acked:
            delivery = deliveries.popleft()
            if delivery.qos == 1:
                send(PubAckPacket(delivery.packet_id).write())
            else:
                self._pubrec_sent.add(delivery.packet_id)
                send(PubRecPacket(delivery.packet_id).write())

    def on_pubrel(self, packet: mqtt5.PubRelPacket) -> None:
        """The broker released a QoS 2 message we PUBREC'd: complete it."""
        packet_id = packet.packet_id
        if packet_id in self._pubrec_sent:
            self._pubrec_sent.discard(packet_id)
            self._write(PubCompPacket(packet_id).write())
        else:
            self._write(PubCompPacket(packet_id, reason_code=_PUBCOMP_UNKNOWN).write())

    def _write(self, data: bytes) -> None:
        if self._send is not None:
            self._send(data)
