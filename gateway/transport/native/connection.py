"""One TCP (or TLS) connection to the broker as an asyncio ``Protocol``: packets in, batched bytes out.

``data_received`` decodes every complete packet of a chunk at once and hands
the list to the transport. Writes are buffered and flushed once per event-loop
turn (``loop.call_soon``), or at the end of ``data_received`` for what handling
a chunk produced, so the acks and replies produced by one batch of requests
leave in one ``write`` — one syscall, and with TCP_NODELAY one segment
instead of many small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

import mqtt5

from gateway.transport.native.reader import MalformedPacket, PacketReader

log = logging.getLogger(__name__)


class Connection(asyncio.Protocol):
    """The byte level of one connection; the transport above owns the MQTT session."""

    def __init__(
        self,
        on_packets: Callable[[Connection, list[mqtt5.Packet], float], None],
        on_lost: Callable[[Connection, Exception | None], None],
        max_packet_size: int | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._on_packets = on_packets
        self._on_lost = on_lost
        self._reader = PacketReader(max_packet_size)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._receiving = False
        #: The broker's CONNACK (or the reason there is none).
        self.handshake: asyncio.Future[mqtt5.ConnAckPacket] = loop.create_future()
        #: Done when the connection is gone.
        self.closed: asyncio.Future[None] = loop.create_future()
        now = time.monotonic()
        #: ``time.monotonic()`` of the last bytes received, written and PINGREQ sent (for keepalive).
        self.last_rx = self.last_tx = self.last_ping = now
        #: Whether the broker ended the connection for a reason of its own (it may have refused what we
        #: sent); cleared where the gateway ends it, or the broker says it is going down.
        self.broker_ended = True

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; disable Nagle so small acks and replies are not delayed."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not a TCP socket (unix socket in a test)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        """Decode all complete packets and hand them over; a bad packet resets the connection."""
        now = time.monotonic()
        self.last_rx = now
        try:
            packets = self._reader.feed(data)
            # Acks and replies produced while handling this chunk leave in one write at its end.
            self._receiving = True
            try:
                self._on_packets(self, packets, now)
            finally:
                self._receiving = False
            if self._out:
                self.flush()
        except MalformedPacket as exc:
            log.warning("protocol error from the broker, resetting the connection: %s", exc)
            self.broker_ended = False
            self.abort()
        except Exception:
            # A bug of ours must not kill the loop's reader; a fresh connection resynchronises the state.
            log.exception("failed to handle packets from the broker; resetting the connection")
            self.broker_ended = False
            self.abort()

    def eof_received(self) -> bool:
        """The broker closed its side: close ours too."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the transport, then resolve the futures waiting on this connection."""
        self._transport = None
        self._out.clear()
        self._on_lost(self, exc)
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionResetError(f"connection closed before CONNACK ({exc or 'EOF'})"))
            self.handshake.exception()  # retrieved here so an abandoned handshake does not log
        if not self.closed.done():
            self.closed.set_result(None)

    # -- writing ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue ``data``; everything queued in this loop turn is written together."""
        self._out.append(data)
        if not self._flush_scheduled and not self._receiving:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued in one call."""
        self._flush_scheduled = False
        out = self._out
        transport = self._transport
        if not out or transport is None or transport.is_closing():
            out.clear()
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        self.last_tx = time.monotonic()

    def close(self) -> None:
        """Flush, then close after the transport's buffer is written."""
        self.flush()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, discarding unwritten bytes."""
        if self._transport is not None:
            self._transport.abort()
