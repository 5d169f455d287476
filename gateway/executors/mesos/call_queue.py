"""Calls waiting for a Mesos executor, and how they are handed to one: dispatch and losses.

Admission, batching and settling are the shared :mod:`gateway.executors.call_queue`'s, as
for the local executor: calls submitted in one event-loop turn go out together at the end of
the turn, one write per executor. Each executor holds at most its
``capacity`` (workers × the local pipeline depth), the least loaded first, ties
taken in turn so every executor gets calls; its own local executor picks the
worker and enforces each call's timeout (killing a stuck worker), so replies are
the very bytes a local worker would have produced.

When an executor is lost, its calls of functions marked ``idempotent`` go back
to the front of the queue for another executor, at most ``retry_budget`` times
each and only while their timeout and expiry allow; the others are answered
``unavailable``: they may have run, so they are not run again. When that
happens is the :class:`~gateway.executors.mesos.remote_pool.RemotePool`'s
business (it extends this class with the executors' links).
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.errors import Unavailable
from gateway.executors.base import Call, next_live
from gateway.executors.call_queue import CallQueue, Pending
from gateway.executors.local.executor import PIPELINE
from gateway.executors.mesos import wire
from gateway.executors.mesos.channel import ExecutorLink
from gateway.executors.mesos.counters import MesosCounters

log = logging.getLogger(__name__)


class MesosCallQueue(CallQueue):
    """Calls queued for and sent to the executors' links, and their dispatch (see the module docstring)."""

    def __init__(self, max_queue: int, retry_budget: int, counters: MesosCounters | None = None) -> None:
        super().__init__(max_queue, "on Mesos executors")
        self.counters = counters if counters is not None else MesosCounters()  # calls rerun and lost
        self._retry_budget = retry_budget
        self._links: dict[str, ExecutorLink] = {}
        self._turn = 0  # where the next dispatch starts looking, so ties rotate

    def waiting(self) -> int:
        """Calls waiting for a worker: queued here, or sent beyond an executor's workers."""
        extra = 0
        for link in self._links.values():
            if link.usable and not link.dedicated:
                extra += max(0, len(link.outstanding) - link.capacity // PIPELINE)
        return len(self._queue) + extra

    def usable(self) -> int:
        """Warm executors connected and taking calls."""
        return sum(1 for link in self._links.values() if link.usable and not link.dedicated)

    def submit(self, call: Call, key: str) -> asyncio.Future[bytes]:
        """Queue ``call`` for this turn's dispatch; ``Overloaded`` at once when the queue is full."""
        future, pending = self._admit(call, lambda _: wire.pickle_call(key, call.kwargs))
        if pending is not None:
            self._enqueue(pending)
        return future

    def submit_to(self, link: ExecutorLink, call: Call, key: str) -> asyncio.Future[bytes]:
        """Keep ``call`` for ``link``'s dedicated executor: sent when it connects, never to another."""
        future, link.reserved = self._admit(call, lambda _: wire.pickle_call(key, call.kwargs))
        return future

    def take_queued(self) -> list[Pending]:
        """Hand over every call waiting for an executor (the owner runs or answers them elsewhere)."""
        taken = list(self._queue)
        self._queue.clear()
        self._count -= len(taken)
        if self._count == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        return taken

    # Dispatch and settling.

    def _dispatch(self) -> None:
        self._dispatch_soon = False
        ready = [link for link in self._links.values() if link.usable and not link.dedicated]
        if not ready:
            return
        queue, now, touched, count = self._queue, time.monotonic(), [], len(ready)
        turn = self._turn % count
        while (pending := next_live(queue, now, self._finish)) is not None:
            best, best_at = None, 0
            for step in range(count):
                at = (turn + step) % count
                link = ready[at]
                load = len(link.outstanding)
                if load < link.capacity and (best is None or load < len(best.outstanding)):
                    best, best_at = link, at
                    if load == 0:
                        break
            if best is None:
                break
            queue.popleft()
            turn = best_at + 1
            if not best.outbox:
                touched.append(best)
            self._send(best, pending, now)
        self._turn = turn
        for link in touched:
            link.send(b"".join(link.outbox))
            link.outbox.clear()

    def _send(self, link: ExecutorLink, pending: Pending, now: float) -> None:
        expires_at = pending.call.expires_at
        left = None if expires_at is None else expires_at - now
        link.outbox.append(wire.call_frame(pending.call_id, pending.call.timeout, left, pending.body))
        link.outstanding[pending.call_id] = pending
        link.last_busy = now
        link.sent += 1
        link.unacked.append((link.sent, pending))

    def _fail_sent(self, link: ExecutorLink, why: str, prefix: bool = True, retry: bool = True) -> None:
        """Rerun or answer ``link``'s calls: after a loss (``prefix``: logged and counted), or when stopping."""
        calls = list(link.outstanding.values())
        link.outstanding.clear()
        link.unacked.clear()
        now, again = time.monotonic(), []
        for pending in calls:
            expires_at = pending.call.expires_at
            if (
                retry
                and pending.call.spec.options.idempotent
                and pending.attempts <= self._retry_budget
                and now - pending.queued_at < pending.call.timeout
                and (expires_at is None or now < expires_at)
                and not pending.future.done()
            ):
                pending.attempts += 1
                again.append(pending)
            else:
                self._finish(pending, Unavailable(why))
        if again:
            self.counters.calls_rerun += len(again)
            self._queue.extendleft(reversed(again))  # first in line: they have waited longest
            log.warning(
                "%d calls of idempotent functions on executor %s go to another executor: %s",
                len(again), link.executor_id, why,
            )  # fmt: skip
            self._dispatch_later()
        failed = len(calls) - len(again)
        if failed and prefix:
            self.counters.calls_lost += failed
            log.error("%d calls on executor %s answered unavailable: %s", failed, link.executor_id, why)
