"""The ``http_parser`` shim (shims/http-parser): the response parser pymesos feeds from its socket."""

from __future__ import annotations

import importlib.metadata
import itertools

import http_parser
import pytest
from http_parser.http import HttpParser
from http_parser.pyparser import BAD_CHUNK, BAD_CONTENT_LENGTH, BAD_HEADER, BAD_STATUS_LINE, INVALID_CHUNK
from hypothesis import given
from hypothesis import strategies as st

STREAM = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Mesos-Stream-Id: 3d2a0a49-6a4e-4b0b-9a49-3f4f0b0f0c11\r\n"
    b"\r\n"
    b'5\r\n12\n{"\r\n'
    b'b;ext=1\r\ntype":"HEAR\r\n'
    b"4\r\nTBEA\r\n"
    b'3\r\nT"}\r\n'
    b"0\r\n\r\n"
)
STREAM_BODY = b'12\n{"type":"HEARTBEAT"}'
ERROR = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad request"


def feed(pieces: list[bytes]) -> tuple[HttpParser, bytes]:
    """Feed pieces as pymesos does (execute, then drain the body); returns the parser and the body."""
    parser = HttpParser()
    body = b""
    for piece in filter(None, pieces):  # pymesos never feeds b"" (that means end of input to the parser)
        assert parser.execute(piece, len(piece)) == len(piece), parser.errstr
        if parser.is_partial_body():
            body += parser.recv_body()
    return parser, body


def test_distribution_is_the_post_release() -> None:
    assert http_parser.__version__ == "0.9.0.post1"
    assert importlib.metadata.version("http-parser") == "0.9.0.post1"
    assert isinstance(INVALID_CHUNK, int)


def test_chunked_event_stream_in_one_piece() -> None:
    parser, body = feed([STREAM])
    assert parser.is_headers_complete() and parser.get_status_code() == 200
    headers = {name.upper(): value for name, value in parser.get_headers().items()}
    assert headers["MESOS-STREAM-ID"] == "3d2a0a49-6a4e-4b0b-9a49-3f4f0b0f0c11"
    assert parser.is_chunked() and parser.is_message_complete()
    assert body == STREAM_BODY and not parser.is_partial_body()
    assert isinstance(parser.recv_body(), bytes)


@pytest.mark.parametrize("message", [STREAM, ERROR], ids=["chunked", "content-length"])
def test_every_split_point_gives_the_same_result(message: bytes) -> None:
    _, whole = feed([message])
    for cut in range(len(message) + 1):
        parser, body = feed([message[:cut], message[cut:]])
        assert body == whole and parser.is_message_complete(), cut


def test_byte_by_byte() -> None:
    parser, body = feed([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert body == STREAM_BODY and parser.is_message_complete()


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_arbitrary_splits(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    parser, body = feed([STREAM[a:b] for a, b in itertools.pairwise(points)])
    assert body == STREAM_BODY and parser.is_message_complete()


def test_headers_complete_before_body_and_message_incomplete_mid_stream() -> None:
    head, rest = STREAM.split(b"\r\n\r\n", 1)
    parser = HttpParser()
    parser.execute(head + b"\r\n", len(head) + 2)
    assert not parser.is_headers_complete()
    parser.execute(b"\r\n", 2)
    assert parser.is_headers_complete() and not parser.is_partial_body() and not parser.is_message_complete()
    parser.execute(rest[:20], 20)
    assert parser.is_partial_body() and not parser.is_message_complete()


def test_content_length_error_response() -> None:
    parser, body = feed([ERROR])
    assert parser.get_status_code() == 400 and not parser.is_chunked()
    assert body == b"bad request" and parser.is_message_complete()


def test_redirect_without_body_and_lowercase_headers() -> None:
    parser, body = feed(
        [b"HTTP/1.1 307 Temporary Redirect\r\nlocation: //10.0.0.9:5050/api/v1/scheduler\r\ncontent-length: 0\r\n\r\n"]
    )
    headers = {name.upper(): value for name, value in parser.get_headers().items()}
    assert parser.get_status_code() == 307 and headers["LOCATION"] == "//10.0.0.9:5050/api/v1/scheduler"
    assert body == b"" and parser.is_message_complete()


def test_body_until_close() -> None:
    parser, body = feed([b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot yet"])
    assert parser.get_status_code() == 503 and body == b"not yet" and not parser.is_message_complete()
    assert parser.execute(b"", 0) == 0 and parser.is_message_complete() and parser.errno is None


def test_no_body_statuses_and_folded_headers() -> None:
    parser, _ = feed([b"HTTP/1.1 204 No Content\r\nX-A: one\r\n two\r\nX-A: three\r\n\r\n"])
    assert parser.is_message_complete() and parser.get_headers()["X-A"] == "one two, three"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"SPDY/3 200 OK\r\n\r\n", BAD_STATUS_LINE),
        (b"HTTP/1.1 2000 OK\r\n\r\n", BAD_STATUS_LINE),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", BAD_HEADER),
        (b"HTTP/1.1 200 OK\r\n continuation first\r\n\r\n", BAD_HEADER),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", BAD_CONTENT_LENGTH),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BAD_CHUNK),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", BAD_CHUNK),
    ],
)
def test_protocol_errors_set_errno_and_refuse_input(message: bytes, code: int) -> None:
    parser = HttpParser()
    assert parser.execute(message, len(message)) != len(message)
    assert parser.errno == code and parser.errno != INVALID_CHUNK and parser.errstr
    assert parser.execute(b"more", 4) == 0


def test_errno_is_none_until_an_error() -> None:
    parser = HttpParser()
    assert parser.errno is None and parser.errstr == ""
    parser.execute(b"HTTP/1.1 200 OK\r\n", 17)
    assert parser.errno is None and not parser.is_headers_complete()


def test_oversized_head_is_refused() -> None:
    parser = HttpParser()
    line = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000
    assert parser.execute(line, len(line)) == 0 and parser.errno is not None
