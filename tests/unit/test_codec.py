"""The msgpack codec and its limits: clear errors for bad payloads and results, each limit refused, none allocating
from a declared length (the argument limits are the codec's, applied by ``protocol.parse_request``)."""

from __future__ import annotations

import contextlib
import time

import msgpack
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import codec, protocol
from gateway.codec import PayloadLimits
from gateway.errors import BadPayload, BadResult, InvalidArguments
from gateway.transport.base import InboundMessage


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def inbound(payload: bytes, topic: str = "devices/d1/add") -> InboundMessage:
    return InboundMessage(topic, payload, 1, time.monotonic(), "r/1", b"k")


def test_empty_payload_is_no_arguments() -> None:
    assert codec.decode_map(b"", 100) == {}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "not valid msgpack"),
        (b"\x93\x01\x02\x03", "must be a msgpack map, got array"),
        (b"\xa3abc", "must be a msgpack map, got str"),
        (b"\x01\x02", "more than one msgpack value"),
        (b"\xdd\x7f\xff\xff\xff", "not valid msgpack"),  # declares 2**31 elements in 5 bytes
        (b"\x81\x90\x01", "map key that is an array or a map"),
    ],
)
def test_bad_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(BadPayload, match=message):
        codec.decode_map(payload, 1000)


def test_payload_over_the_limit() -> None:
    with pytest.raises(BadPayload, match="payload is 101 bytes, over the limit of 100"):
        codec.decode_map(b"\x80" * 101, 100)


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
        protocol.parse_request(inbound(payload), "d1", "roost/replies", limits)


def test_an_argument_over_the_size_limit_is_invalid_arguments() -> None:
    limits = PayloadLimits(max_argument_bytes=10)
    payload = msgpack.packb({"value": "x" * 11})
    with pytest.raises(InvalidArguments, match="'value' is over the limit of 10 bytes"):
        protocol.parse_request(inbound(payload), "d1", "roost/replies", limits)


def test_result_encoding_handles_models_and_tuples() -> None:
    class Point(pydantic.BaseModel):
        x: int
        y: int

    data = codec.encode_result({"p": Point(x=1, y=2), "t": (1, 2), "b": b"\x00"}, 1000)
    assert msgpack.unpackb(data) == {"p": {"x": 1, "y": 2}, "t": [1, 2], "b": b"\x00"}


def test_unencodable_result() -> None:
    with pytest.raises(BadResult, match="cannot encode object of type object"):
        codec.encode_result(object(), 1000)
    with pytest.raises(BadResult, match=r"result is .* bytes, over the limit of 10"):
        codec.encode_result("x" * 100, 10)
    with pytest.raises(BadResult, match="cannot be encoded"):
        codec.encode_result(2**70, 1000)


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_but_bad_payload(data: bytes) -> None:
    with contextlib.suppress(BadPayload):
        codec.decode_map(data, 64)
