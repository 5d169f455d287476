"""The call queue the local and the Mesos executors share: admission, encoding, batching, settling.

Both hold calls from :meth:`submit` to their reply the same way, so the same cause gets the
same answer whichever runs the call:

* past ``max_queue`` calls queued or running, ``overloaded`` at once;
* arguments that cannot be pickled for a worker: ``internal`` (the function's argument types
  are at fault, not the device, and trying again cannot help: never ``unavailable``);
* calls submitted in one event-loop turn are dispatched together at the end of that turn
  (:meth:`CallQueue._dispatch`, which each executor writes for its workers or executors);
* every call is settled once, through :meth:`CallQueue._finish`, and :meth:`CallQueue._drain`
  waits, within a grace, until none is left.

What differs stays with each executor: where a call goes (a local worker process, or a warm
executor on a Mesos agent), and what happens when that goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import InternalError, Overloaded, WireError
from gateway.executors.base import Call, settle


@dataclass(slots=True)
class Pending:
    """One call from submit to its reply."""

    call_id: int
    call: Call
    body: bytes  # what is sent for it: a worker's call frame, or the pickled call for a Mesos executor
    future: asyncio.Future[bytes]
    queued_at: float
    quick: bool = False  # local: of a function that recently ran in under QUICK seconds
    attempts: int = 1  # mesos: executors it was given to after a loss, counting the first


class CallQueue:
    """Calls waiting for, or sent to, whatever runs them (see the module docstring)."""

    def __init__(self, max_queue: int, where: str) -> None:
        self._max_queue = max_queue
        self._where = where  # "in worker processes", "on Mesos executors": for the overloaded message
        self._queue: deque[Pending] = deque()
        self._count = 0  # calls queued or sent, not finished
        self._next_id = 1
        self._dispatch_soon = False
        self._idle: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_flight(self) -> int:
        """Calls queued or sent, not finished."""
        return self._count

    @property
    def queued(self) -> int:
        """Calls waiting to be sent."""
        return len(self._queue)

    def _admit(self, call: Call, encode: Callable[[int], bytes]) -> tuple[asyncio.Future[bytes], Pending | None]:
        """A future for ``call`` and its numbered, counted :class:`Pending` (``encode(call_id)`` gives its body);
        ``None`` (and the future failed ``internal``) when its arguments cannot be sent. ``Overloaded`` when full."""
        assert self._loop is not None
        if self._count >= self._max_queue:
            raise Overloaded(f"{self._count} calls are queued or running {self._where}, the limit is {self._max_queue}")
        future: asyncio.Future[bytes] = self._loop.create_future()
        call_id, self._next_id = self._next_id, self._next_id + 1
        try:
            body = encode(call_id)
        except Exception as exc:  # an argument pickle refuses: the function's types, not the device, are at fault
            future.set_exception(InternalError(f"the arguments cannot be sent to a worker process: {exc}"))
            return future, None
        self._count += 1
        return future, Pending(call_id, call, body, future, time.monotonic())

    def _enqueue(self, pending: Pending) -> None:
        """Queue ``pending`` for this turn's dispatch."""
        self._queue.append(pending)
        self._dispatch_later()

    def _dispatch_later(self) -> None:
        if not self._dispatch_soon and self._loop is not None:
            self._dispatch_soon = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Send what is queued to whatever runs it (once per turn); each executor writes its own."""
        raise NotImplementedError

    def _finish(self, pending: Pending, outcome: bytes | WireError) -> None:
        """Settle ``pending`` (once) with its result or error."""
        self._count -= 1
        settle(pending.future, outcome)
        if self._count == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def _drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds until every call is settled."""
        if self._count and grace > 0:
            self._idle = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._idle], timeout=grace)
