"""The wire contract of ``docs/protocol.md`` as a device sees it. MicroPython-safe.

A request is a msgpack map of named arguments; over MQTT 3.1.1 it also carries
``$cid`` (correlation id) and ``$rt`` (reply topic). A reply is a map with
``result`` or ``error`` (and the echoed ``$cid``). The SDK always names its
reply topic in the request (``$rt``, or the MQTT 5 Response Topic), so replies
reach it whatever the gateway's ``reply_prefix`` and call namespace are.
"""

from device_sdk import codec
from device_sdk.errors import BadReply, DecodeError, remote_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CID = "$cid"
REPLY_TOPIC = "$rt"
DEVICE_ID = "{device_id}"


def expand(topic: str, device_id: str) -> str:
    """``topic`` with every ``{device_id}`` replaced by the device's id."""
    return topic.replace(DEVICE_ID, device_id)


def check_device_id(device_id: str) -> str:
    """Refuse ids that would change the shape of a topic (``/``, wildcards) or are empty."""
    if not isinstance(device_id, str) or not device_id:
        raise ValueError("device_id must be a non-empty str")
    for bad in "/+#\x00":
        if bad in device_id:
            raise ValueError("device_id must not contain " + repr(bad))
    return device_id


def request_payload(
    args: "dict[str, Any] | None", cid: "bytes | str | None" = None, reply_topic: "str | None" = None
) -> bytes:
    """The request bytes: ``args`` as a map, plus ``$cid``/``$rt`` when given; ``b""`` for nothing at all."""
    if args is None:
        body = {}
    elif isinstance(args, dict):
        for key in args:
            if not isinstance(key, str) or key.startswith("$"):
                raise ValueError("argument names must be str not starting with '$', got " + repr(key))
        body = dict(args)
    else:
        raise TypeError("args must be a dict of named arguments, got " + type(args).__name__)
    if cid is not None:
        body[CID] = cid
    if reply_topic is not None:
        body[REPLY_TOPIC] = reply_topic
    return codec.encode(body) if body else b""


def event_payload(value: "Any") -> bytes:
    """What :meth:`publish` sends: ``None`` is the empty payload (no arguments), anything else its msgpack."""
    return b"" if value is None else codec.encode(value)


def parse_reply(payload: bytes) -> "tuple[bytes | str | None, tuple[bool, Any]]":
    """``(cid, outcome)`` of a reply; raises :class:`BadReply` when it is not a msgpack map.

    ``outcome`` is ``(True, result)`` or ``(False, exception)``; see :func:`unwrap`.
    """
    try:
        body = codec.decode(payload)
    except DecodeError as exc:
        raise BadReply("reply is not msgpack: " + str(exc)) from None
    if not isinstance(body, dict):
        raise BadReply("reply is not a msgpack map")
    cid = body.get(CID)
    if cid is not None and not isinstance(cid, (bytes, str)):
        raise BadReply("reply $cid is neither bin nor str")
    return cid, outcome(body)


def outcome(body: "dict[Any, Any]") -> "tuple[bool, Any]":
    """``(True, result)`` or ``(False, RemoteError | BadReply)`` for a decoded reply map."""
    if "result" in body:
        if "error" in body:
            return False, BadReply("reply has both a result and an error")
        return True, body["result"]
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        message = error.get("message")
        details = error.get("details")
        return False, remote_error(
            error["code"],
            message if isinstance(message, str) else "",
            details if isinstance(details, list) else None,
        )
    return False, BadReply("reply has neither a result nor an error")


def unwrap(result: "tuple[bool, Any]") -> "Any":
    """The result of an outcome, or raise its error."""
    if result[0]:
        return result[1]
    raise result[1]


def matches(mqtt_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT filter (``+`` one level, ``#`` the rest)."""
    levels = mqtt_filter.split("/")
    parts = topic.split("/")
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(levels) == len(parts)


def _random_bytes(n: int) -> bytes:
    try:
        import os

        return os.urandom(n)
    except (ImportError, AttributeError):  # a port without os.urandom
        import random

        return bytes(random.getrandbits(8) for _ in range(n))


def client_id(device_id: str) -> str:
    """A fresh MQTT client id for ``device_id`` (unique per process, so two runs never evict each other)."""
    return "roost-" + device_id + "-" + "".join(f"{b:02x}" for b in _random_bytes(3))


class CorrelationIds:
    """Correlation ids: 4 random bytes per device object, then a counter (8 bytes of bin)."""

    def __init__(self) -> None:
        self._prefix = _random_bytes(4)
        self._count = 0

    def next(self) -> bytes:
        """A correlation id not used before by this object."""
        self._count = (self._count + 1) & 0xFFFFFFFF
        return self._prefix + self._count.to_bytes(4, "big")


class Pending:
    """Calls waiting for a reply, by correlation id.

    :meth:`take` hands a call's slot out once; a second reply for the same id
    finds nothing. The last few finished ids are remembered so a repeated or
    late reply is logged as such rather than as a stray one.
    """

    def __init__(self, remember: int = 16) -> None:
        self._waiting: dict[Any, Any] = {}
        self._finished: list[Any] = []
        self._remember = remember

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, cid: "bytes | str", slot: "Any") -> None:
        """Wait for a reply to ``cid``; ``slot`` is what :meth:`take` returns."""
        self._waiting[cid] = slot

    def take(self, cid: "bytes | str | None") -> "Any":
        """The slot of ``cid`` the first time, ``None`` after that or for unknown ids."""
        slot = self._waiting.pop(cid, None)
        if slot is not None:
            self._finished.append(cid)
            if len(self._finished) > self._remember:
                self._finished.pop(0)
        return slot

    def clear(self) -> "list[Any]":
        """Forget every waiting call; returns their slots."""
        slots = list(self._waiting.values())
        self._waiting = {}
        return slots

    def why_dropped(self, cid: "bytes | str | None") -> str:
        """The log line for a reply whose id :meth:`take` did not know."""
        if cid is None:
            return "dropped a reply without a correlation id"
        if cid in self._finished:
            return "dropped a repeated or late reply for correlation id " + repr(cid)
        return "dropped a reply for an unknown correlation id " + repr(cid)
