"""The executor interface: run a validated call and produce its encoded result.

An executor's :meth:`Executor.submit` returns at once with a future. The future
resolves to the msgpack encoding of the function's result, or fails with a
:class:`~gateway.errors.WireError` (``function_error``, ``bad_result``,
``timeout``, ``unavailable``). A full queue raises
:class:`~gateway.errors.Overloaded` from ``submit`` itself, so the device is
answered at once.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.errors import CallTimeout, FunctionError, WireError
from gateway.registry import FunctionSpec


@dataclass(slots=True)
class Call:
    """One invocation: the function, its validated keyword arguments, and its deadline."""

    spec: FunctionSpec
    kwargs: dict[str, Any]
    timeout: float  # seconds the function may run
    expires_at: float | None = None  # time.monotonic() after which it must not start


class Executor(abc.ABC):
    """Runs calls; one instance per executor kind, shared by all functions that use it."""

    name: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Get ready to run calls (start workers)."""

    @abc.abstractmethod
    def submit(self, call: Call) -> asyncio.Future[bytes]:
        """Start ``call``; raise ``Overloaded`` at once when the queue is full."""

    @abc.abstractmethod
    async def stop(self, grace: float) -> None:
        """Let running calls finish for up to ``grace`` seconds, then fail the rest with ``unavailable``."""

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Calls submitted and not finished."""

    @property
    def problem(self) -> str | None:
        """Why no call can run now (readiness fails with it), or ``None`` when calls can run."""
        return None

    def gauges(self) -> dict[str, float]:
        """Numbers for the metrics endpoint, read at scrape time: name → value.

        Exported as ``roost_executor_<name>{executor=...}``; a name ending in
        ``_total`` is a counter. ``queued`` is the calls waiting to start.
        """
        return {"queued": 0}


def settle(future: asyncio.Future[bytes], outcome: bytes | WireError) -> None:
    """Resolve a call's future with its encoded result or its wire error (once; later outcomes are dropped)."""
    if future.done():
        return
    if isinstance(outcome, bytes):
        future.set_result(outcome)
    else:
        future.set_exception(outcome)


def function_error(exc: BaseException) -> FunctionError:
    """The wire error for an exception raised by a function: type and message, no traceback."""
    text = str(exc)
    if len(text) > 500:
        text = text[:500] + "..."
    name = type(exc).__name__
    return FunctionError(f"{name}: {text}" if text else name)


class Queued(Protocol):
    """A call waiting in an executor's queue."""

    @property
    def call(self) -> Call: ...

    @property
    def future(self) -> asyncio.Future[bytes]: ...


Q = TypeVar("Q", bound=Queued)


def next_live(queue: collections.deque[Q], now: float, finish: Callable[[Q, WireError], None]) -> Q | None:
    """The first queued call still worth starting, left at the head of ``queue``; ``None`` if none.

    Calls ahead of it that were cancelled, or whose request expired (``now`` is
    ``time.monotonic()``), are taken off and finished with ``timeout``.
    """
    while queue:
        pending = queue[0]
        expires_at = pending.call.expires_at
        if not pending.future.done() and (expires_at is None or now < expires_at):
            return pending
        queue.popleft()
        finish(pending, CallTimeout("the request expired before it could run"))
    return None
