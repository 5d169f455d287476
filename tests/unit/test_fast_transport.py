"""The fast transport without a broker: the packet reader, the session state, write batching."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import mqtt5
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt5 import QoS

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.transport.base import InboundMessage, OutboundMessage
from gateway.transport.native.connection import Connection
from gateway.transport.native.inbound import InboundSession
from gateway.transport.native.outbound import OutboundSession
from gateway.transport.native.reader import MalformedPacket, PacketReader
from gateway.transport.native.transport import NativeTransport
from gateway.transport.options import ConnectOptions, inbound_packet_limit
from tests.support.timeouts import scaled

QOS = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)


def members(enum: Any) -> list[Any]:
    """The members of an mqtt5 enum (they are not iterable)."""
    return [getattr(enum, name) for name in dir(enum) if name.isupper()]


# -- strategies: packets a broker sends ---------------------------------------------------

topics = st.text(
    st.characters(min_codepoint=0x20, exclude_categories=["Cs"], exclude_characters="+#"), min_size=1, max_size=40
)
packet_ids = st.integers(1, 65535)
payloads = st.one_of(st.binary(max_size=300), st.integers(16_000, 70_000).map(lambda n: b"\x07" * n))


@st.composite
def publishes(draw: st.DrawFn) -> mqtt5.PublishPacket:
    """PUBLISH packets at any QoS with the properties the gateway reads."""
    qos = draw(st.integers(0, 2))
    return mqtt5.PublishPacket(
        draw(topics),
        draw(payloads),
        qos=QOS[qos],
        retain=draw(st.booleans()),
        packet_id=draw(packet_ids) if qos else None,
        duplicate=draw(st.booleans()) if qos else False,
        message_expiry_interval=draw(st.none() | st.integers(0, 2**32 - 1)),
        response_topic=draw(st.none() | topics),
        correlation_data=draw(st.none() | st.binary(max_size=40)),
        user_properties=draw(st.lists(st.tuples(topics, topics), max_size=2)),
    )


broker_packets = st.one_of(
    publishes(),
    st.builds(mqtt5.PubAckPacket, packet_ids, reason_code=st.sampled_from(members(mqtt5.PubAckReasonCode))),
    st.builds(mqtt5.PubRecPacket, packet_ids, reason_code=st.sampled_from(members(mqtt5.PubRecReasonCode))),
    st.builds(mqtt5.PubRelPacket, packet_ids),
    st.builds(mqtt5.PubCompPacket, packet_ids, reason_str=st.none() | topics),
    st.builds(mqtt5.SubAckPacket, packet_ids, st.lists(st.sampled_from(members(mqtt5.SubAckReasonCode)), min_size=1)),
    st.builds(
        mqtt5.ConnAckPacket,
        session_present=st.booleans(),
        receive_max=st.integers(1, 65535),
        max_packet_size=st.none() | st.integers(100, 2**28),
        server_keep_alive=st.none() | st.integers(0, 65535),
    ),
    st.just(mqtt5.PingRespPacket()),
    st.builds(mqtt5.DisconnectPacket, reason_code=st.sampled_from(members(mqtt5.DisconnectReasonCode))),
)


# -- the reader ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(packets=st.lists(broker_packets, min_size=1, max_size=12), data=st.data())
def test_reader_decodes_any_split_of_a_packet_stream(packets: list[mqtt5.Packet], data: st.DataObject) -> None:
    stream = b"".join(packet.write() for packet in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    reader = PacketReader()
    decoded: list[mqtt5.Packet] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        decoded += reader.feed(stream[start:cut])
        start = cut
    assert decoded == packets
    assert reader.buffered == 0


# mqtt5 0.8 prints the UTF-8 error as "unraisable" before panicking; the panic itself is what is tested.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=500, deadline=None)
@given(prefix=st.lists(broker_packets, max_size=3), garbage=st.binary(min_size=1, max_size=200))
def test_reader_reports_garbage_only_as_malformed_packet(prefix: list[mqtt5.Packet], garbage: bytes) -> None:
    reader = PacketReader()
    stream = b"".join(packet.write() for packet in prefix) + garbage
    try:
        for i in range(0, len(stream), 7):
            reader.feed(stream[i : i + 7])
    except MalformedPacket:
        pass  # the connection resets on this, and on nothing else


# As above: mqtt5 prints the UTF-8 error as "unraisable" before panicking; the panic itself is what is tested.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_topic_that_is_not_utf8_is_malformed_not_a_crash() -> None:
    # mqtt5 panics (a BaseException) on it; the reader turns that into the one error type.
    bad = mqtt5.PublishPacket("ab", b"x").write().replace(b"ab", b"\xff\xfe")
    with pytest.raises(MalformedPacket):
        PacketReader().feed(bad)


def test_a_packet_over_the_announced_maximum_is_refused_before_it_is_whole() -> None:
    reader = PacketReader(max_packet_size=4096)
    big = mqtt5.PublishPacket("devices/a/add", b"x" * 100_000).write()
    assert reader.feed(big[:2048]) == [] and reader.buffered == 2048  # fine so far
    with pytest.raises(MalformedPacket, match="over our Maximum Packet Size of 4096"):
        reader.feed(big[2048:6000])
    assert reader.buffered == 0  # nothing of it is kept


def test_the_announced_maximum_follows_the_payload_limit() -> None:
    small = Settings(limits={"max_payload_bytes": 1024})
    large = Settings(limits={"max_payload_bytes": 2 * 1024 * 1024})
    assert inbound_packet_limit(large) - inbound_packet_limit(small) == 2 * 1024 * 1024 - 1024
    # Room for a request at every limit: payload, topic, Response Topic and Correlation Data all full.
    limits = small.limits
    full = mqtt5.PublishPacket(
        "d" * limits.max_topic_bytes,
        b"p" * limits.max_payload_bytes,
        qos=QoS.AT_LEAST_ONCE,
        packet_id=1,
        response_topic="r" * 65_535,
        correlation_data=b"c" * limits.max_correlation_bytes,
    ).write()
    assert len(full) <= inbound_packet_limit(small) < len(full) + 8 * 1024
    assert ConnectOptions.from_settings(small).max_packet_size == inbound_packet_limit(small)


# -- the connection: garbage resets, writes are batched -----------------------------------


class FakeSocketTransport(asyncio.Transport):
    """Records writes; remembers abort/close."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.aborted = False
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted or self.closed

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


