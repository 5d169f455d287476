"""The transport interface: what the gateway needs from an MQTT client.

Implementations hand inbound messages to an :class:`asyncio.Queue` owned by the
event loop and never do work in their network callbacks. The rest of the
gateway speaks only these types.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Not frozen: building a frozen dataclass costs ~1.5 µs more, on every request.
log = logging.getLogger(__name__)


class DrainWaiters:
    """The ``drain()`` calls of a transport waiting until no QoS 1/2 publish is outstanding."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def __bool__(self) -> bool:
        return bool(self._waiters)

    async def wait(self, timeout: float, outstanding: Callable[[], int]) -> None:
        """Return once :meth:`wake` is called, or after ``timeout`` with a warning; at once if nothing is out."""
        if not outstanding():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            log.warning("%d publishes still unacknowledged after %.1f s", outstanding(), timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def wake(self) -> None:
        """Everything is acknowledged: release every waiting ``drain()``."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()


@dataclass(slots=True)
class InboundMessage:
    """A PUBLISH received from the broker."""

    topic: str
    payload: bytes
    qos: int
    received_at: float  # time.monotonic() when the transport saw it
    response_topic: str | None = None
    correlation_data: bytes | None = None
    message_expiry: int | None = None  # seconds left, as the broker delivered it
    retain: bool = False
    ack_token: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A PUBLISH the gateway (or a client) sends."""

    topic: str
    payload: bytes
    qos: int = 0
    correlation_data: bytes | None = None
    response_topic: str | None = None
    message_expiry: int | None = None


MAX_STRIKES = 3
"""Connections in a row the broker ended while a publish was unacknowledged before the transport gives it up.

A broker disconnects a client for a packet it refuses (a topic it does not accept, a packet over
its Maximum Packet Size): resent on every reconnect, such a publish would keep the gateway off the
broker for every device. The gateway validates what it publishes, so this is the safety net.
A broker going down cleanly (DISCONNECT "server shutting down"), a keepalive timeout and the
gateway's own close do not count.
"""
NOT_REFUSALS = frozenset({0x8B, 0x8D, 0x8E})
"""DISCONNECT reason codes that say nothing against what the gateway sent (no strike, :data:`MAX_STRIKES`):
the server shutting down, a keepalive timeout, another client taking the session over."""

MessageHandler = Callable[[InboundMessage], None]
#: Told, on the event loop, of a publish the transport gave up on: the message and why.
GiveUp = Callable[[OutboundMessage, str], None]
#: Called on the event loop once the broker has acknowledged a publish (PUBACK, or PUBCOMP for QoS 2).
Confirmation = Callable[[], None]


@dataclass(slots=True)
class LinkState:
    """The broker connection as health checks and metrics see it."""

    connected: bool = False  # a CONNACK accepted and the connection not lost since
    connects: int = 0  # accepted CONNACKs so far: reconnects are ``connects - 1``


class Transport(abc.ABC):
    """An MQTT connection driven by the gateway's event loop.

    Received messages go, in order of arrival and always on the event loop, to
    the handler given to :meth:`set_handler`, or else to the ``messages`` queue.
    A handler must only hand the message off (the dispatcher submits it to an
    executor); it saves the queue's extra event-loop turn on every request.
    """

    #: Messages received from the broker, in order of arrival (when no handler is set).
    messages: asyncio.Queue[InboundMessage]
    _handler: MessageHandler | None = None
    _link: LinkState | None = None
    #: Told of a QoS 1/2 publish given up after :data:`MAX_STRIKES` (its confirmation has run too).
    on_given_up: GiveUp | None = None

    def give_up(self, message: OutboundMessage, why: str) -> None:
        """Report a publish this transport will not send again (it may be what the broker keeps refusing)."""
        log.error("gave up a publish to %r: %s", message.topic[:200], why)
        if self.on_given_up is not None:
            self.on_given_up(message, why)

    @property
    def link(self) -> LinkState:
        """Whether the broker connection is up and how often it came up (written by the transport)."""
        if self._link is None:
            self._link = LinkState()
        return self._link

    def set_handler(self, handler: MessageHandler | None) -> None:
        """Deliver received messages to ``handler`` instead of the ``messages`` queue."""
        self._handler = handler

    def deliver(self, message: InboundMessage) -> None:
        """Hand ``message`` to the handler or the queue (call on the event loop)."""
        handler = self._handler
        if handler is not None:
            handler(message)
        else:
            self.messages.put_nowait(message)

    @abc.abstractmethod
    async def connect(self, timeout: float) -> None:
        """Connect (retrying with backoff up to ``timeout`` seconds) or raise ``BrokerUnreachable``."""

    @abc.abstractmethod
    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Subscribe to ``filters`` (kept across reconnects) or raise ``SubscriptionRefused``."""

    @abc.abstractmethod
    def publish(self, message: OutboundMessage, on_confirmed: Confirmation | None = None) -> None:
        """Queue ``message`` for sending; never blocks.

        ``on_confirmed`` runs on the event loop when the broker has acknowledged the
        message (at once for QoS 0, or when the broker refused it: nothing is left to retry).
        """

    @abc.abstractmethod
    def ack(self, message: InboundMessage) -> None:
        """Acknowledge a QoS 1/2 ``message`` to the broker; call in order of arrival."""

    @abc.abstractmethod
    async def drain(self, timeout: float) -> None:
        """Wait until queued QoS 1/2 publishes are acknowledged by the broker, up to ``timeout``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect cleanly."""

    @property
    def broker_max_packet_size(self) -> int | None:
        """The largest packet the broker takes from the gateway (its CONNACK's Maximum Packet Size); None: no limit
        known (MQTT 3.1.1 has none to tell: there the broker's own ``max_packet_size`` must fit the replies)."""
        return None

    @property
    def outbound_backlog(self) -> int:
        """QoS 1/2 publishes the broker has not acknowledged yet: in flight, or waiting for a slot."""
        return 0

    @property
    @abc.abstractmethod
    def protocol_version(self) -> int:
        """5 or 4 (MQTT 3.1.1)."""
