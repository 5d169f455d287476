"""Envelopes and replies, checked byte for byte against the golden vectors."""

from __future__ import annotations

import time

import pytest

from gateway import codec
from gateway.errors import BadPayload, CallTimeout, InvalidArguments, NotFound
from gateway.protocol import ReplyAddress, error_reply, parse_request, result_reply
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
