"""MQTT 5 packets for the benchmark: the only module of ``benchmarks`` that imports the ``mqtt5`` codec.

The load generator and the null responder speak MQTT over plain asyncio
sockets; this module turns bytes into packets (:class:`FrameReader`) and builds
the few packets they send. The packet classes are re-exported under the same
names so callers can tell packets apart with ``isinstance`` without importing
``mqtt5`` themselves.
"""

from __future__ import annotations

import mqtt5
from mqtt5 import ConnAckPacket, Packet, PubAckPacket, PublishPacket, SubAckPacket

__all__ = [
    "ConnAckPacket",
    "FrameReader",
    "Packet",
    "ProtocolViolation",
    "PubAckPacket",
    "PublishPacket",
    "RequestTemplate",
    "SubAckPacket",
    "ack_failed",
    "connect",
    "connect_ok",
    "disconnect",
    "puback",
    "publish",
    "subscribe",
]

MAX_PACKET = 1 << 20  # nothing in the benchmark comes near; larger means a broken stream
NO_MATCHING_SUBSCRIBERS = 0x10


class ProtocolViolation(Exception):
    """The byte stream is not valid MQTT 5 (or a packet is larger than :data:`MAX_PACKET`)."""


def connect(client_id: str, *, clean_start: bool = True, session_expiry: int = 0) -> bytes:
    """A CONNECT without keep-alive: benchmark connections live for minutes and are always busy or closed."""
    return mqtt5.ConnectPacket(
        client_id, clean_start=clean_start, keep_alive=0, session_expiry_interval=session_expiry
    ).write()


def subscribe(packet_id: int, pattern: str, qos: int) -> bytes:
    """A SUBSCRIBE to one topic filter with maximum QoS ``qos``."""
    return mqtt5.SubscribePacket(packet_id, [mqtt5.TopicFilter(pattern, max_qos=mqtt5.QoS(qos))]).write()


def publish(
    topic: str,
    payload: bytes,
    qos: int,
    packet_id: int | None = None,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> bytes:
    """A PUBLISH; ``packet_id`` is required for QoS 1."""
    return mqtt5.PublishPacket(
        topic,
        payload,
        qos=mqtt5.QoS(qos),
        packet_id=packet_id,
        response_topic=response_topic,
        correlation_data=correlation_data,
    ).write()


CORRELATION_BYTES = 8


class RequestTemplate:
    """Request PUBLISH packets of one device that differ only in packet id, correlation data and payload.

    The packet is encoded once by the codec with placeholders and then spliced,
    which costs a fraction of a full encode per request. The Correlation Data
    must be 8 bytes and every payload ``payload_size`` bytes long.
    """

    __slots__ = ("_head", "_middle", "payload_size", "qos")

    def __init__(self, topic: str, response_topic: str, qos: int, payload_size: int) -> None:
        self.qos = qos
        self.payload_size = payload_size
        correlation = bytes(CORRELATION_BYTES)
        sample = publish(topic, bytes(payload_size), qos, 1 if qos else None, response_topic, correlation)
        tail = CORRELATION_BYTES + payload_size
        # The codec writes Correlation Data (property 9) last, right before the payload.
        if sample[-tail - 3 : -tail] != b"\x09\x00\x08":
            raise ProtocolViolation("unexpected property order in the codec's PUBLISH encoding")
        head = sample[:-tail]
        if qos:
            length_bytes = next(i for i in range(1, 5) if head[i] < 0x80)  # remaining-length varint
            at = 1 + length_bytes + 2 + len(topic.encode())  # the packet id follows the topic name
            self._head, self._middle = head[:at], head[at + 2 :]
        else:
            self._head, self._middle = head, b""

    def build(self, packet_id: int, correlation: bytes, payload: bytes) -> bytes:
        """The PUBLISH packet (``packet_id`` is ignored at QoS 0)."""
        if self.qos:
            return b"".join((self._head, packet_id.to_bytes(2, "big"), self._middle, correlation, payload))
        return self._head + correlation + payload


def puback(packet_id: int) -> bytes:
    """A successful PUBACK: the shortest form, four bytes."""
    return bytes((0x40, 0x02, packet_id >> 8, packet_id & 0xFF))


def disconnect() -> bytes:
    """A normal DISCONNECT."""
    return mqtt5.DisconnectPacket().write()


def connect_ok(packet: ConnAckPacket) -> bool:
    """Whether a CONNACK accepted the connection."""
    return int(packet.reason_code) == 0


def ack_failed(packet: PubAckPacket) -> bool:
    """Whether a PUBACK reports a failure, counting "no matching subscribers" (nobody will answer)."""
    code = int(packet.reason_code)
    return code >= 0x80 or code == NO_MATCHING_SUBSCRIBERS


def frame_end(buf: bytes, start: int) -> int | None:
    """End offset of the packet starting at ``start``, or ``None`` while it is incomplete."""
    length = 0
    shift = 0
    pos = start + 1
    size = len(buf)
    if pos < size and buf[pos] < 0x80:  # fast path: one-byte remaining length
        end = pos + 1 + buf[pos]
        return end if end <= size else None
    for _ in range(4):
        if pos >= size:
            return None
        byte = buf[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if length > MAX_PACKET:
                raise ProtocolViolation(f"packet of {length} bytes is larger than {MAX_PACKET}")
            end = pos + length
            return end if end <= size else None
        shift += 7
    raise ProtocolViolation("malformed remaining length")


class FrameReader:
    """Splits a TCP byte stream into MQTT 5 packets, keeping an incomplete tail for the next chunk."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[Packet]:
        """The complete packets in ``data`` (after any tail kept from the previous call)."""
        buf = self._tail + data if self._tail else data
        view = memoryview(buf)
        packets: list[Packet] = []
        pos = 0
        size = len(buf)
        while pos < size:
            end = frame_end(buf, pos)
            if end is None:
                break
            try:
                packet, _ = mqtt5.read(view[pos:end])
            except (ValueError, IndexError) as exc:
                raise ProtocolViolation(f"undecodable packet: {exc}") from exc
            packets.append(packet)
            pos = end
        self._tail = bytes(buf[pos:]) if pos < size else b""
        return packets
