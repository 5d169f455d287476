"""The ``inline`` executor: runs functions in the gateway process, for tiny functions.

Sync functions run directly on the event loop (so they must be quick: there is
no isolation and no way to interrupt them); ``async`` functions run as tasks
with their timeout enforced.
"""

from __future__ import annotations

import asyncio
import logging

from gateway import codec
from gateway.errors import CallTimeout, Overloaded, Unavailable
from gateway.executors.base import Call, Executor, function_error

log = logging.getLogger(__name__)


class InlineExecutor(Executor):
    """Runs calls in the gateway's own process and event loop."""

    name = "inline"

    def __init__(self, max_queue: int, max_result_bytes: int) -> None:
        self._max_queue = max_queue
        self._max_result = max_result_bytes
        self._tasks: set[asyncio.Task[bytes]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Nothing to start: calls run in this process."""

    @property
    def in_flight(self) -> int:
        """Async calls still running."""
        return len(self._tasks)

    def submit(self, call: Call) -> asyncio.Future[bytes]:
        """Run a sync function now, or start an async one as a task."""
        if self._stopping:
            raise Unavailable("the gateway is stopping")
        loop = asyncio.get_running_loop()
        if not call.spec.is_async:
            future: asyncio.Future[bytes] = loop.create_future()
            try:
                value = call.spec.func(**call.kwargs)
            except Exception as exc:  # the function's own error goes to the device
                future.set_exception(function_error(exc))
                return future
            try:
                future.set_result(codec.encode_result(value, self._max_result))
            except Exception as exc:
                future.set_exception(exc)
            return future
        if len(self._tasks) >= self._max_queue:
            raise Overloaded(f"{len(self._tasks)} calls running inline, the limit is {self._max_queue}")
        task = loop.create_task(self._run_async(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_async(self, call: Call) -> bytes:
        try:
            value = await asyncio.wait_for(call.spec.func(**call.kwargs), call.timeout)
        except TimeoutError:
            raise CallTimeout(f"function did not finish within {call.timeout:g} s") from None
        except asyncio.CancelledError:
            raise Unavailable("the gateway stopped before the call finished") from None
        except Exception as exc:
            raise function_error(exc) from None
        return codec.encode_result(value, self._max_result)

    async def stop(self, grace: float) -> None:
        """Wait up to ``grace`` for async calls, then cancel them (they answer ``unavailable``)."""
        self._stopping = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
