"""msgpack encoding and decoding with limits: the only module that imports msgpack.

Decoding never allocates from a declared length: the unpacker's ``max_*_len``
bounds are derived from the payload size, so a 10-byte payload cannot claim a
million-element array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
import pydantic

from gateway.errors import BadPayload, BadResult

# Replies start with a one-entry map whose key is "result"; the value bytes are
# appended as produced by the executor, so results are encoded only once.
RESULT_PREFIX = b"\x81\xa6result"


def _default(value: object) -> object:
    """Encode the few non-msgpack types a function may return."""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="python")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode object of type {type(value).__name__}")


def encode(value: Any) -> bytes:
    """Encode ``value``; raises ``TypeError``/``ValueError``/``OverflowError`` on failure."""
    data: bytes = msgpack.packb(value, default=_default, use_bin_type=True, datetime=False)
    return data


def encode_result(value: Any, max_bytes: int) -> bytes:
    """Encode a function's result, or raise :class:`BadResult` with a clear message."""
    try:
        data = encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadResult(f"result cannot be encoded as msgpack: {exc}") from None
    if len(data) > max_bytes:
        raise BadResult(f"result is {len(data)} bytes, over the limit of {max_bytes}")
    return data


def decode(data: bytes, max_bytes: int) -> Any:
    """Decode one msgpack value from ``data`` or raise :class:`BadPayload`."""
    if len(data) > max_bytes:
        raise BadPayload(f"payload is {len(data)} bytes, over the limit of {max_bytes}")
    size = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
        )
    except msgpack.ExtraData:
        raise BadPayload("payload holds more than one msgpack value") from None
    except TypeError:  # a map key that is an array or a map
        raise BadPayload("payload has a map key that is an array or a map") from None
    except (ValueError, msgpack.UnpackException, RecursionError) as exc:
        raise BadPayload(f"payload is not valid msgpack ({type(exc).__name__})") from None


def decode_map(data: bytes, max_bytes: int) -> Mapping[Any, Any]:
    """Decode a payload that must be a map; an empty payload is an empty map."""
    if not data:
        return {}
    value = decode(data, max_bytes)
    if not isinstance(value, dict):
        raise BadPayload(f"payload must be a msgpack map, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {list: "array", str: "str", bytes: "bin", bool: "bool", int: "int", float: "float"}
    if value is None:
        return "nil"
    return names.get(type(value), type(value).__name__)
