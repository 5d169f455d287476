"""Length-prefixed frames on the pipes between the gateway and its worker processes.

Every frame is a 4-byte big-endian length followed by that many bytes; several
frames may travel in one write and a frame may be split across reads.

* A call frame (gateway → worker) is the call id (8 bytes) and a pickle of
  ``(function key, kwargs, expires_at)``. Pickle, because arguments may be
  pydantic models; both ends are this program, so nothing untrusted is unpickled.
* A reply frame (worker → gateway) is the call id, a :class:`ReplyKind` byte and
  the function's run time in microseconds, then raw bytes: the msgpack result,
  or ``code NUL message`` for an error. Never pickle: the gateway does not
  unpickle anything a function produced, and the result is already encoded.
"""

from __future__ import annotations

import enum
import pickle
import struct
from typing import Any

from gateway.errors import RoostError

_LENGTH = struct.Struct("!I")
_CALL = struct.Struct("!IQ")  # length, call id
_CALL_ID = struct.Struct("!Q")
_REPLY = struct.Struct("!IQBI")  # length, call id, kind, run time in µs
REPLY_HEADER = struct.Struct("!QBI")  # a reply frame's header, as returned by FrameReader
_MAX_MICROS = 2**32 - 1


class ReplyKind(enum.IntEnum):
    """What a reply frame carries."""

    OK = 0  # the encoded result
    ERROR = 1  # a wire error: code NUL message
    READY = 2  # the worker loaded its modules (call id 0, no payload)


class FrameError(RoostError):
    """The byte stream is not a valid sequence of frames (a bug or a corrupted worker)."""


def call_frame(call_id: int, key: str, kwargs: dict[str, Any], expires_at: float | None) -> bytes:
    """Encode one call; raises whatever pickle raises for arguments it cannot pickle."""
    body = pickle.dumps((key, kwargs, expires_at), protocol=pickle.HIGHEST_PROTOCOL)
    return _CALL.pack(_CALL.size - _LENGTH.size + len(body), call_id) + body


def parse_call(frame: bytes) -> tuple[int, bytes]:
    """Split a call frame into its call id and the pickled ``(key, kwargs, expires_at)``."""
    return _CALL_ID.unpack_from(frame)[0], frame[_CALL_ID.size :]


def reply_frame(call_id: int, kind: ReplyKind, micros: int, payload: bytes = b"") -> bytes:
    """Encode one reply."""
    size = _REPLY.size - _LENGTH.size + len(payload)
    return _REPLY.pack(size, call_id, kind, min(micros, _MAX_MICROS)) + payload


def error_payload(code: str, message: str) -> bytes:
    """The payload of an ``ERROR`` reply."""
    return code.encode() + b"\0" + message.encode("utf-8", "replace")


def parse_error(payload: bytes) -> tuple[str, str]:
    """``(code, message)`` of an ``ERROR`` reply's payload."""
    code, _, message = payload.partition(b"\0")
    return code.decode("ascii", "replace"), message.decode("utf-8", "replace")


class FrameReader:
    """Cuts a byte stream into frame bodies, keeping a partial frame for the next read."""

    def __init__(self, max_frame: int) -> None:
        self._rest = b""
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """The bodies of the frames completed by ``data``; raises :class:`FrameError` on a bad length."""
        if self._rest:
            data = self._rest + data
        frames = []
        pos, end = 0, len(data)
        while end - pos >= 4:
            (size,) = _LENGTH.unpack_from(data, pos)
            if size > self._max:
                raise FrameError(f"frame of {size} bytes, over the limit of {self._max}")
            stop = pos + 4 + size
            if stop > end:
                break
            frames.append(data[pos + 4 : stop])
            pos = stop
        self._rest = data[pos:]
        return frames