def test_garbage_from_the_broker_aborts_the_connection_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> FakeSocketTransport:
        seen: list[mqtt5.Packet] = []
        conn = Connection(lambda c, packets, now: seen.extend(packets), lambda c, exc: None)
        transport = FakeSocketTransport()
        conn.connection_made(transport)
        conn.data_received(mqtt5.PingRespPacket().write() + b"\xf0\xff\xff\xff\xff\xff")
        return transport

    with caplog.at_level(logging.WARNING):
        transport = asyncio.run(scenario())
    assert transport.aborted
    assert "protocol error from the broker" in caplog.text


def test_a_failure_handling_packets_resets_the_connection_instead_of_escaping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(conn: Connection, packets: list[mqtt5.Packet], now: float) -> None:
        raise KeyError("a bug")

    async def scenario() -> FakeSocketTransport:
        conn = Connection(broken, lambda c, exc: None)
        transport = FakeSocketTransport()
        conn.connection_made(transport)
        conn.data_received(mqtt5.PingRespPacket().write())
        return transport

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()).aborted
    assert "resetting the connection" in caplog.text


def test_writes_of_one_loop_turn_leave_in_one_write() -> None:
    async def scenario() -> FakeSocketTransport:
        conn = Connection(lambda c, packets, now: None, lambda c, exc: None)
        transport = FakeSocketTransport()
        conn.connection_made(transport)
        for packet_id in (1, 2, 3):
            conn.send(mqtt5.PubAckPacket(packet_id).write())
        assert transport.writes == []  # nothing before the loop turn ends
        await asyncio.sleep(0)
        conn.send(mqtt5.PubAckPacket(4).write())
        await asyncio.sleep(0)
        return transport

    transport = asyncio.run(scenario())
    assert len(transport.writes) == 2
    assert PacketReader().feed(transport.writes[0]) == [mqtt5.PubAckPacket(i) for i in (1, 2, 3)]


# -- inbound: acks in order of arrival ----------------------------------------------------


def decode(sent: list[bytes]) -> list[mqtt5.Packet]:
    """Decode and forget what a session wrote."""
    packets = PacketReader().feed(b"".join(sent))
    sent.clear()
    return packets


