"""The msgpack codec: limits, and clear errors for bad payloads and results."""

from __future__ import annotations

import contextlib

import msgpack
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import codec
from gateway.errors import BadPayload, BadResult


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
