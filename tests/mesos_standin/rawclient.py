"""A bare scheduler-API client for tests that need what pymesos hides or does automatically.

pymesos reconnects at once after an ERROR or a dropped stream and raises on any 4xx, which is
right for a scheduler but useless for checking the master's answers. This client sends exactly
one SUBSCRIBE and reads the raw event stream (through the ``http_parser`` shim, as pymesos does),
and sends single calls with chosen headers. Timeouts are in base seconds, stretched by the suite's
timeout scale (``tests.support.timeouts``).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

from http_parser.http import HttpParser

from tests.mesos_standin import recordio
from tests.support.timeouts import scaled


def call(
    master: str,
    body: object,
    stream_id: str | None = None,
    *,
    method: str = "POST",
    content_type: str | None = "application/json",
    path: str = "/api/v1/scheduler",
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """One request; returns (status, body text)."""
    host, _, port = master.rpartition(":")
    headers = dict(extra_headers or {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    if stream_id is not None:
        headers["Mesos-Stream-Id"] = stream_id
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=scaled(10))
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


class RawSubscription:
    """One SUBSCRIBE (scheduler or executor) and its event stream, read by hand."""

    def __init__(
        self,
        address: str,
        body: dict[str, Any],
        *,
        path: str = "/api/v1/scheduler",
        accept: str = "application/json",
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        data = json.dumps(body).encode()
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {address}",
            "Content-Type: application/json",
            f"Accept: {accept}",
            "Connection: close",
            f"Content-Length: {len(data)}",
        ]
        head += [f"{name}: {value}" for name, value in (extra_headers or {}).items()]
        self.socket = socket.create_connection((host, int(port)), timeout=scaled(10))
        self.socket.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        self.parser = HttpParser()
        self._decoder = recordio.Decoder()
        self._pending: list[dict[str, Any]] = []
        self.closed = False
        while not self.parser.is_headers_complete() and self._receive(scaled(10.0)):
            pass

    @classmethod
    def scheduler(cls, master: str, framework_info: dict[str, Any], **options: Any) -> RawSubscription:
        """SUBSCRIBE a framework (re-subscribe when ``framework_info`` carries an ``id``)."""
        body: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info}}
        if "id" in framework_info:
            body["framework_id"] = framework_info["id"]
        return cls(master, body, **options)

    @classmethod
    def executor(cls, agent: str, framework_id: str, executor_id: str, **options: Any) -> RawSubscription:
        """SUBSCRIBE to an agent as the executor it launched (with nothing unacknowledged)."""
        body = {
            "type": "SUBSCRIBE",
            "framework_id": {"value": framework_id},
            "executor_id": {"value": executor_id},
            "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []},
        }
        return cls(agent, body, path="/api/v1/executor", **options)

    @property
    def status(self) -> int:
        """The response status."""
        return self.parser.get_status_code()

    @property
    def headers(self) -> dict[str, str]:
        """Response headers, names lower-cased."""
        return {name.lower(): value for name, value in self.parser.get_headers().items()}

    def _receive(self, timeout: float) -> bool:
        """Read once; False on EOF or timeout."""
        self.socket.settimeout(max(timeout, 0.001))
        try:
            data = self.socket.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.parser.execute(data, len(data))
        if self.parser.is_partial_body() and self.status == 200:  # error bodies are text, not RecordIO
            self._pending += self._decoder.feed(self.parser.recv_body())
        return True

    def next_event(self, timeout: float = 10.0, skip_heartbeats: bool = False) -> dict[str, Any] | None:
        """The next event; None when the stream ended or nothing came within ``timeout`` (base seconds)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            while self._pending:
                event = self._pending.pop(0)
                if not (skip_heartbeats and event.get("type") == "HEARTBEAT"):
                    return event
            remaining = deadline - time.monotonic()
            if self.closed or self.parser.is_message_complete() or remaining <= 0:
                return None
            self._receive(remaining)

    def body(self, timeout: float = 5.0) -> str:
        """The whole body of a non-streaming (error) answer, read for at most ``timeout`` (base seconds)."""
        deadline = time.monotonic() + scaled(timeout)
        chunks = [self.parser.recv_body()]
        while not self.parser.is_message_complete() and time.monotonic() < deadline and self._receive(scaled(1.0)):
            chunks.append(self.parser.recv_body())
        return b"".join(chunks).decode(errors="replace")

    def close(self) -> None:
        """Close the connection (the master sees the scheduler disconnect)."""
        self.socket.close()
        self.closed = True
