"""msgpack encoding and decoding with limits: the only module that imports msgpack.

Decoding never allocates from a declared length: the unpacker's ``max_*_len``
bounds are derived from the payload size (and ``max_items``), so a 10-byte
payload cannot claim a million-element array. Nesting deeper than ``max_depth``
is refused; it is checked only for payloads long enough to nest that deep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import pydantic

from gateway.errors import BadPayload, BadResult

# Replies start with a one-entry map whose key is "result"; the value bytes are
# appended as produced by the executor, so results are encoded only once.
RESULT_PREFIX = b"\x81\xa6result"
DEFAULT_DEPTH = 32
DEFAULT_ITEMS = 10_000


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Bounds on one request payload (the ``limits`` settings)."""

    max_bytes: int = 256 * 1024
    max_depth: int = DEFAULT_DEPTH  # arrays and maps inside each other
    max_items: int = DEFAULT_ITEMS  # elements of one array, entries of one map
    max_arguments: int = 64  # named arguments of one request
    max_argument_bytes: int = 64 * 1024  # one str or bin argument
    max_correlation_bytes: int = 1024  # Correlation Data or $cid


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


def decode(data: bytes, max_bytes: int, max_depth: int = DEFAULT_DEPTH, max_items: int = DEFAULT_ITEMS) -> Any:
    """Decode one msgpack value from ``data`` or raise :class:`BadPayload`."""
    if len(data) > max_bytes:
        raise BadPayload(f"payload is {len(data)} bytes, over the limit of {max_bytes}")
    size = len(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=min(size, max_items),
            max_map_len=min(size // 2, max_items),
            max_ext_len=size,
        )
    except msgpack.ExtraData:
        raise BadPayload("payload holds more than one msgpack value") from None
    except TypeError:  # a map key that is an array or a map
        raise BadPayload("payload has a map key that is an array or a map") from None
    except (ValueError, msgpack.UnpackException, RecursionError) as exc:
        # Past the item limit (not just past what the payload's size allows): say which limit.
        text = str(exc)
        if f"max_array_len({max_items})" in text or f"max_map_len({max_items})" in text:
            raise BadPayload(f"payload has an array or map of more than {max_items} items") from None
        raise BadPayload(f"payload is not valid msgpack ({type(exc).__name__})") from None
    # Each level of nesting takes at least one byte: short payloads cannot be too deep.
    if size > max_depth and _depth(value, max_depth) > max_depth:
        raise BadPayload(f"payload nests arrays and maps more than {max_depth} deep")
    return value


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value``, counted no further than ``limit + 1``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            if level > deepest:
                deepest = level
                if deepest > limit:
                    return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode_map(data: bytes, limits: PayloadLimits | int) -> Mapping[Any, Any]:
    """Decode a payload that must be a map; an empty payload is an empty map."""
    if not data:
        return {}
    if isinstance(limits, int):
        limits = PayloadLimits(max_bytes=limits)
    value = decode(data, limits.max_bytes, limits.max_depth, limits.max_items)
    if not isinstance(value, dict):
        raise BadPayload(f"payload must be a msgpack map, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {list: "array", str: "str", bytes: "bin", bool: "bool", int: "int", float: "float"}
    if value is None:
        return "nil"
    return names.get(type(value), type(value).__name__)
