"""Request and reply envelopes: the wire contract of ``docs/protocol.md``.

A request is a msgpack map; keys starting with ``$`` belong to the envelope
(``$cid`` correlation id, ``$rt`` reply topic), all others are named arguments.
MQTT 5 requests carry the reply address in the Response Topic and Correlation
Data properties; MQTT 3.1.1 requests carry ``$cid`` (and optionally ``$rt``) and
get their reply on ``{reply_prefix}/{device_id}`` by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import codec
from gateway.errors import BadPayload, InvalidArguments, WireError
from gateway.topics import publish_problem
from gateway.transport.base import InboundMessage, OutboundMessage

CID_KEY = "$cid"
REPLY_TOPIC_KEY = "$rt"


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where and how the reply to one request goes."""

    topic: str
    qos: int
    correlation_data: bytes | None = None  # MQTT 5 property, echoed
    cid: bytes | str | None = None  # 3.1.1 convention, echoed in the payload as $cid


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A decoded request: its arguments and, unless it is an event, its reply address."""

    args: Mapping[str, Any]
    reply: ReplyAddress | None


def reply_address(
    message: InboundMessage, envelope: Mapping[Any, Any], device_id: str | None, reply_prefix: str
) -> ReplyAddress | None:
    """Where the reply goes, or ``None`` for an event (no Response Topic, no ``$cid``)."""
    cid = envelope.get(CID_KEY)
    if cid is not None and not isinstance(cid, (bytes, str)):
        cid = None
    explicit = envelope.get(REPLY_TOPIC_KEY)
    if not isinstance(explicit, str) or not explicit:
        explicit = None
    if message.response_topic:
        return ReplyAddress(message.response_topic, message.qos, message.correlation_data, cid)
    if cid is None:
        return None
    if explicit is not None:
        return ReplyAddress(explicit, message.qos, None, cid)
    if device_id:
        return ReplyAddress(f"{reply_prefix}/{device_id}", message.qos, None, cid)
    return None


def parse_request(
    message: InboundMessage,
    device_id: str | None,
    reply_prefix: str,
    limits: codec.PayloadLimits | int,
    max_topic_levels: int = 32,
) -> ParsedRequest:
    """Decode the payload into arguments and a reply address.

    Raises :class:`BadPayload` (or another :class:`WireError`); callers find where
    to send it with :func:`fallback_reply_address`. A ``$rt`` the broker would refuse
    as a topic (:func:`gateway.topics.publish_problem`) is such an error, found here
    rather than when the reply is published.
    """
    if isinstance(limits, int):
        limits = codec.PayloadLimits(max_bytes=limits)
    payload = codec.decode_map(message.payload, limits)
    args: dict[str, Any] = {}
    envelope: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(key, str) and key.startswith("$"):
            envelope[key] = value
        else:
            args[key] = value
    cid = envelope.get(CID_KEY)
    if cid is not None and not isinstance(cid, (bytes, str)):
        raise BadPayload(f"{CID_KEY} must be bin or str, got {type(cid).__name__}")
    check_correlation(message.correlation_data, cid, limits.max_correlation_bytes)
    rt = envelope.get(REPLY_TOPIC_KEY)
    if rt is not None and (not isinstance(rt, str) or not rt):
        raise BadPayload(f"{REPLY_TOPIC_KEY} must be a non-empty str")
    if rt is not None and (problem := publish_problem(rt, max_topic_levels)) is not None:
        raise BadPayload(f"{REPLY_TOPIC_KEY} is not a topic the broker accepts: it {problem}")
    if len(args) > limits.max_arguments:
        raise InvalidArguments(f"{len(args)} arguments, over the limit of {limits.max_arguments}")
    for name, value in args.items():
        if isinstance(value, (str, bytes)) and len(value) > limits.max_argument_bytes:
            limit = limits.max_argument_bytes
            raise InvalidArguments(f"argument {str(name)[:50]!r} is over the limit of {limit} bytes")
    return ParsedRequest(args, reply_address(message, envelope, device_id, reply_prefix))


def check_correlation(correlation_data: bytes | None, cid: bytes | str | None, limit: int) -> None:
    """Refuse a Correlation Data or ``$cid`` longer than ``limit`` bytes (``limits.max_correlation_bytes``).

    Both are echoed in the reply and kept with it to answer duplicates: a long one costs
    memory, disk and bandwidth on every copy. Raises :class:`BadPayload`.
    """
    if correlation_data is not None and len(correlation_data) > limit:
        raise BadPayload(f"Correlation Data is {len(correlation_data)} bytes, over the limit of {limit}")
    if cid is not None and len(cid) > limit // 4:  # a str of at most limit/4 characters fits in UTF-8
        size = _cid_size(cid)
        if size > limit:
            raise BadPayload(f"{CID_KEY} is {size} bytes, over the limit of {limit}")


def echoable(address: ReplyAddress, limit: int) -> ReplyAddress:
    """``address`` without a Correlation Data or ``$cid`` over ``limit`` bytes.

    For the error reply that refuses one (:func:`check_correlation`): it goes to the device
    without the id, rather than carry back what was refused as too long.
    """
    corr, cid = address.correlation_data, address.cid
    if (corr is None or len(corr) <= limit) and (cid is None or _cid_size(cid) <= limit):
        return address
    return ReplyAddress(
        address.topic,
        address.qos,
        corr if corr is None or len(corr) <= limit else None,
        cid if cid is None or _cid_size(cid) <= limit else None,
    )


def _cid_size(cid: bytes | str) -> int:
    return len(cid) if isinstance(cid, bytes) else len(cid.encode(errors="surrogatepass"))


def early_reply_address(message: InboundMessage) -> ReplyAddress | None:
    """The reply address known without decoding the payload (MQTT 5 only)."""
    if message.response_topic:
        return ReplyAddress(message.response_topic, message.qos, message.correlation_data)
    return None


def fallback_reply_address(
    message: InboundMessage, device_id: str | None, reply_prefix: str, limits: codec.PayloadLimits
) -> ReplyAddress | None:
    """Where to send the error for a request :func:`parse_request` refused, or ``None`` if nowhere.

    The MQTT 5 Response Topic; else, for a payload that decodes with a usable ``$cid``, the
    device's default reply topic (never the request's own ``$rt``: it may be what was wrong).
    Decodes the payload again: it runs on the error path only.
    """
    early = early_reply_address(message)
    if early is not None:
        return echoable(early, limits.max_correlation_bytes)
    if not device_id:
        return None
    try:
        envelope = codec.decode_map(message.payload, limits)
    except WireError:
        return None
    cid = envelope.get(CID_KEY)
    if not isinstance(cid, (bytes, str)):
        return None
    return echoable(ReplyAddress(f"{reply_prefix}/{device_id}", message.qos, None, cid), limits.max_correlation_bytes)


PUBLISH_ROOM = 32  # fixed header, packet id and property headers of a PUBLISH, above its topic and data


def publish_size(message: OutboundMessage) -> int:
    """An upper bound of the size of ``message``'s PUBLISH packet, to hold against a broker's Maximum Packet Size."""
    corr = message.correlation_data
    return PUBLISH_ROOM + 4 * len(message.topic) + len(message.payload) + (len(corr) if corr is not None else 0)


def _with_cid(body: bytes, cid: bytes | str | None) -> bytes:
    """Turn a one-entry map into a two-entry map with ``$cid`` appended."""
    if cid is None:
        return body
    return b"\x82" + body[1:] + codec.encode(CID_KEY) + codec.encode(cid)


def result_reply(address: ReplyAddress, encoded_result: bytes) -> OutboundMessage:
    """The reply for a result whose msgpack encoding is ``encoded_result``."""
    body = _with_cid(codec.RESULT_PREFIX + encoded_result, address.cid)
    return OutboundMessage(address.topic, body, address.qos, address.correlation_data)


def error_reply(address: ReplyAddress, error: WireError) -> OutboundMessage:
    """The reply for a wire error."""
    body = _with_cid(codec.encode({"error": error.to_wire()}), address.cid)
    return OutboundMessage(address.topic, body, address.qos, address.correlation_data)
