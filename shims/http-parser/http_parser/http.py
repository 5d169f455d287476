"""Incremental HTTP/1.1 response parser with the interface pymesos 0.3.15 calls.

Why it exists: pymesos (``pymesos/process.py``, class ``Connection``) reads the Mesos event
stream from a raw socket and feeds every ``recv`` into ``HttpParser.execute``; the upstream
parser is a C extension that no longer builds on Python 3.11+. This one is pure Python, parses
responses only, and keeps just the methods pymesos uses.
"""

from __future__ import annotations

from http_parser.pyparser import (
    BAD_CHUNK,
    BAD_CONTENT_LENGTH,
    BAD_HEADER,
    BAD_STATUS_LINE,
    TOO_LARGE,
    UNEXPECTED_EOF,
)

MAX_HEAD_BYTES = 64 * 1024
"""Longest status line plus header block accepted (a guard against a peer that never ends it)."""

MAX_CHUNK_LINE = 1024
"""Longest chunk-size line (size plus extensions) accepted."""

# Parser phases, in the order a response moves through them.
_STATUS, _HEADERS, _BODY_LENGTH, _BODY_UNTIL_EOF = 0, 1, 2, 3
_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DONE, _FAILED = 4, 5, 6, 7, 8, 9


class HttpParser:
    """Parses one HTTP/1.1 response fed in pieces of any size.

    ``execute`` accepts every byte it is given and buffers what is incomplete (a split may fall
    anywhere, even inside a chunk-size line or its CRLF). It returns less than it was given only
    on a protocol error, with ``errno`` and ``errstr`` set; pymesos then raises.
    """

    def __init__(self) -> None:
        self.errno: int | None = None
        self.errstr = ""
        self._phase = _STATUS
        self._pending = bytearray()  # input not yet consumed by the state machine
        self._head_bytes = 0
        self._version = (1, 1)
        self._status = 0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._last_header: str | None = None
        self._headers_done = False
        self._chunked = False
        self._remaining = 0  # bytes still due in the current chunk or Content-Length body
        self._body = bytearray()  # de-chunked body bytes not yet handed out by recv_body

    # -- feeding -------------------------------------------------------------------------------

    def execute(self, data: bytes, length: int) -> int:
        """Feed ``length`` bytes of ``data``; returns ``length``, or 0 after a protocol error.

        ``length == 0`` means the peer closed the connection: that completes a body delimited
        by the end of the connection and is an error anywhere else before completion.
        """
        if self._phase == _FAILED:
            return 0
        if length == 0:
            if self._phase == _BODY_UNTIL_EOF:
                self._phase = _DONE
            elif self._phase != _DONE:
                self._fail(UNEXPECTED_EOF, "connection closed before the response was complete")
            return 0
        if self._phase != _DONE:  # anything after a complete message is ignored
            self._pending += data[:length]
            self._run()
        return 0 if self._phase == _FAILED else length

    def _run(self) -> None:
        """Advance the state machine as far as the buffered input allows."""
        while self._pending and self._phase not in (_DONE, _FAILED):
            if self._phase in (_STATUS, _HEADERS, _TRAILERS):
                line = self._take_line(MAX_HEAD_BYTES - self._head_bytes)
                if line is None:
                    return
                self._head_bytes += len(line) + 2
                self._on_head_line(line)
            elif self._phase == _CHUNK_SIZE:
                line = self._take_line(MAX_CHUNK_LINE)
                if line is None:
                    return
                self._on_chunk_size(line)
            elif self._phase == _CHUNK_END:
                if not self._take_crlf():
                    return
            else:  # _BODY_LENGTH, _BODY_UNTIL_EOF, _CHUNK_DATA
                self._take_body()

    def _take_line(self, limit: int) -> str | None:
        """Remove and return one line without its (CR)LF, or None while it is incomplete."""
        end = self._pending.find(b"\n")
        if end < 0:
            if len(self._pending) > limit:
                self._fail(TOO_LARGE, "line too long")
            return None
        if end > limit:
            self._fail(TOO_LARGE, "line too long")
            return None
        raw = bytes(self._pending[:end])
        del self._pending[: end + 1]
        return raw.removesuffix(b"\r").decode("latin-1")

    def _take_crlf(self) -> bool:
        """Consume the CRLF that ends chunk data; False while it has not fully arrived."""
        if self._pending.startswith(b"\r\n"):
            del self._pending[:2]
        elif self._pending.startswith(b"\n"):
            del self._pending[:1]
        elif self._pending == b"\r":
            return False
        else:
            self._fail(BAD_CHUNK, "chunk data not followed by CRLF")
            return False
        self._phase = _CHUNK_SIZE
        return True

    def _take_body(self) -> None:
        """Move body bytes from the input buffer to the body buffer."""
        if self._phase == _BODY_UNTIL_EOF:
            self._body += self._pending
            self._pending.clear()
            return
        piece = self._pending[: self._remaining]
        del self._pending[: len(piece)]
        self._body += piece
        self._remaining -= len(piece)
        if self._remaining == 0:
            self._phase = _DONE if self._phase == _BODY_LENGTH else _CHUNK_END

    # -- head ----------------------------------------------------------------------------------

    def _on_head_line(self, line: str) -> None:
        """Handle the status line, a header line, or the blank line that ends a header block."""
        if self._phase == _STATUS:
            self._on_status_line(line)
        elif line == "":
            if self._phase == _TRAILERS:
                self._phase = _DONE
            else:
                self._start_body()
        elif line[0] in " \t":  # obsolete line folding continues the previous header
            if self._last_header is None:
                self._fail(BAD_HEADER, "continuation line before any header")
            else:
                self._headers[self._last_header] += " " + line.strip()
        else:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                self._fail(BAD_HEADER, f"malformed header line {line[:80]!r}")
                return
            if self._phase == _HEADERS:  # trailers are read but not reported
                previous = self._headers.get(name)
                self._headers[name] = value.strip() if previous is None else f"{previous}, {value.strip()}"
                self._last_header = name

    def _on_status_line(self, line: str) -> None:
        """Parse ``HTTP/1.x NNN reason``."""
        parts = line.split(" ", 2)
        version = parts[0]
        if (
            len(parts) < 2
            or not version.startswith("HTTP/")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
            or version[5:] not in ("1.0", "1.1")
        ):
            self._fail(BAD_STATUS_LINE, f"bad status line {line[:80]!r}")
            return
        self._version = (1, int(version[7]))
        self._status = int(parts[1])
        self._reason = parts[2] if len(parts) > 2 else ""
        self._phase = _HEADERS

    def _start_body(self) -> None:
        """Choose the body framing from the status and headers (RFC 9112 section 6.3)."""
        self._headers_done = True
        lowered = {name.lower(): value for name, value in self._headers.items()}
        coding = lowered.get("transfer-encoding", "")
        if self._status < 200 or self._status in (204, 304):
            self._phase = _DONE
        elif coding and coding.split(",")[-1].strip().lower() == "chunked":
            self._chunked = True
            self._phase = _CHUNK_SIZE
        elif "content-length" in lowered:
            text = lowered["content-length"].strip()
            if not text.isdigit():
                self._fail(BAD_CONTENT_LENGTH, f"bad Content-Length {text[:40]!r}")
                return
            self._remaining = int(text)
            self._phase = _BODY_LENGTH if self._remaining else _DONE
        else:
            self._phase = _BODY_UNTIL_EOF

    def _on_chunk_size(self, line: str) -> None:
        """Parse a chunk-size line (extensions after ';' are ignored)."""
        text = line.split(";", 1)[0].strip()
        if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
            self._fail(BAD_CHUNK, f"bad chunk size {line[:40]!r}")
            return
        self._remaining = int(text, 16)
        self._phase = _CHUNK_DATA if self._remaining else _TRAILERS

    def _fail(self, code: int, message: str) -> None:
        """Enter the failed state; later input is refused."""
        self.errno = code
        self.errstr = message
        self._phase = _FAILED
        self._pending.clear()

    # -- what pymesos reads --------------------------------------------------------------------

    def is_headers_complete(self) -> bool:
        """True once the status line and all headers have been parsed."""
        return self._headers_done

    def get_status_code(self) -> int:
        """The response status code (0 before the status line is parsed)."""
        return self._status

    def get_reason(self) -> str:
        """The reason phrase of the status line."""
        return self._reason

    def get_version(self) -> tuple[int, int]:
        """The HTTP version of the response, e.g. ``(1, 1)``."""
        return self._version

    def get_headers(self) -> dict[str, str]:
        """The headers as received (repeated names joined with ", "); pymesos upper-cases names itself."""
        return dict(self._headers)

    def is_chunked(self) -> bool:
        """True when the body uses ``Transfer-Encoding: chunked``."""
        return self._chunked

    def is_partial_body(self) -> bool:
        """True when body bytes are waiting that ``recv_body`` has not returned yet."""
        return bool(self._body)

    def recv_body(self) -> bytes:
        """Return (and forget) every de-chunked body byte received since the last call."""
        body = bytes(self._body)
        self._body.clear()
        return body

    def is_message_complete(self) -> bool:
        """True after the last chunk (and trailers), or once ``Content-Length`` bytes arrived."""
        return self._phase == _DONE
