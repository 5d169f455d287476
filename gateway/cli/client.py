"""A small request/reply client on top of a transport, for ``roost call`` and the demo.

It speaks the wire contract of ``docs/protocol.md``: MQTT 5 Response Topic and
Correlation Data, or, over MQTT 3.1.1, ``$cid`` and ``$rt``. Either way its replies
come to a private inbox inside the reply space of the device it calls as,
``{reply_prefix}/{device_id}/{token}``: the gateway refuses reply topics outside it,
and the device's own inbox is left alone.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

from gateway import codec
from gateway.config import DEFAULT_REPLY_PREFIX
from gateway.errors import RoostError, WireError, error_for_code
from gateway.topics import filter_matches
from gateway.transport import ConnectOptions, OutboundMessage, Transport, create_transport
from gateway.transport.base import InboundMessage


class NoReply(RoostError):
    """No reply arrived within the timeout."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: its result, or the error it carries."""

    result: Any = None
    error: WireError | None = None
    raw: Any = None


def decode_reply(payload: bytes) -> Reply:
    """Decode a reply payload (``{"result": ...}`` or ``{"error": {...}}``)."""
    body = codec.decode(payload, max(len(payload), 1))
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return Reply(error=error_for_code(str(err.get("code")), str(err.get("message")), err.get("details")), raw=body)
    if isinstance(body, dict) and "result" in body:
        return Reply(result=body["result"], raw=body)
    raise RoostError(f"not a Roost reply: {body!r}")


def describe(reply: Reply) -> str:
    """A reply as one line for a person: the result, or the error's code and message (and details)."""
    from rich.pretty import pretty_repr

    if reply.error is not None:
        return f"error {reply.error.code}: {reply.error.message}" + (
            f"\n  details: {pretty_repr(reply.error.details)}" if reply.error.details else ""
        )
    return pretty_repr(reply.result)


class RequestClient:
    """Sends requests and waits for their replies over one MQTT connection."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        mqtt_version: int = 5,
        device_id: str | None = None,
        reply_prefix: str = DEFAULT_REPLY_PREFIX,
        transport: str = "paho",
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.device_id = device_id or f"cli-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._v5 = mqtt_version == 5
        self.reply_topic = f"{reply_prefix}/{self.device_id}/{uuid.uuid4().hex[:12]}"
        options = ConnectOptions(
            host=host,
            port=port,
            client_id=f"roost-client-{uuid.uuid4().hex[:12]}",
            mqtt_version=mqtt_version,
            clean_start=True,
            session_expiry=0,
            username=username,
            password=password,
            ssl_context=ssl_context,
        )
        self._transport: Transport = create_transport(transport, options)
        self._waiters: dict[bytes, asyncio.Future[InboundMessage]] = {}
        self._listeners: dict[str, asyncio.Queue[InboundMessage]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RequestClient:
        await self._transport.connect(timeout=10.0)
        await self._transport.subscribe([self.reply_topic], qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._transport.close()

    async def _read(self) -> None:
        while True:
            message = await self._transport.messages.get()
            if message.qos:
                self._transport.ack(message)
            listener = next((q for f, q in self._listeners.items() if filter_matches(f, message.topic)), None)
            if listener is not None:
                listener.put_nowait(message)
                continue
            key = message.correlation_data
            if key is None:
                try:
                    body = codec.decode(message.payload, max(len(message.payload), 1))
                    cid = body.get("$cid") if isinstance(body, dict) else None
                except WireError:
                    cid = None
                key = cid.encode() if isinstance(cid, str) else cid
            waiter = self._waiters.pop(key, None) if key is not None else None
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    async def request(
        self,
        topic: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float = 5.0,
        qos: int = 1,
        expiry: int | None = None,
    ) -> Reply:
        """Send a request to ``topic`` and return its decoded reply, or raise :class:`NoReply`."""
        cid = uuid.uuid4().bytes
        body = dict(args or {})
        if not self._v5:
            body["$cid"] = cid
            body["$rt"] = self.reply_topic
        waiter: asyncio.Future[InboundMessage] = asyncio.get_running_loop().create_future()
        self._waiters[cid] = waiter
        self._transport.publish(
            OutboundMessage(
                topic,
                codec.encode(body) if body else b"",
                qos,
                correlation_data=cid if self._v5 else None,
                response_topic=self.reply_topic if self._v5 else None,
                message_expiry=expiry,
            )
        )
        try:
            message = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise NoReply(f"no reply from {topic!r} within {timeout:g} s") from None
        finally:
            self._waiters.pop(cid, None)
        return decode_reply(message.payload)

    async def listen(self, topic_filter: str) -> asyncio.Queue[InboundMessage]:
        """Subscribe to ``topic_filter``; its messages go to the returned queue."""
        queue: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._listeners[topic_filter] = queue
        await self._transport.subscribe([topic_filter], qos=1)
        return queue

    def publish_event(self, topic: str, args: dict[str, Any], qos: int = 1) -> None:
        """Publish a request that asks for no reply (an event)."""
        self._transport.publish(OutboundMessage(topic, codec.encode(args), qos))

    async def drain(self) -> None:
        """Wait until published QoS 1 messages are acknowledged."""
        await self._transport.drain(timeout=5.0)
