"""RecordIO framing of Mesos event streams, and the HTTP chunks that carry it.

A record is ``<decimal length>\\n<JSON bytes>``; the length counts the UTF-8 bytes of the JSON
only. pymesos matches ``\\d+\\n`` at the start of its buffer, so nothing may precede a length.
"""

from __future__ import annotations

import json
import re

LAST_CHUNK = b"0\r\n\r\n"
"""The zero-length chunk that ends a chunked response."""

_LENGTH = re.compile(rb"(\d+)\n")


def encode(event: dict[str, object]) -> bytes:
    """One event as one RecordIO record."""
    data = json.dumps(event, separators=(",", ":")).encode("utf-8")
    return b"%d\n%s" % (len(data), data)


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP chunk (callers never pass empty data: that would end the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Decoder:
    """Splits a RecordIO byte stream (already de-chunked) into events, across any split."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[dict[str, object]]:
        """Add bytes; return every event now complete."""
        self._buffer += data
        events: list[dict[str, object]] = []
        while True:
            match = _LENGTH.match(self._buffer)
            if match is None:
                if self._buffer and not self._buffer[:20].isdigit():
                    raise ValueError(f"not a RecordIO length: {self._buffer[:20]!r}")
                return events
            end = match.end() + int(match.group(1))
            if len(self._buffer) < end:
                return events
            events.append(json.loads(self._buffer[match.end() : end]))
            self._buffer = self._buffer[end:]
