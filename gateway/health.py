"""Liveness, readiness and the operations endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

* ``/healthz``: 200 while the process runs its event loop (it answers from it);
* ``/readyz``: 200 when the gateway is subscribed and serving, connected to the
  broker and every executor can run a call; else 503 with the reasons, one per line;
* ``/metrics``: the Prometheus text of :mod:`gateway.metrics`.

The server is a few lines of HTTP/1.1 on the gateway's own event loop (one
request per connection, ``Connection: close``): it reads the gateway's state
where that state lives, without threads or locks, and a probe that cannot get
an answer is itself a sign the loop is stuck. It binds 127.0.0.1 unless
configured otherwise and has no authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0  # seconds a client gets to send its request head
_MAX_HEAD = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def readiness_problems(gateway: Gateway) -> list[str]:
    """Why the gateway is not ready to answer requests; empty when it is."""
    problems = []
    if not gateway.ready.is_set():
        problems.append("not serving: starting up or shutting down")
    if not gateway.transport.link.connected:
        problems.append("not connected to the broker")
    for name, executor in gateway.executors.items():
        problem = executor.problem
        if problem is not None:
            problems.append(f"executor {name}: {problem}")
    return problems


class OperationsEndpoint:
    """The HTTP server of ``/healthz``, ``/readyz`` and ``/metrics`` for one gateway."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self._gateway = gateway
        self._host = host
        self.port = port  # the bound port once started (useful with port 0)
        self._server: asyncio.Server | None = None
        self._metrics: GatewayMetrics | None = None

    async def start(self) -> None:
        """Listen; raise ``OSError`` when the address is taken."""
        from gateway.metrics import GatewayMetrics

        self._metrics = GatewayMetrics(self._gateway)
        self._server = await asyncio.start_server(self._serve, self._host, self.port, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("operations endpoint on http://%s:%d (/healthz /readyz /metrics)", self._host, self.port)

    async def close(self) -> None:
        """Stop listening and close open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return  # a client that does not speak HTTP gets nothing
            status, content_type, body, method = self._respond(head.split(b"\r\n", 1)[0])
            head_out = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            writer.write(head_out.encode("ascii") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        except Exception:
            log.exception("the operations endpoint failed to answer a request")
        finally:
            writer.close()

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
            from gateway.metrics import CONTENT_TYPE

            return 200, CONTENT_TYPE, self._metrics.render(), method
        return 404, text, b"not found: try /healthz, /readyz or /metrics\n", method
