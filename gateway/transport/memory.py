"""An in-memory transport for unit tests of the dispatcher: no broker, no network.

Tests put :class:`InboundMessage` objects on ``messages`` (or call the
dispatcher directly) and read what the gateway published from ``published``.
Integration tests use the real broker instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.transport.base import Confirmation, InboundMessage, OutboundMessage, Transport


class MemoryTransport(Transport):
    """Records publishes, acks and subscriptions in lists."""

    def __init__(self, version: int = 5) -> None:
        self.messages: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self.published: list[OutboundMessage] = []
        self.acked: list[InboundMessage] = []
        self.filters: list[str] = []
        self._version = version

    @property
    def protocol_version(self) -> int:
        """The MQTT version the test pretends to speak."""
        return self._version

    async def connect(self, timeout: float) -> None:
        """Nothing to connect to: counts as connected."""
        self.link.connected = True
        self.link.connects += 1

    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Record the filters."""
        self.filters.extend(filters)

    def publish(self, message: OutboundMessage, on_confirmed: Confirmation | None = None) -> None:
        """Record the message; it counts as confirmed at once."""
        self.published.append(message)
        if on_confirmed is not None:
            on_confirmed()

    def ack(self, message: InboundMessage) -> None:
        """Record the acknowledgement."""
        self.acked.append(message)

    async def drain(self, timeout: float) -> None:
        """Everything is sent at once."""

    async def close(self) -> None:
        """Nothing to close."""
