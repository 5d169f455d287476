"""A small asyncio HTTP/1.1 server: keep-alive request/response plus long-lived chunked streams.

Why not ``http.server`` or a framework: the Mesos APIs need responses that stay open forever
(the RecordIO event streams) next to ordinary keep-alive calls on other connections, all served
by one event loop so master and agents share state without locks. Handlers are synchronous:
they only change in-memory state and queue bytes, never block.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.mesos_standin import recordio

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

REASONS = {
    200: "OK",
    202: "Accepted",
    307: "Temporary Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    """One parsed request; header names are lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        """The body decoded as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    """A complete response with a body."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: object, status: int = 200) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(payload).encode(), "application/json")

    @classmethod
    def text(cls, status: int, message: str = "") -> Response:
        """A plain-text response (how Mesos reports malformed requests)."""
        return cls(status, message.encode())


class EventStream:
    """The open body of a chunked ``200`` response carrying RecordIO events."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._close_callbacks: list[Callable[[], None]] = []
        self.closed = False

    def send(self, event: dict[str, object]) -> None:
        """Queue one event (one record in one chunk); ignored once the stream is closed."""
        if not self.closed:
            self._writer.write(recordio.chunk(recordio.encode(event)))

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the stream ends, whoever ends it."""
        self._close_callbacks.append(callback)

    def close(self) -> None:
        """End the response properly (terminating chunk), then close the connection."""
        if not self.closed:
            self._writer.write(recordio.LAST_CHUNK)
        self._finish(abort=False)

    def abort(self) -> None:
        """Drop the TCP connection without ending the response (a broken network)."""
        self._finish(abort=True)

    def _finish(self, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if abort:
            self._writer.transport.abort()
        else:
            self._writer.close()
        for callback in self._close_callbacks:
            try:
                callback()
            except Exception:
                log.exception("stream close callback failed")


@dataclass
class StreamResponse:
    """Start a chunked event stream; ``on_open`` gets the stream right after the head is sent."""

    on_open: Callable[[EventStream], None]
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response | StreamResponse]


class HttpServer:
    """Serves one handler on one address; tracks connections so it can drop them all."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._streams: set[EventStream] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen (port 0 picks a free one; ``self.port`` tells which)."""
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every open connection, streams included."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for stream in list(self._streams):
            stream.abort()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        # Let connection handlers see the abort and return, rather than being cancelled at loop exit.
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if isinstance(request, Response):
                    _write_response(writer, request, close=True)
                    return
                try:
                    result = self._handler(request)
                except Exception:
                    log.exception("%s: handler failed for %s %s", self.name, request.method, request.path)
                    result = Response.text(500, "stand-in handler failed")
                if isinstance(result, StreamResponse):
                    await self._run_stream(reader, writer, result)
                    return
                close = request.headers.get("connection", "").lower() == "close" or result.status >= 500
                _write_response(writer, result, close=close)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            if handler is not None:
                self._handlers.discard(handler)
            if not writer.is_closing():
                writer.close()

    async def _run_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, start: StreamResponse
    ) -> None:
        """Send the head, hand the stream to its owner, then wait until either side ends it."""
        head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **start.headers}
        writer.write(_head(200, head))
        stream = EventStream(writer)
        self._streams.add(stream)
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def mark_ended() -> None:
            if not ended.done():
                ended.set_result(None)

        stream.on_close(mark_ended)
        start.on_open(stream)
        # Clients never send anything after the request, so a read only ends on EOF or reset.
        reading: asyncio.Future[bytes] = asyncio.ensure_future(reader.read(4096))
        try:
            watched: list[asyncio.Future[Any]] = [reading, ended]
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reading.cancel()
            self._streams.discard(stream)
            stream.abort()


async def _read_request(reader: asyncio.StreamReader) -> Request | Response | None:
    """Read one request; None on a clean EOF between requests, a Response for a bad request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if error.partial.strip():
            return Response.text(400, "incomplete request head")
        return None
    except asyncio.LimitOverrunError:
        return Response.text(400, "request head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return Response.text(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Response.text(411, "chunked request bodies are not supported by the stand-in")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        return Response.text(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        return Response.text(413, "body too large")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(parts[1])
    return Request(parts[0], url.path, dict(parse_qsl(url.query)), headers, body)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _write_response(writer: asyncio.StreamWriter, response: Response, close: bool) -> None:
    headers = {"Content-Length": str(len(response.body)), **response.headers}
    if response.body:
        headers["Content-Type"] = response.content_type
    if close:
        headers["Connection"] = "close"
    writer.write(_head(response.status, headers) + response.body)
