"""The worker process of the ``local`` executor: holds every function warm and runs calls in order.

:func:`serve` is the process's target. It imports the function modules, says
``READY``, then reads call frames from its pipe and runs them one at a time, in
the order they arrived. Each reply is written as soon as its call is done, not
held back for the rest of what was read: the gateway takes the oldest call it
has not had a reply for as the one running, which is how it times a call from
its real start and knows which call a crash interrupted. (Holding replies back
for one write per batch would blur both, and measured no faster: the gateway
still reads many replies per wake-up under load.)

The result is encoded here, so a result that cannot be encoded costs the
worker, not the gateway, and the gateway forwards the bytes as they are.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from gateway import codec
from gateway.errors import BadResult, CallTimeout, InternalError, WireError
from gateway.executors import framing
from gateway.executors.base import function_error
from gateway.executors.framing import ReplyKind
from gateway.registry import routers_of

_READ_SIZE = 1 << 16
_MAX_CALL_FRAME = 1 << 30  # the gateway is trusted; this only catches a corrupted stream


def serve(
    calls: Connection, replies: Connection, modules: Sequence[str], max_result_bytes: int, reimport: bool = False
) -> None:
    """Run calls read from ``calls`` and write their replies to ``replies`` until the gateway closes the pipe.

    ``reimport``: reload the modules the fork server imported first (their files changed since).
    """
    # Ctrl-C reaches the whole process group; the gateway decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    in_fd, out_fd = calls.fileno(), replies.fileno()
    try:
        functions: dict[str, Callable[..., Any]] = {}
        if reimport:
            for reference in modules:
                module = sys.modules.get(reference.partition(":")[0])
                if module is not None:
                    importlib.reload(module)
        for reference in modules:
            functions.update((spec.key, spec.func) for spec in routers_of(reference))
    except Exception as exc:  # any import-time failure is reported to the gateway, which logs it
        _write_all(out_fd, _error(0, function_error(exc).message))
        raise SystemExit(1) from None
    _write_all(out_fd, framing.reply_frame(0, ReplyKind.READY, 0))
    runner = CallRunner(functions, max_result_bytes)
    reader = framing.FrameReader(_MAX_CALL_FRAME)
    while data := os.read(in_fd, _READ_SIZE):
        for frame in reader.feed(data):
            _write_all(out_fd, runner.run(frame))


class CallRunner:
    """Runs one call frame and returns its reply frame; ``async`` functions share one event loop."""

    def __init__(self, functions: dict[str, Callable[..., Any]], max_result_bytes: int) -> None:
        self._functions = functions
        self._max_result = max_result_bytes
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, frame: bytes) -> bytes:
        """Decode, run and encode one call; every failure becomes an ``ERROR`` reply."""
        call_id, body = framing.parse_call(frame)
        try:
            key, kwargs, expires_at = pickle.loads(body)
        except Exception as exc:  # e.g. an argument's class cannot be imported here
            return _error(call_id, InternalError(f"the worker cannot read the call's arguments: {exc}"))
        if expires_at is not None and time.monotonic() >= expires_at:
            # time.monotonic() is one clock for all processes on the machine, so the gateway's deadline holds here.
            return _error(call_id, CallTimeout("the request expired before it could run"))
        func = self._functions.get(key)
        if func is None:
            return _error(call_id, InternalError(f"function {key!r} is not loaded in the worker"))
        started = time.perf_counter()
        try:
            value = func(**kwargs)
            if inspect.iscoroutine(value):
                value = self._event_loop().run_until_complete(value)
        except (Exception, SystemExit) as exc:  # the function's own error goes to the device
            return _error(call_id, function_error(exc), _micros_since(started))
        micros = _micros_since(started)
        try:
            result = codec.encode_result(value, self._max_result)
        except WireError as exc:
            return _error(call_id, exc, micros)
        except Exception as exc:  # e.g. RecursionError on a self-referencing result
            return _error(call_id, BadResult(f"result cannot be encoded as msgpack: {type(exc).__name__}"), micros)
        return framing.reply_frame(call_id, ReplyKind.OK, micros, result)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        # One loop for the life of the worker: created on first use, so sync-only workers never build one.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop


def _error(call_id: int, error: WireError | str, micros: int = 0) -> bytes:
    if isinstance(error, str):
        error = InternalError(error)
    return framing.reply_frame(call_id, ReplyKind.ERROR, micros, framing.error_payload(error.code, error.message))


def _micros_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1e6)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
