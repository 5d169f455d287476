"""A small msgpack codec for MicroPython and CPython: nil, bool, int, float, str, bin, array, map.

The Python ``msgpack`` packages do not run on MicroPython. This module encodes
exactly as ``msgpack.packb(value, use_bin_type=True)`` does (smallest integer
form, float 64, str 8/16/32, bin 8/16/32), so the device and the gateway agree
byte for byte (``tests/data/golden.json``).

Decoding never trusts a declared length: an array or map claiming more items
than there are bytes left is refused before anything is allocated, and nesting
is bounded, so hostile input costs at most its own size. Ext types and other
msgpack types outside the list above raise :class:`DecodeError`.
"""

import struct

from device_sdk.errors import DecodeError, EncodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_DEPTH = 32  # nesting levels accepted by decode and encode

_U64 = 0x10000000000000000
_I64 = -0x8000000000000000


def encode(value: "Any") -> bytes:
    """The msgpack bytes of ``value`` (lists and tuples become arrays, dicts maps)."""
    buf = bytearray()
    _pack(buf, value, 0)
    return bytes(buf)


def _head(buf: bytearray, size: int, fix: int, fix_limit: int, code8: int, code16: int, code32: int) -> None:
    """Write a length header: the fix form below ``fix_limit``, else the smallest sized form (no 8-bit one if 0)."""
    if size < fix_limit:
        buf.append(fix | size)
    elif size < 0x100 and code8:
        buf.append(code8)
        buf.append(size)
    elif size < 0x10000:
        buf += struct.pack(">BH", code16, size)
    elif size < 0x100000000:
        buf += struct.pack(">BI", code32, size)
    else:
        raise EncodeError("too long for msgpack: " + str(size))


def _pack_int(buf: bytearray, n: int) -> None:
    if n >= 0:
        if n < 0x80:
            buf.append(n)
        elif n < 0x100:
            buf.append(0xCC)
            buf.append(n)
        elif n < 0x10000:
            buf += struct.pack(">BH", 0xCD, n)
        elif n < 0x100000000:
            buf += struct.pack(">BI", 0xCE, n)
        elif n < _U64:
            buf += struct.pack(">BQ", 0xCF, n)
        else:
            raise EncodeError("int too large for msgpack: " + str(n))
    elif n >= -32:
        buf.append(n & 0xFF)
    elif n >= -0x80:
        buf += struct.pack(">Bb", 0xD0, n)
    elif n >= -0x8000:
        buf += struct.pack(">Bh", 0xD1, n)
    elif n >= -0x80000000:
        buf += struct.pack(">Bi", 0xD2, n)
    elif n >= _I64:
        buf += struct.pack(">Bq", 0xD3, n)
    else:
        raise EncodeError("int too small for msgpack: " + str(n))


