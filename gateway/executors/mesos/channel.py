"""The gateway's end of the direct channel: a TCP server that executors connect back to.

An executor learns the address and a per-launch token from its environment
(see :mod:`gateway.executors.mesos.tasks`) and opens one connection; its first
frame is ``HELLO`` with that token, so a stray or stale executor (one launched
by an earlier gateway, say) is refused and nothing is sent to it. After that the
connection carries calls one way and results, acks and pings the other
(:mod:`gateway.executors.mesos.wire`). What happens to calls is not decided here:
a :class:`ChannelListener` (the :class:`~gateway.executors.mesos.remote_pool.RemotePool`)
is told about hellos, frames and losses, always on the event loop.

The protocol is an ``asyncio.Protocol``, not streams: a call's frame is written
in the turn that dispatches it, and every frame of one read is handled in one go.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.executors import framing
from gateway.executors.mesos import wire

if TYPE_CHECKING:
    from gateway.executors.call_queue import Pending

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0  # seconds a new connection has to say who it is
_REPLY_ROOM = 1 << 16  # a result frame may exceed max_result_bytes by its header or an error message


@dataclass(slots=True, eq=False)
class ExecutorLink:
    """The gateway's view of one executor it launched: who it is, its connection, the calls it holds."""

    executor_id: str
    token: str
    agent_id: str = ""
    connection: ChannelConnection | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what its HELLO said (pid, host, workers)
    capacity: int = 0  # calls it may hold at once: its workers × their pipeline
    draining: bool = False
    outstanding: dict[int, Pending] = field(default_factory=dict)  # sent, not answered
    unacked: deque[tuple[int, Pending]] = field(default_factory=deque)  # (sequence, call) on this connection
    sent: int = 0  # CALL frames sent on this connection
    outbox: list[bytes] = field(default_factory=list)  # frames for this dispatch's write
    lost_timer: asyncio.TimerHandle | None = None
    dedicated: bool = False  # an isolated call's own executor: it gets that call and no other
    reserved: Pending | None = None  # that call, until it is sent
    last_busy: float = 0.0  # monotonic time it last held a call (the elastic pool stops idle ones)

    @property
    def usable(self) -> bool:
        """Connected and taking calls."""
        return self.connection is not None and not self.draining

    def send(self, data: bytes) -> None:
        """Write on the current connection, if any."""
        if self.connection is not None:
            self.connection.send(data)


class ChannelListener(Protocol):
    """What the channel reports, on the event loop."""

    def link_for(self, executor_id: str) -> ExecutorLink | None:
        """The link of a launched executor, if the gateway knows it."""

    def connected(self, link: ExecutorLink, connection: ChannelConnection) -> None:
        """``link``'s executor said a valid HELLO on ``connection``."""

    def frames(self, link: ExecutorLink, bodies: list[bytes]) -> None:
        """Frames from ``link``'s executor, in order."""

    def disconnected(self, link: ExecutorLink, connection: ChannelConnection) -> None:
        """``connection``, which was ``link``'s, is closed."""


class ChannelConnection(asyncio.Protocol):
    """One executor's TCP connection."""

    def __init__(self, listener: ChannelListener, max_result_bytes: int, welcome: dict[str, Any]) -> None:
        self._listener = listener
        self._reader = framing.FrameReader(max_result_bytes + _REPLY_ROOM)
        self._welcome = welcome
        self._transport: asyncio.Transport | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self.link: ExecutorLink | None = None
        self.peer = "?"
        self.last_heard = self.last_sent = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Wait for the HELLO."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._hello_timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT, self._no_hello)

    def data_received(self, data: bytes) -> None:
        """Cut frames; the first must be a valid HELLO."""
        self.last_heard = time.monotonic()
        try:
            bodies = self._reader.feed(data)
        except framing.FrameError as exc:
            self.close(f"bad frame: {exc}")
            return
        if self.link is None and bodies:
            if not self._hello(bodies[0]):
                return
            bodies = bodies[1:]
        if bodies and self.link is not None:
            self._listener.frames(self.link, bodies)

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the listener, once."""
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self._transport = None
        link, self.link = self.link, None
        if link is not None and link.connection is self:
            link.connection = None
            self._listener.disconnected(link, self)

    def send(self, data: bytes) -> None:
        """Write without blocking (asyncio buffers what the socket does not take)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self.last_sent = time.monotonic()

    def close(self, why: str, level: int = logging.WARNING) -> None:
        """Close the connection; the listener hears of it through ``connection_lost``."""
        if self._transport is not None and not self._transport.is_closing():
            who = self.link.executor_id if self.link is not None else self.peer
            log.log(level, "closing the channel to executor %s: %s", who, why)
            self._transport.close()

    def _hello(self, body: bytes) -> bool:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        try:
            if body[0] != wire.Kind.HELLO:
                raise ValueError("the first frame is not HELLO")
            hello = wire.parse_json(body)
            executor_id, token = str(hello["executor_id"]), str(hello["token"])
        except (ValueError, KeyError, IndexError) as exc:
            self._reject(f"bad HELLO: {exc}")
            return False
        link = self._listener.link_for(executor_id)
        # compare_digest: the token is the executor's only credential.
        if link is None or not hmac.compare_digest(link.token.encode(), token.encode()):
            self._reject(f"executor {executor_id!r} was not launched by this gateway")
            return False
        if link.connection is not None:  # the executor reconnected before we noticed the old connection die
            old = link.connection
            old.link, link.connection = None, None
            old.close("replaced by a new connection")
            self._listener.disconnected(link, old)
        link.info = hello
        self.link = link
        self.send(wire.json_frame(wire.Kind.WELCOME, self._welcome))
        self._listener.connected(link, self)
        return True

    def _reject(self, why: str) -> None:
        log.warning("refusing a channel connection from %s: %s", self.peer, why)
        self.send(wire.control(wire.Kind.REJECT, why.encode()))
        if self._transport is not None:
            self._transport.close()

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self.link is None:
            self.close(f"no HELLO within {HELLO_TIMEOUT:g} s")


class ChannelServer:
    """Listens for executors on ``host:port`` (port 0: any free port)."""

    def __init__(self, listener: ChannelListener, host: str, port: int, max_result_bytes: int) -> None:
        self._listener = listener
        self._host, self._port = host, port
        self._max_result = max_result_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[ChannelConnection] = set()
        self.welcome: dict[str, Any] = {}  # settings every executor gets in WELCOME

    @property
    def port(self) -> int:
        """The port actually listened on."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and listen."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, self._host, self._port)

    def _connection(self) -> ChannelConnection:
        connection = ChannelConnection(self._listener, self._max_result, self.welcome)
        self._connections.add(connection)
        return connection

    def live(self) -> list[ChannelConnection]:
        """Connections still open."""
        self._connections = {c for c in self._connections if c._transport is not None}
        return list(self._connections)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for connection in self.live():
            connection.close("the gateway is stopping", logging.INFO)
        if self._server is not None:
            await self._server.wait_closed()
