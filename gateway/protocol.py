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
class Request:
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
    message: InboundMessage, device_id: str | None, reply_prefix: str, limits: codec.PayloadLimits | int
) -> Request:
    """Decode the payload into arguments and a reply address.

    Raises :class:`BadPayload` carrying the reply address it could still find
    (the MQTT 5 Response Topic) as ``exc.reply``-less data; callers use
    :func:`early_reply_address` for that.
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
    rt = envelope.get(REPLY_TOPIC_KEY)
    if rt is not None and (not isinstance(rt, str) or not rt):
        raise BadPayload(f"{REPLY_TOPIC_KEY} must be a non-empty str")
    if len(args) > limits.max_arguments:
        raise InvalidArguments(f"{len(args)} arguments, over the limit of {limits.max_arguments}")
    for name, value in args.items():
        if isinstance(value, (str, bytes)) and len(value) > limits.max_argument_bytes:
            limit = limits.max_argument_bytes
            raise InvalidArguments(f"argument {str(name)[:50]!r} is over the limit of {limit} bytes")
    return Request(args, reply_address(message, envelope, device_id, reply_prefix))


def early_reply_address(message: InboundMessage) -> ReplyAddress | None:
    """The reply address known without decoding the payload (MQTT 5 only)."""
    if message.response_topic:
        return ReplyAddress(message.response_topic, message.qos, message.correlation_data)
    return None


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