def packet_id(packet: mqtt5.Packet) -> int:
    """The packet id of an ack or a QoS 1/2 publish."""
    value = getattr(packet, "packet_id", None)
    assert isinstance(value, int)
    return value


def publish_of(packet: mqtt5.Packet) -> mqtt5.PublishPacket:
    """``packet``, checked to be a PUBLISH."""
    assert isinstance(packet, mqtt5.PublishPacket)
    return packet


def inbound_publish(packet_id: int, qos: int = 1, topic: str = "t", duplicate: bool = False) -> mqtt5.PublishPacket:
    """A QoS 1/2 PUBLISH as the broker delivers it."""
    return mqtt5.PublishPacket(topic, b"p", qos=QOS[qos], packet_id=packet_id, duplicate=duplicate)


def deliver(session: InboundSession, packet: mqtt5.PublishPacket) -> InboundMessage:
    """Hand ``packet`` to the session; it must become a message."""
    message = session.on_publish(packet, 0.0)
    assert message is not None
    return message


@settings(max_examples=200, deadline=None)
@given(qos=st.lists(st.integers(1, 2), min_size=1, max_size=30), data=st.data())
def test_acks_leave_in_order_of_arrival_whatever_the_order_of_ack_calls(qos: list[int], data: st.DataObject) -> None:
    sent: list[bytes] = []
    session = InboundSession()
    session.connected(False, sent.append)
    messages = [deliver(session, inbound_publish(i + 1, q)) for i, q in enumerate(qos)]
    order = data.draw(st.permutations(range(len(messages))))
    acked_ids: list[int] = []
    done = set()
    for index in order:
        session.ack(messages[index].ack_token)
        done.add(index)
        acked_ids += [packet_id(packet) for packet in decode(sent)]
        first_unacked = next((i for i in range(len(messages)) if i not in done), len(messages))
        assert acked_ids == list(range(1, first_unacked + 1))
    session.ack(messages[0].ack_token)  # a second ack is a no-op
    assert decode(sent) == []


def test_qos1_is_acked_with_puback_and_qos2_with_pubrec_then_pubcomp() -> None:
    sent: list[bytes] = []
    session = InboundSession()
    session.connected(False, sent.append)
    one, two = deliver(session, inbound_publish(1, 1)), deliver(session, inbound_publish(2, 2))
    assert decode(sent) == []  # nothing until the gateway acks
    session.ack(one.ack_token)
    session.ack(two.ack_token)
    assert decode(sent) == [mqtt5.PubAckPacket(1), mqtt5.PubRecPacket(2)]
    assert session.on_publish(inbound_publish(2, 2, duplicate=True), 0.0) is None  # PUBREC'd: not delivered again
    assert decode(sent) == [mqtt5.PubRecPacket(2)]
    session.on_pubrel(mqtt5.PubRelPacket(2))
    assert decode(sent) == [mqtt5.PubCompPacket(2)]


def test_a_redelivery_after_resume_is_bound_to_the_copy_the_gateway_holds() -> None:
    sent: list[bytes] = []
    session = InboundSession()
    session.connected(False, sent.append)
    first, second = deliver(session, inbound_publish(1)), deliver(session, inbound_publish(2))
    session.ack(second.ack_token)  # held: 1 is not acked
    session.disconnected()
    session.connected(True, sent.append)
    assert session.on_publish(inbound_publish(1, duplicate=True), 0.0) is None
    assert session.on_publish(inbound_publish(2, duplicate=True), 0.0) is None
    assert decode(sent) == []
    session.ack(first.ack_token)
    assert decode(sent) == [mqtt5.PubAckPacket(1), mqtt5.PubAckPacket(2)]


def test_after_a_lost_session_redeliveries_are_new_messages() -> None:
    sent: list[bytes] = []
    session = InboundSession()
    session.connected(False, sent.append)
    old = deliver(session, inbound_publish(1))
    session.disconnected()
    session.connected(False, sent.append)
    new = deliver(session, inbound_publish(1, duplicate=True))
    session.ack(old.ack_token)  # belongs to the lost session: nothing to send
    assert decode(sent) == []
    session.ack(new.ack_token)
    assert decode(sent) == [mqtt5.PubAckPacket(1)]


# -- outbound: Receive Maximum, retransmission, Maximum Packet Size ------------------------


