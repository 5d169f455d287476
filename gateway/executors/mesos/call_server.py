"""The executor's end of the direct channel: receive calls, run them on warm workers, send results back.

The executor connects to the gateway (address and token from its
configuration), says ``HELLO``, and then serves what arrives: each ``CALL`` is
submitted to a :class:`~gateway.executors.local.executor.LocalExecutor`, the gateway's own
warm-worker executor, so timeouts, crashed workers and pipelining behave exactly
as they do locally and replies carry the same codes and messages. Each read is
acknowledged with one ``ACK``; frames produced in one event-loop turn go out in
one write.

A call id runs at most once: ids running are remembered, and recent results are
kept, so a call the gateway sends again after a reconnect is not run twice, and
a ``RESUME`` gets the kept result. When the connection breaks, the executor
reconnects with a short backoff; if the gateway stays unreachable for
``orphan_timeout`` seconds, :meth:`CallServer.run` returns and the executor ends
its task: an executor without its gateway only holds resources.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import time
from collections import OrderedDict
from typing import Any

from gateway.errors import InternalError, Unavailable, WireError
from gateway.executors import framing
from gateway.executors.base import Call
from gateway.executors.framing import ReplyKind
from gateway.executors.local.executor import LocalExecutor
from gateway.executors.mesos import wire
from gateway.executors.mesos.tasks import ExecutorConfig
from gateway.registry import FunctionSpec

log = logging.getLogger(__name__)

KEEP_RESULTS_BYTES = 16 << 20  # recent results kept for resends after a reconnect
_MAX_CALL_FRAME = 1 << 30  # the gateway is trusted; this only catches a corrupted stream


class CallServer:
    """Serves calls from the gateway until told to stop, rejected, or orphaned."""

    def __init__(
        self, config: ExecutorConfig, local: LocalExecutor, specs: dict[str, FunctionSpec], hello: dict[str, Any]
    ) -> None:
        self._config = config
        self._local = local
        self._specs = specs
        self._hello = hello
        self._running: set[int] = set()
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._kept_bytes = 0
        self._outbox: list[bytes] = []
        self._flush_soon = False
        self._connection: _Connection | None = None
        self._stopping = False
        self._rejected: str | None = None
        self.welcomed = asyncio.Event()

    async def run(self) -> str:
        """Connect, serve, reconnect; return why serving ended."""
        host, _, port = self._config.channel.rpartition(":")
        loop = asyncio.get_running_loop()
        unreachable_since, delay = time.monotonic(), 0.05
        while not self._stopping:
            closed: asyncio.Future[None] = loop.create_future()
            try:
                await loop.create_connection(functools.partial(_Connection, self, closed), host, int(port))
            except OSError as exc:
                if time.monotonic() - unreachable_since > self._config.orphan_timeout:
                    return (
                        f"the gateway at {self._config.channel} was unreachable for {self._config.orphan_timeout:g} s"
                    )
                log.debug("cannot reach the gateway at %s: %s", self._config.channel, exc)
                await asyncio.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, 2.0)
                continue
            await closed
            if self._rejected is not None:
                return f"the gateway refused this executor: {self._rejected}"
            unreachable_since, delay = time.monotonic(), 0.05
            if not self._stopping:
                log.warning("lost the channel to the gateway at %s; reconnecting", self._config.channel)
        return "stopped"

    def drain(self) -> None:
        """Tell the gateway to send no more calls."""
        self._send(wire.control(wire.Kind.DRAIN))

    async def close(self) -> None:
        """Send what is pending and close the connection."""
        self._stopping = True
        self._flush()
        if self._connection is not None:
            self._connection.close()

    # What a connection reports.

    def attached(self, connection: _Connection) -> None:
        """A new connection: say who we are."""
        self._connection = connection
        connection.write(wire.json_frame(wire.Kind.HELLO, self._hello))

    def detached(self, connection: _Connection) -> None:
        """The connection closed."""
        if self._connection is connection:
            self._connection = None

    def frames(self, connection: _Connection, bodies: list[bytes]) -> None:
        """Handle one read's frames, then acknowledge the calls among them."""
        calls = 0
        for body in bodies:
            kind = body[0]
            if kind == wire.Kind.CALL:
                calls += 1
                self._call(body)
            elif kind == wire.Kind.RESUME:
                self._resume(wire.parse_resume(body))
            elif kind == wire.Kind.WELCOME:
                connection.welcomed = True
                self.welcomed.set()
                self._flush_soon = True  # results kept while we were away go out now
                asyncio.get_running_loop().call_soon(self._flush)
            elif kind == wire.Kind.REJECT:
                self._rejected = body[1:].decode("utf-8", "replace")
                connection.close()
                return
        if calls:
            connection.received += calls
            self._send(wire.ack_frame(connection.received))

    def tick(self) -> None:
        """Ping a quiet gateway; drop a silent connection (called every heartbeat)."""
        connection = self._connection
        if connection is None:
            return
        now = time.monotonic()
        if now - connection.last_heard > self._config.channel_timeout:
            log.warning("nothing heard from the gateway for %g s", self._config.channel_timeout)
            connection.close()
        elif now - connection.last_sent >= self._config.heartbeat:
            self._send(wire.control(wire.Kind.PING))

    # Calls and results.

    def _call(self, body: bytes) -> None:
        call_id, timeout, left, pickled = wire.parse_call(body)
        if call_id in self._running:
            return  # sent again after a reconnect; its result will come
        kept = self._kept.get(call_id)
        if kept is not None:
            self._send(kept)
            return
        try:
            key, kwargs = pickle.loads(pickled)
        except Exception as exc:  # e.g. an argument's class cannot be imported here
            self._reply(call_id, InternalError(f"the executor cannot read the call's arguments: {exc}"))
            return
        spec = self._specs.get(key)
        if spec is None:
            self._reply(call_id, InternalError(f"function {key!r} is not loaded in the executor"))
            return
        expires_at = None if left is None else time.monotonic() + left
        try:
            future = self._local.submit(Call(spec, kwargs, timeout, expires_at))
        except WireError as exc:  # overloaded or stopping
            self._reply(call_id, exc)
            return
        self._running.add(call_id)
        future.add_done_callback(functools.partial(self._finished, call_id))

    def _finished(self, call_id: int, future: asyncio.Future[bytes]) -> None:
        self._running.discard(call_id)
        if future.cancelled():
            self._reply(call_id, Unavailable("the executor stopped before the call finished"))
            return
        error = future.exception()
        if error is None:
            self._reply(call_id, future.result())
        elif isinstance(error, WireError):
            self._reply(call_id, error)
        else:
            log.error("call %d failed in the executor", call_id, exc_info=error)
            self._reply(call_id, InternalError("the executor failed to run the call"))

    def _reply(self, call_id: int, outcome: bytes | WireError) -> None:
        if isinstance(outcome, bytes):
            frame = wire.result_frame(call_id, ReplyKind.OK, 0, outcome)
        else:
            frame = wire.result_frame(call_id, ReplyKind.ERROR, 0, framing.error_payload(outcome.code, outcome.message))
        self._keep(call_id, frame)
        self._send(frame)

    def _resume(self, call_ids: list[int]) -> None:
        for call_id in call_ids:
            kept = self._kept.get(call_id)
            if kept is not None:
                self._send(kept)
            elif call_id not in self._running:
                self._reply(call_id, Unavailable("the executor lost the call's result"))

    def _keep(self, call_id: int, frame: bytes) -> None:
        self._kept[call_id] = frame
        self._kept_bytes += len(frame)
        while self._kept_bytes > KEEP_RESULTS_BYTES and self._kept:
            _, old = self._kept.popitem(last=False)
            self._kept_bytes -= len(old)

    def _send(self, frame: bytes) -> None:
        self._outbox.append(frame)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        connection = self._connection
        if connection is None or not connection.welcomed or not self._outbox:
            return  # kept until the next WELCOME; the gateway asks again for what matters
        connection.write(b"".join(self._outbox))
        self._outbox.clear()


class _Connection(asyncio.Protocol):
    """One TCP connection to the gateway."""

    def __init__(self, server: CallServer, closed: asyncio.Future[None]) -> None:
        self._server = server
        self._closed = closed
        self._reader = framing.FrameReader(_MAX_CALL_FRAME)
        self._transport: asyncio.Transport | None = None
        self.welcomed = False
        self.received = 0  # CALL frames read on this connection
        self.last_heard = self.last_sent = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Say HELLO."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.attached(self)

    def data_received(self, data: bytes) -> None:
        """Cut frames and hand them over."""
        self.last_heard = time.monotonic()
        try:
            bodies = self._reader.feed(data)
        except framing.FrameError as exc:
            log.error("bad frame from the gateway: %s", exc)
            self.close()
            return
        if bodies:
            self._server.frames(self, bodies)

    def connection_lost(self, exc: Exception | None) -> None:
        """Report once."""
        self._transport = None
        self._server.detached(self)
        if not self._closed.done():
            self._closed.set_result(None)

    def write(self, data: bytes) -> None:
        """Write without blocking."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self.last_sent = time.monotonic()

    def close(self) -> None:
        """Close; ``connection_lost`` follows."""
        if self._transport is not None:
            self._transport.close()
