"""Envelopes and replies, checked byte for byte against the golden vectors."""

from __future__ import annotations

import time

import pytest

from gateway import codec
from gateway.errors import BadPayload, CallTimeout, InvalidArguments, NotFound
from gateway.protocol import ReplyAddress, error_reply, fallback_reply_address, parse_request, result_reply
from gateway.transport.base import InboundMessage
from tests.support.golden import vectors

VECTORS = vectors()


def message(payload: bytes, *, response_topic: str | None = None, corr: bytes | None = None) -> InboundMessage:
    return InboundMessage("devices/d1/add", payload, 1, time.monotonic(), response_topic, corr)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_codec_matches_every_vector(name: str) -> None:
    value, wire = VECTORS[name]
    assert codec.encode(value) == wire
    assert codec.decode(wire, len(wire)) == value


def test_mqtt5_request_and_reply() -> None:
    value, wire = VECTORS["request_add"]
    request = parse_request(message(wire, response_topic="r/1", corr=b"k"), "d1", "roost/replies", 1000)
    assert request.args == value
    assert request.reply == ReplyAddress("r/1", 1, b"k", None)
    assert request.reply is not None
    reply = result_reply(request.reply, codec.encode(3))
    assert reply.payload == VECTORS["reply_result"][1]
    assert (reply.topic, reply.qos, reply.correlation_data) == ("r/1", 1, b"k")


def test_mqtt311_request_gets_default_reply_topic_and_cid() -> None:
    _, wire = VECTORS["request_311_str_cid"]
    request = parse_request(message(wire), "d1", "roost/replies", 1000)
    assert request.args == {"a": 1, "b": 2}
    assert request.reply == ReplyAddress("roost/replies/d1", 1, None, "c-1")
    assert request.reply is not None
    assert result_reply(request.reply, codec.encode(3)).payload == VECTORS["reply_result_311"][1]
    timeout = error_reply(ReplyAddress("t", 1, None, "c-9"), CallTimeout("function did not finish within 2 s"))
    assert timeout.payload == VECTORS["reply_error_311"][1]


def test_mqtt311_bin_cid_and_explicit_reply_topic() -> None:
    _, wire = VECTORS["request_311_bin_cid_rt"]
    request = parse_request(message(wire), "d1", "roost/replies", 1000)
    assert request.reply == ReplyAddress("pi/7/inbox", 1, None, b"\x01\x02\x03\x04")
    assert request.reply is not None
    assert result_reply(request.reply, codec.encode(42)).payload == VECTORS["reply_result_311_bin"][1]


def test_event_has_no_reply_address() -> None:
    request = parse_request(message(VECTORS["event_temperature"][1]), "d1", "roost/replies", 1000)
    assert request.reply is None
    assert request.args == {"celsius": 35.5}


def test_error_replies_match_vectors() -> None:
    address = ReplyAddress("r", 0)
    assert (
        error_reply(address, NotFound("no function is registered at 'devices/d1/nope'")).payload
        == VECTORS["reply_error_not_found"][1]
    )
    details = [{"loc": ["b"], "msg": "Input should be a valid integer", "type": "int_type"}]
    error = InvalidArguments("invalid arguments: b: Input should be a valid integer", details)
    assert error_reply(address, error).payload == VECTORS["reply_error_invalid_arguments"][1]


def test_bad_envelope_fields() -> None:
    with pytest.raises(BadPayload, match=r"\$cid must be bin or str, got int"):
        parse_request(message(codec.encode({"$cid": 5})), "d1", "p", 1000)
    with pytest.raises(BadPayload, match=r"\$rt must be a non-empty str"):
        parse_request(message(codec.encode({"$cid": "x", "$rt": ""})), "d1", "p", 1000)


def test_a_reply_topic_the_broker_refuses_is_bad_payload_and_the_error_goes_to_the_default_topic() -> None:
    request = message(codec.encode({"$cid": "c", "$rt": "roost/replies/d1/\x01", "a": 1}))
    with pytest.raises(BadPayload, match=r"^\$rt is not a topic the broker accepts: it holds U\+0001"):
        parse_request(request, "d1", "roost/replies", 1000)
    deep = message(codec.encode({"$cid": "c", "$rt": "roost/replies/d1/" + "/".join("x" * 40)}))
    with pytest.raises(BadPayload, match=r"it has 43 levels, over the limit of 32$"):
        parse_request(deep, "d1", "roost/replies", 1000, max_topic_levels=32)
    limits = codec.PayloadLimits(max_bytes=1000)
    fallback = fallback_reply_address(request, "d1", "roost/replies", limits)
    assert fallback == ReplyAddress("roost/replies/d1", 1, None, "c")  # never the $rt that was wrong


def test_the_fallback_reply_address_is_the_response_topic_or_nowhere() -> None:
    limits = codec.PayloadLimits(max_bytes=1000)
    with_property = message(b"\xc1", response_topic="r/1", corr=b"k")  # not even msgpack
    assert fallback_reply_address(with_property, "d1", "p", limits) == ReplyAddress("r/1", 1, b"k")
    assert fallback_reply_address(message(b"\xc1"), "d1", "p", limits) is None  # undecodable: no $cid to echo
    assert fallback_reply_address(message(codec.encode({"$cid": 5})), "d1", "p", limits) is None
    assert fallback_reply_address(message(codec.encode({"$cid": "c"})), None, "p", limits) is None  # no device


def test_correlation_data_or_a_cid_over_the_limit_is_bad_payload() -> None:
    limits = codec.PayloadLimits(max_bytes=1000, max_correlation_bytes=16)
    wire = codec.encode({"a": 1})
    at_limit = parse_request(message(wire, response_topic="r/1", corr=b"k" * 16), "d1", "p", limits)
    assert at_limit.reply == ReplyAddress("r/1", 1, b"k" * 16)
    with pytest.raises(BadPayload, match=r"^Correlation Data is 17 bytes, over the limit of 16$"):
        parse_request(message(wire, response_topic="r/1", corr=b"k" * 17), "d1", "p", limits)
    assert parse_request(message(codec.encode({"$cid": "c" * 16})), "d1", "p", limits).reply == ReplyAddress(
        "p/d1", 1, None, "c" * 16
    )
    with pytest.raises(BadPayload, match=r"^\$cid is 17 bytes, over the limit of 16$"):
        parse_request(message(codec.encode({"$cid": b"c" * 17})), "d1", "p", limits)
    with pytest.raises(BadPayload, match=r"^\$cid is 18 bytes, over the limit of 16$"):  # counted in UTF-8
        parse_request(message(codec.encode({"$cid": "é" * 9})), "d1", "p", limits)
    # The default limit (limits.max_correlation_bytes): 1 KiB.
    with pytest.raises(BadPayload, match=r"^Correlation Data is 61440 bytes, over the limit of 1024$"):
        parse_request(message(wire, response_topic="r/1", corr=bytes(60 * 1024)), "d1", "p", 1000)
    # The error reply goes without the id it refuses (MQTT 5: no Correlation Data; 3.1.1: no $cid).
    long_corr = message(wire, response_topic="r/1", corr=b"k" * 17)
    assert fallback_reply_address(long_corr, "d1", "p", limits) == ReplyAddress("r/1", 1, None, None)
    long_cid = message(codec.encode({"$cid": b"c" * 17}))
    assert fallback_reply_address(long_cid, "d1", "p", limits) == ReplyAddress("p/d1", 1, None, None)
    short = message(wire, response_topic="r/1", corr=b"k")
    assert fallback_reply_address(short, "d1", "p", limits) == ReplyAddress("r/1", 1, b"k")
