"""Frames of the direct channel between the gateway and its Mesos executors.

Each frame is a :mod:`~gateway.executors.framing` frame (4-byte length, then the
body; :class:`~gateway.executors.framing.FrameReader` cuts the stream) whose body
starts with a one-byte :class:`Kind`:

* ``HELLO`` (executor → gateway, first frame): JSON with the executor id and the
  token the gateway gave it at launch, its pid, host and worker count.
* ``WELCOME`` / ``REJECT`` (gateway → executor): JSON settings / a reason.
* ``CALL`` (gateway → executor): call id, timeout, seconds left before the request
  expires (NaN: never), then a pickle of ``(function key, kwargs)``. Pickle for the
  same reason as the local workers' pipes; only the gateway's frames are unpickled.
* ``ACK`` (executor → gateway): how many ``CALL`` frames it has read on this
  connection; one per read, so acks cost nothing per call.
* ``RESULT`` (executor → gateway): call id, :class:`~gateway.executors.framing.ReplyKind`
  byte, run time in µs, then the msgpack result or ``code NUL message``.
* ``RESUME`` (gateway → executor, after a reconnect): ids of calls the executor
  acknowledged and the gateway still awaits: their results may have been lost.
* ``PING`` (both ways): liveness when there is nothing else to say.
* ``DRAIN`` (executor → gateway): the executor is stopping; send it no more calls.

Deadlines travel as seconds left, not as clock readings: ``time.monotonic()``
means nothing on another machine.
"""

from __future__ import annotations

import enum
import json
import math
import pickle
import struct
from typing import Any

from gateway.executors.framing import ReplyKind

_HEAD = struct.Struct("!IB")  # length, kind
_CALL = struct.Struct("!IBQdd")  # length, kind, call id, timeout, expires in
_CALL_BODY = struct.Struct("!BQdd")
_RESULT = struct.Struct("!IBQBI")  # length, kind, call id, reply kind, µs
RESULT_HEADER = struct.Struct("!BQBI")  # a RESULT frame's body header
_ACK = struct.Struct("!IBQ")
_ID = struct.Struct("!Q")
MAX_CONTROL_FRAME = 1 << 20  # HELLO, WELCOME, RESUME: small by nature
_MAX_MICROS = 2**32 - 1


class Kind(enum.IntEnum):
    """The first byte of every channel frame's body."""

    HELLO = 1
    WELCOME = 2
    REJECT = 3
    CALL = 4
    ACK = 5
    RESULT = 6
    RESUME = 7
    PING = 8
    DRAIN = 9


def control(kind: Kind, payload: bytes = b"") -> bytes:
    """A frame with a plain payload (PING, DRAIN, REJECT)."""
    return _HEAD.pack(1 + len(payload), kind) + payload


def json_frame(kind: Kind, value: dict[str, Any]) -> bytes:
    """A frame whose payload is JSON (HELLO, WELCOME)."""
    return control(kind, json.dumps(value, separators=(",", ":")).encode())


def parse_json(body: bytes) -> dict[str, Any]:
    """The JSON object of a HELLO or WELCOME body; ``ValueError`` if it is not one."""
    value = json.loads(body[1:])
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def pickle_call(key: str, kwargs: dict[str, Any]) -> bytes:
    """The pickled part of a CALL frame; raises whatever pickle raises for arguments it cannot pickle."""
    return pickle.dumps((key, kwargs), protocol=pickle.HIGHEST_PROTOCOL)


def call_frame(call_id: int, timeout: float, expires_in: float | None, pickled: bytes) -> bytes:
    """Encode one call around its :func:`pickle_call` bytes."""
    left = math.nan if expires_in is None else expires_in
    return _CALL.pack(_CALL.size - 4 + len(pickled), Kind.CALL, call_id, timeout, left) + pickled


def parse_call(body: bytes) -> tuple[int, float, float | None, bytes]:
    """``(call id, timeout, expires in or None, pickled (key, kwargs))`` of a CALL body."""
    _, call_id, timeout, left = _CALL_BODY.unpack_from(body)
    return call_id, timeout, None if math.isnan(left) else left, body[_CALL_BODY.size :]


def ack_frame(count: int) -> bytes:
    """Acknowledge the first ``count`` CALL frames of this connection."""
    return _ACK.pack(_ACK.size - 4, Kind.ACK, count)


def parse_ack(body: bytes) -> int:
    """The count of an ACK body."""
    count: int = _ID.unpack_from(body, 1)[0]
    return count


def result_frame(call_id: int, kind: ReplyKind, micros: int, payload: bytes) -> bytes:
    """Encode one result (``payload`` is msgpack for OK, ``code NUL message`` for ERROR)."""
    return _RESULT.pack(_RESULT.size - 4 + len(payload), Kind.RESULT, call_id, kind, min(micros, _MAX_MICROS)) + payload


def resume_frame(call_ids: list[int]) -> bytes:
    """Ask for the results of calls the executor acknowledged on an earlier connection."""
    return control(Kind.RESUME, b"".join(_ID.pack(i) for i in call_ids))


def parse_resume(body: bytes) -> list[int]:
    """The call ids of a RESUME body."""
    return [_ID.unpack_from(body, pos)[0] for pos in range(1, len(body) - 7, 8)]