def _pack(buf: bytearray, value: "Any", depth: int) -> None:
    # bool before int: on CPython True is an int.
    if value is None:
        buf.append(0xC0)
    elif value is True:
        buf.append(0xC3)
    elif value is False:
        buf.append(0xC2)
    elif isinstance(value, int):
        _pack_int(buf, value)
    elif isinstance(value, float):
        buf += struct.pack(">Bd", 0xCB, value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _head(buf, len(data), 0xA0, 32, 0xD9, 0xDA, 0xDB)
        buf += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _head(buf, len(value), 0, 0, 0xC4, 0xC5, 0xC6)
        buf += value
    elif depth >= MAX_DEPTH:
        raise EncodeError("nested deeper than " + str(MAX_DEPTH) + " levels")
    elif isinstance(value, (list, tuple)):
        _head(buf, len(value), 0x90, 16, 0, 0xDC, 0xDD)
        for item in value:
            _pack(buf, item, depth + 1)
    elif isinstance(value, dict):
        _head(buf, len(value), 0x80, 16, 0, 0xDE, 0xDF)
        for key in value:
            _pack(buf, key, depth + 1)
            _pack(buf, value[key], depth + 1)
    else:
        raise EncodeError("cannot encode " + type(value).__name__ + " as msgpack")


def decode(data: "bytes | bytearray | memoryview") -> "Any":
    """The one msgpack value in ``data``; raises :class:`DecodeError` otherwise."""
    view = memoryview(data)
    value, end = _unpack(view, 0, 0)
    if end != len(view):
        raise DecodeError("extra bytes after the msgpack value")
    return value


# Fixed-size types: code → (struct format, size).
_FIXED = {
    0xCA: (">f", 4),
    0xCB: (">d", 8),
    0xCC: (">B", 1),
    0xCD: (">H", 2),
    0xCE: (">I", 4),
    0xCF: (">Q", 8),
    0xD0: (">b", 1),
    0xD1: (">h", 2),
    0xD2: (">i", 4),
    0xD3: (">q", 8),
}


def _need(view: memoryview, pos: int, size: int) -> int:
    end = pos + size
    if end > len(view):
        raise DecodeError("truncated msgpack data")
    return end


def _length(view: memoryview, pos: int, width: int) -> "tuple[int, int]":
    """Read a big-endian unsigned length of ``width`` bytes at ``pos``."""
    end = _need(view, pos, width)
    size = 0
    for i in range(pos, end):
        size = (size << 8) | view[i]
    return size, end


def _unpack(view: memoryview, pos: int, depth: int) -> "tuple[Any, int]":
    """Decode the value at ``pos``; returns it and the position after it."""
    if pos >= len(view):
        raise DecodeError("truncated msgpack data")
    code = view[pos]
    pos += 1
    if code < 0x80:
        return code, pos
    if code >= 0xE0:
        return code - 0x100, pos
    if 0xA0 <= code <= 0xBF:
        return _str(view, pos, code & 0x1F)
    if code == 0xC0:
        return None, pos
    if code == 0xC2:
        return False, pos
    if code == 0xC3:
        return True, pos
    if code in _FIXED:
        fmt, size = _FIXED[code]
        end = _need(view, pos, size)
        return struct.unpack_from(fmt, view, pos)[0], end
    if 0xD9 <= code <= 0xDB:
        size, pos = _length(view, pos, 1 << (code - 0xD9))
        return _str(view, pos, size)
    if 0xC4 <= code <= 0xC6:
        size, pos = _length(view, pos, 1 << (code - 0xC4))
        end = _need(view, pos, size)
        return bytes(view[pos:end]), end
    if code <= 0x9F or 0xDC <= code <= 0xDF:
        if depth >= MAX_DEPTH:
            raise DecodeError("nested deeper than " + str(MAX_DEPTH) + " levels")
        if code <= 0x8F:
            return _map(view, pos, code & 0x0F, depth)
        if code <= 0x9F:
            return _array(view, pos, code & 0x0F, depth)
        size, pos = _length(view, pos, 2 if code in (0xDC, 0xDE) else 4)
        if code <= 0xDD:
            return _array(view, pos, size, depth)
        return _map(view, pos, size, depth)
    raise DecodeError(f"unsupported msgpack type 0x{code:02x}")


def _str(view: memoryview, pos: int, size: int) -> "tuple[str, int]":
    end = _need(view, pos, size)
    try:
        return str(view[pos:end], "utf-8"), end
    except UnicodeError:
        raise DecodeError("invalid UTF-8 in a msgpack str") from None


def _array(view: memoryview, pos: int, count: int, depth: int) -> "tuple[list[Any], int]":
    if count > len(view) - pos:  # every item takes at least one byte
        raise DecodeError("truncated msgpack data")
    items = []
    for _ in range(count):
        item, pos = _unpack(view, pos, depth + 1)
        items.append(item)
    return items, pos


def _map(view: memoryview, pos: int, count: int, depth: int) -> "tuple[dict[Any, Any], int]":
    if 2 * count > len(view) - pos:
        raise DecodeError("truncated msgpack data")
    result = {}
    for _ in range(count):
        key, pos = _unpack(view, pos, depth + 1)
        value, pos = _unpack(view, pos, depth + 1)
        if isinstance(key, (list, dict)):
            raise DecodeError("a msgpack map key must not be an array or a map")
        result[key] = value
    return result, pos
