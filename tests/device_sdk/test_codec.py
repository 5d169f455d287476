"""The SDK's own msgpack codec against the golden vectors and, byte for byte, against the msgpack package."""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_sdk import codec
from device_sdk.errors import DecodeError, EncodeError
from tests.support.golden import vectors

GOLDEN = vectors()

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
keys = st.text() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.binary()
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=20) | st.dictionaries(keys, inner, max_size=20), max_leaves=30
)


def packb(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vectors_both_ways(name: str) -> None:
    value, data = GOLDEN[name]
    assert codec.encode(value) == data
    assert codec.decode(data) == value


@settings(max_examples=150, deadline=None)
@given(values)
def test_encodes_like_the_msgpack_package(value: Any) -> None:
    assert codec.encode(value) == packb(value)


@settings(max_examples=150, deadline=None)
@given(values)
def test_decodes_what_the_msgpack_package_encodes(value: Any) -> None:
    data = packb(value)
    assert codec.decode(data) == msgpack.unpackb(data, raw=False, strict_map_key=False) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.decode(data)


@pytest.mark.parametrize("size", [15, 16, 31, 32, 255, 256, 65535, 65536])
def test_size_boundaries(size: int) -> None:
    for value in ("x" * size, b"y" * size, list(range(size)), {str(i): i for i in range(size)}):
        data = packb(value)
        assert codec.encode(value) == data
        assert codec.decode(data) == value


def test_nan_and_float32() -> None:
    assert codec.encode(math.nan) == packb(math.nan)
    assert math.isnan(codec.decode(packb(math.nan)))
    assert codec.decode(b"\xca" + struct.pack(">f", 1.5)) == 1.5


def test_tuples_and_bytearrays_encode_as_arrays_and_bin() -> None:
    assert codec.encode((1, bytearray(b"ab"), memoryview(b"c"))) == packb([1, b"ab", b"c"])


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, object(), {1, 2}, 1j])
def test_unencodable_values(value: Any) -> None:
    with pytest.raises(EncodeError):
        codec.encode(value)


def test_nesting_is_bounded_both_ways() -> None:
    deep: list[Any] = []
    for _ in range(codec.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(EncodeError, match="nested deeper"):
        codec.encode(deep)
    with pytest.raises(DecodeError, match="nested deeper"):
        codec.decode(b"\x91" * (codec.MAX_DEPTH + 1) + b"\xc0")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"\xc1", "unsupported msgpack type 0xc1"),
        (b"\xd4\x01\x00", "unsupported msgpack type 0xd4"),  # ext types are outside the subset
        (b"\x01\x02", "extra bytes"),
        (b"\xdd\xff\xff\xff\xff\xc0", "truncated"),  # claims 4 billion items: refused before allocating
        (b"\xdf\xff\xff\xff\xff", "truncated"),
        (b"\xa2\xff\xfe", "invalid UTF-8"),
        (b"\x81\x90\x01", "map key"),
        (b"\xcd\x01", "truncated"),
        (b"\xc5\x00\x05ab", "truncated"),
    ],
)
def test_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.decode(data)
