"""How the durable queue's group commits are written: on the event loop, or on one commit thread.

With ``durable.synchronous = "normal"`` a commit is a ``write()`` without fsync
(40–70 µs for a turn of ten requests): cheaper than a hand-off to a thread and
back (measured: 0.1–0.2 ms more per commit for a lone request, no clear gain under
load), so :class:`BatchWriter` writes it on the event loop and the caller's
follow-up runs right after.

With ``"full"`` a commit waits for an fsync (0.5–1.5 ms), which on the event
loop would stop reading sockets, running inline functions and publishing for
as long. Those commits run on one dedicated thread instead, **one at a time**:
while a commit is in flight, the loop keeps collecting the next batch
(:attr:`BatchWriter.busy` tells the queue to hold it) and commits it as soon as
the follow-up of the one in flight has run on the loop, so batches grow under
load. Pruning goes to the same thread, so while the queue runs the write
connection is used by that thread only (the loop's lookups use the store's
reader connection).

Pruning (:meth:`BatchWriter.maintain`: delete rows, give a step of free pages
back, truncate the WAL) runs where the commits run, between two of them, not on
a thread of its own: a second connection would hold sqlite's write lock, and the
loop's next commit would wait for it anyway. Each call does a bounded amount of
work (the queue hands over a bounded number of rows, the store gives back a
bounded step of pages), so it holds the loop (or the commit thread) a few
milliseconds at most.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable

from gateway.durable.store import ReplyRow, RequestRow, RequestStore

log = logging.getLogger(__name__)


class BatchWriter:
    """Writes one group commit at a time into a :class:`RequestStore`, then runs its follow-up on the loop."""

    def __init__(self, store: RequestStore) -> None:
        self._store = store
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        if store.synchronous == "full":
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="roost-commit")
        self._future: concurrent.futures.Future[None] | None = None
        self._then: Callable[[], None] = _nothing
        self._idle_waiters: list[asyncio.Future[None]] = []
        self.commits = 0

    @property
    def threaded(self) -> bool:
        """Commits run on the commit thread (``synchronous = "full"``)."""
        return self._executor is not None

    @property
    def busy(self) -> bool:
        """A commit is in flight: its follow-up has not run yet, and the next batch must wait."""
        return self._future is not None

    def commit(
        self,
        requests: list[RequestRow],
        replies: list[ReplyRow],
        done: list[int],
        started: list[int],
        then: Callable[[], None],
    ) -> None:
        """Write one batch, then call ``then`` on the loop (at once when there is no thread). Not while busy.

        A failed commit is logged and ``then`` still runs: the gateway keeps serving, unstored.
        """
        executor = self._executor
        if executor is None:
            self._write(requests, replies, done, started)
            then()
            return
        assert self._future is None, "one commit in flight at a time"
        loop = asyncio.get_running_loop()
        future = executor.submit(self._write, requests, replies, done, started)
        self._future, self._then = future, then
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._written, future))

    async def idle(self) -> None:
        """Wait until no commit is in flight: every follow-up has run, including commits they started."""
        while self._future is not None:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def maintain(self, seqs: list[int], older_than: float, then: Callable[[bool], None]) -> None:
        """Prune (:meth:`RequestStore.prune`) and shrink the file a step (:meth:`RequestStore.shrink`).

        After the commit in flight if any; ``then(more)`` runs on the loop afterwards, ``more``: another
        shrink step is due.
        """
        executor = self._executor
        if executor is None:
            then(self._maintain(seqs, older_than))
            return
        loop = asyncio.get_running_loop()

        def done(future: concurrent.futures.Future[bool]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the queue has stopped
                loop.call_soon_threadsafe(then, future.result())

        executor.submit(self._maintain, seqs, older_than).add_done_callback(done)

    def close(self) -> None:
        """Wait for the commit in flight and run its follow-up (which may commit again, waited for too)."""
        while self._future is not None:
            future = self._future
            future.result()
            self._written(future)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _written(self, future: concurrent.futures.Future[None]) -> None:
        if future is not self._future:
            return  # already followed up by close()
        then, self._then = self._then, _nothing
        self._future = None
        try:
            then()
        finally:
            if self._future is None:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _write(self, requests: list[RequestRow], replies: list[ReplyRow], done: list[int], started: list[int]) -> None:
        try:
            self._store.commit(requests, replies, done, started)
        except Exception:
            # Keep serving: an unwritable disk must not stop the gateway, but it is loud.
            log.exception("durable queue: commit failed; %d requests go on without being stored", len(requests))
        self.commits += 1

    def _maintain(self, seqs: list[int], older_than: float) -> bool:
        try:
            self._store.prune(seqs, older_than)
            return self._store.shrink()
        except Exception:
            log.exception("durable queue: pruning old replies failed")
            return False


def _nothing() -> None:
    pass