def connack(present: bool = False, receive_max: int = 65535, max_packet_size: int | None = None) -> mqtt5.ConnAckPacket:
    """A successful CONNACK with the broker limits the session adopts."""
    return mqtt5.ConnAckPacket(session_present=present, receive_max=receive_max, max_packet_size=max_packet_size)


def test_outbound_publishes_beyond_receive_maximum_wait_for_a_free_slot() -> None:
    sent: list[bytes] = []
    session = OutboundSession(max_inflight=100)
    session.connected(connack(receive_max=2), sent.append)
    for n in range(5):
        session.publish(OutboundMessage(f"r/{n}", b"x", qos=1))
    first = [publish_of(p) for p in decode(sent)]
    assert [p.topic for p in first] == ["r/0", "r/1"]
    session.on_puback(mqtt5.PubAckPacket(packet_id(first[0])))
    assert [publish_of(p).topic for p in decode(sent)] == ["r/2"]
    assert session.outstanding == 4


def test_unacknowledged_publishes_are_resent_with_dup_when_the_session_resumes() -> None:
    sent: list[bytes] = []
    session = OutboundSession(max_inflight=100)
    session.connected(connack(), sent.append)
    session.publish(OutboundMessage("r/1", b"x", qos=1))
    session.publish(OutboundMessage("r/2", b"x", qos=2))
    session.publish(OutboundMessage("r/3", b"x", qos=2))
    one, two, three = decode(sent)
    session.on_pubrec(mqtt5.PubRecPacket(packet_id(three)))
    assert decode(sent) == [mqtt5.PubRelPacket(packet_id(three))]
    session.disconnected()
    session.publish(OutboundMessage("r/4", b"x", qos=1))  # waits while disconnected
    session.connected(connack(present=True), sent.append)
    again = decode(sent)
    assert [(type(p).__name__, getattr(p, "duplicate", None)) for p in again] == [
        ("PublishPacket", True),
        ("PublishPacket", True),
        ("PubRelPacket", None),
        ("PublishPacket", False),
    ]
    assert [packet_id(p) for p in again[:3]] == [packet_id(one), packet_id(two), packet_id(three)]


def test_unacknowledged_publishes_are_published_anew_when_the_session_is_lost() -> None:
    sent: list[bytes] = []
    session = OutboundSession(max_inflight=100)
    session.connected(connack(), sent.append)
    session.publish(OutboundMessage("r/1", b"x", qos=1))
    decode(sent)
    session.disconnected()
    session.connected(connack(present=False), sent.append)
    (again,) = decode(sent)
    assert isinstance(again, mqtt5.PublishPacket)
    assert again.topic == "r/1"
    assert not again.duplicate


def test_a_publish_over_the_maximum_packet_size_is_refused_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[bytes] = []
    session = OutboundSession(max_inflight=100)
    session.connected(connack(max_packet_size=100), sent.append)
    with caplog.at_level(logging.WARNING):
        session.publish(OutboundMessage("r/big", b"x" * 200, qos=1))
        session.publish(OutboundMessage("r/big", b"x" * 200, qos=0))
    assert sent == []
    assert session.settled
    assert caplog.text.count("Maximum Packet Size of 100") == 2


def test_an_unencodable_publish_raises_value_error() -> None:
    session = OutboundSession(max_inflight=100)
    sent: list[bytes] = []
    session.connected(connack(), sent.append)
    with pytest.raises(ValueError):
        session.publish(OutboundMessage("a/+/b", b"x", qos=1))
    assert session.settled


def test_drain_returns_once_everything_is_acknowledged() -> None:
    async def scenario() -> None:
        sent: list[bytes] = []
        session = OutboundSession(max_inflight=100)
        session.connected(connack(), sent.append)
        session.publish(OutboundMessage("r/1", b"x", qos=1))
        (packet,) = decode(sent)
        asyncio.get_running_loop().call_soon(session.on_puback, mqtt5.PubAckPacket(packet_id(packet)))
        await asyncio.wait_for(session.drain(scaled(20.0)), scaled(10.0))  # returns at the PUBACK, not its timeout
        assert session.settled

    asyncio.run(scenario())


def test_mqtt_311_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="paho"):
        NativeTransport(ConnectOptions(host="127.0.0.1", port=1883, client_id="x", mqtt_version=4))
