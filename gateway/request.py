"""One request on its way through the dispatcher, and the queue that settles it.

A :class:`Request` carries what every step needs: the message, the function its topic
calls and the parameters (with the namespace's ``device_id``), the reply address once
parsed, the deadline, and its durability: the sequence number under which the durable
queue stored it, and that queue. A request the durable queue does not hold (QoS 0, or no
durable queue) goes through :class:`VolatileQueue`, which has the same interface and does
at once what the durable queue does after a commit: the dispatcher runs one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.durable.queue import Duplicate
from gateway.protocol import ReplyAddress
from gateway.registry import FunctionSpec
from gateway.transport.base import InboundMessage, OutboundMessage, Transport

log = logging.getLogger(__name__)


class RequestQueue(Protocol):
    """Where a request is settled: :class:`~gateway.durable.queue.DurableQueue` or :class:`VolatileQueue`."""

    def claim(self, seq: int, key: bytes) -> Duplicate | None:
        """Register the request's identity; a :class:`Duplicate` when an earlier copy holds it."""
        ...

    def start_in_order(self, seq: int, start: Callable[[], None], record: bool) -> None:
        """Call ``start`` in order of arrival (``record``: recorded as started first)."""
        ...

    def finish(self, seq: int, reply: OutboundMessage | None) -> None:
        """The request is settled: publish ``reply`` (``None``: nothing to send)."""
        ...


class VolatileQueue:
    """The durable queue's interface for requests nothing stores: start at once, publish at once."""

    def __init__(self, transport: Transport, on_failed: Callable[[], None]) -> None:
        self._transport = transport
        self._on_failed = on_failed  # a publish the transport refused (counted by the caller)

    def claim(self, seq: int, key: bytes) -> Duplicate | None:
        """Nothing is remembered: no duplicate."""
        return None

    def start_in_order(self, seq: int, start: Callable[[], None], record: bool) -> None:
        """Nothing to wait for: start now."""
        start()

    def finish(self, seq: int, reply: OutboundMessage | None) -> None:
        """Publish ``reply`` now."""
        if reply is None:
            return
        try:
            self._transport.publish(reply)
        except (ValueError, TypeError, OSError) as exc:
            log.warning("could not publish to %r: %s", reply.topic, exc)
            self._on_failed()

    def publish(self, message: OutboundMessage) -> None:
        """Publish ``message`` now (events and dead letters, which no request's queue holds, go this way too)."""
        self.finish(0, message)


@dataclass(slots=True, eq=False)
class Request:
    """A request from its arrival until it is settled (answered, dropped, or ended without a reply)."""

    message: InboundMessage
    topic: str  # the topic it arrived on (message.topic)
    queue: RequestQueue  # where it is settled: the durable queue, or the volatile one
    spec: FunctionSpec | None = None  # the function its topic calls; None when none does
    params: dict[str, str] = field(default_factory=dict)  # the topic's parameters, with the namespace's device_id
    device_id: str | None = None  # the device that sent it (params["device_id"]), if the topic names one
    seq: int = 0  # its number in the durable queue (0 in the volatile one)
    started: bool = False  # an earlier run had started it when the gateway stopped (it may have run)
    reply: ReplyAddress | None = None  # where its reply goes, once parsed; None for an event
    args: Mapping[str, Any] | None = None  # its arguments, once parsed
    expires_at: float | None = None  # monotonic deadline after which it is not run
    share_device: str | None = None  # the device whose share of the workers its call holds (None: none)

    @property
    def key(self) -> str:
        """What its outcome is counted against: the function's template, "" when none matched."""
        return self.spec.key if self.spec is not None else ""

    def end(self, reply: OutboundMessage | None = None) -> None:
        """Settle it: publish ``reply`` (through its queue: the durable one stores it first), or just end it."""
        self.queue.finish(self.seq, reply)
