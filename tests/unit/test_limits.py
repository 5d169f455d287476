"""Payload, argument and topic limits: each refused with a clear error, none allocating from a declared length."""

from __future__ import annotations

import time

import msgpack
import pytest

from gateway import codec, protocol
from gateway.codec import PayloadLimits
from gateway.errors import BadPayload, InvalidArguments
from gateway.transport.base import InboundMessage


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def message(payload: bytes, topic: str = "devices/d1/add") -> InboundMessage:
    return InboundMessage(topic, payload, 1, time.monotonic(), "r/1", b"k")


def test_nesting_deeper_than_the_limit_is_bad_payload() -> None:
    assert codec.decode(msgpack.packb(nested(32)), 1000, max_depth=32) == nested(32)
    with pytest.raises(BadPayload, match="more than 32 deep"):
        codec.decode(msgpack.packb(nested(33)), 1000, max_depth=32)


def test_very_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(BadPayload):
        codec.decode(b"\x91" * 100_000 + b"\x01", 200_000)


def test_containers_over_the_item_limit_are_bad_payload() -> None:
    with pytest.raises(BadPayload, match="more than 100 items"):
        codec.decode(msgpack.packb(list(range(101))), 10_000, max_items=100)
    with pytest.raises(BadPayload, match="more than 100 items"):
        codec.decode(msgpack.packb({str(n): n for n in range(101)}), 10_000, max_items=100)


def test_a_declared_length_larger_than_the_payload_is_refused() -> None:
    # An array header claiming 2**32-1 elements in a 5-byte payload.
    with pytest.raises(BadPayload):
        codec.decode(b"\xdd\xff\xff\xff\xff", 1000)


def test_too_many_arguments_are_invalid_arguments() -> None:
    limits = PayloadLimits(max_arguments=3)
    payload = msgpack.packb({"a": 1, "b": 2, "c": 3, "d": 4})
    with pytest.raises(InvalidArguments, match="4 arguments, over the limit of 3"):
        protocol.parse_request(message(payload), "d1", "roost/replies", limits)


def test_an_argument_over_the_size_limit_is_invalid_arguments() -> None:
    limits = PayloadLimits(max_argument_bytes=10)
    payload = msgpack.packb({"value": "x" * 11})
    with pytest.raises(InvalidArguments, match="'value' is over the limit of 10 bytes"):
        protocol.parse_request(message(payload), "d1", "roost/replies", limits)
