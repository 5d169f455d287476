"""Error codes of :class:`http_parser.http.HttpParser`.

Why this module exists: pymesos imports ``INVALID_CHUNK`` from here on its error path and treats
``parser.errno == INVALID_CHUNK`` as "need more data, keep the connection". Our parser buffers
incomplete input itself, so it never reports ``INVALID_CHUNK``; every other code below is a real
protocol error after which pymesos drops the connection.
"""

BAD_STATUS_LINE = 1
"""The first line is not ``HTTP/1.x <3-digit status> [reason]``."""

INVALID_CHUNK = 2
"""Kept for pymesos (upstream's value); never set by this parser."""

BAD_HEADER = 3
"""A header line without a colon, or a continuation line before any header."""

BAD_CONTENT_LENGTH = 4
"""``Content-Length`` is not a non-negative decimal integer."""

BAD_CHUNK = 5
"""A chunk-size line that is not hexadecimal, or chunk data not followed by CRLF."""

TOO_LARGE = 6
"""The status line plus headers, or one chunk-size line, exceed the parser's limits."""

UNEXPECTED_EOF = 7
"""``execute`` was told the input ended (length 0) before the message was complete."""
