"""Liveness, readiness and the operations endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

* ``/healthz``: 200 while the process runs its event loop (it answers from it);
* ``/readyz``: 200 when the gateway is subscribed and serving, connected to the
  broker and every executor can run a call; else 503 with the reasons, one per line;
* ``/metrics``: the Prometheus text of :mod:`gateway.ops.metrics`.

The server is a few lines of HTTP/1.1 on the gateway's own event loop (one
request per connection, ``Connection: close``): it reads the gateway's state
where that state lives, without threads or locks, and a probe that cannot get
an answer is itself a sign the loop is stuck. It binds 127.0.0.1 unless
configured otherwise and has no authentication.

It shares the gateway's file descriptors, so nothing a client does may use them
up: at most ``metrics.max_connections`` connections are open at a time (beyond
that it does not accept, and new clients wait in the kernel's listen backlog),
each has ``metrics.idle_timeout`` seconds to send its request and take the answer,
and a failing ``accept`` (say, the process is out of descriptors) is retried after
a pause and logged at most once a minute with a count. ``asyncio.start_server``
offers none of that: it accepts whatever arrives, and reports every failed accept
through the loop's exception handler, a traceback each.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.ops.metrics import GatewayMetrics

from gateway.ops.view import GatewayView, readiness_problems

log = logging.getLogger(__name__)

ACCEPT_RETRY = 0.5  # seconds before accepting again after a failure; the client waits in the backlog meanwhile
ACCEPT_ERROR_INTERVAL = 60.0  # seconds between two log lines about failed accepts
_BACKLOG = 100
_MAX_HEAD = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class AcceptErrors:
    """Failed accepts: counted, and logged at most once per ``interval`` with how many there were."""

    def __init__(self, interval: float = ACCEPT_ERROR_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.total = 0
        self._clock = clock
        self._unlogged = 0
        self._quiet_until = float("-inf")

    def note(self, error: OSError) -> None:
        """Count ``error``; log it unless a line went out less than an interval ago."""
        self.total += 1
        self._unlogged += 1
        now = self._clock()
        if now < self._quiet_until:
            return
        log.error(
            "the operations endpoint cannot accept connections: %s (%d failed accepts since the last such line;"
            " retrying every %g s, logged at most every %g s)",
            error,
            self._unlogged,
            ACCEPT_RETRY,
            self.interval,
        )
        self._unlogged = 0
        self._quiet_until = now + self.interval


class OperationsEndpoint:
    """The HTTP server of ``/healthz``, ``/readyz`` and ``/metrics`` for one gateway (limits: the module docstring)."""

    def __init__(self, gateway: GatewayView, host: str, port: int) -> None:
        self._gateway = gateway
        self._host = host
        self.port = port  # the bound port once started (useful with port 0)
        self.max_connections = gateway.settings.metrics.max_connections
        self.idle_timeout = gateway.settings.metrics.idle_timeout
        self.connections = 0  # open now
        self.accept_errors = AcceptErrors()
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._serving: dict[asyncio.Task[None], socket.socket] = {}
        self._slots = asyncio.Semaphore(self.max_connections)
        self._metrics: GatewayMetrics | None = None

    async def start(self) -> None:
        """Listen; raise ``OSError`` when the address is taken."""
        from gateway.ops.metrics import GatewayMetrics

        self._metrics = GatewayMetrics(self._gateway)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                listener = socket.socket(family, kind, proto)
                self._listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind((address[0], self.port, *address[2:]))
                self.port = listener.getsockname()[1]  # with port 0: every address on the port the first got
                listener.listen(_BACKLOG)
                listener.setblocking(False)
        except OSError:
            for listener in self._listeners:
                listener.close()
            self._listeners = []
            raise
        self._accepting = [loop.create_task(self._accept(listener)) for listener in self._listeners]
        log.info("operations endpoint on http://%s:%d (/healthz /readyz /metrics)", self._host, self.port)

    async def close(self) -> None:
        """Stop listening and close open connections."""
        tasks = [*self._accepting, *self._serving]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        self._accepting, self._listeners = [], []

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # at the cap, new clients wait in the backlog
            try:
                connection, _ = await loop.sock_accept(listener)
            except ConnectionAbortedError:  # the client gave up before we took it
                self._slots.release()
                continue
            except OSError as exc:  # EMFILE and the like: the client stays in the backlog
                self._slots.release()
                self.accept_errors.note(exc)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            self.connections += 1
            task = loop.create_task(self._serve(connection))
            self._serving[task] = connection
            task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._serving.pop(task).close()  # closed already, unless the task was cancelled before it ran
        self.connections -= 1
        self._slots.release()

    async def _serve(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            connection.setblocking(False)
            async with asyncio.timeout(self.idle_timeout):
                head = await self._read_head(connection)
                if head is None:
                    return  # a client that does not speak HTTP gets nothing
                status, content_type, body, method = self._respond(head.split(b"\r\n", 1)[0])
                head_out = (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                )
                await loop.sock_sendall(connection, head_out.encode("ascii") + (b"" if method == "HEAD" else body))
        except (TimeoutError, ConnectionError):
            pass  # idle too long, or gone; nothing to tell it
        except Exception:
            log.exception("the operations endpoint failed to answer a request")
        finally:
            connection.close()

    @staticmethod
    async def _read_head(connection: socket.socket) -> bytes | None:
        """The request head, up to the blank line; ``None`` if the client closes first or sends too much."""
        loop = asyncio.get_running_loop()
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > _MAX_HEAD:
                return None
            chunk = await loop.sock_recv(connection, 4096)
            if not chunk:
                return None
            data += chunk
        return data

    def _respond(self, request_line: bytes) -> tuple[int, str, bytes, str]:
        """Status, content type, body and method for one request line."""
        text = "text/plain; charset=utf-8"
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3:
            return 400, text, b"bad request\n", "GET"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, text, b"only GET and HEAD\n", "GET"
        if target == "/healthz":
            return 200, text, b"ok\n", method
        if target == "/readyz":
            problems = readiness_problems(self._gateway)
            if problems:
                return 503, text, ("\n".join(problems) + "\n").encode(), method
            return 200, text, b"ready\n", method
        if target == "/metrics" and self._metrics is not None:
            from gateway.ops.metrics import CONTENT_TYPE

            return 200, CONTENT_TYPE, self._metrics.render(), method
        return 404, text, b"not found: try /healthz, /readyz or /metrics\n", method
