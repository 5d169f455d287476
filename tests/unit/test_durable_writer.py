"""gateway.durable.writer: group commits into a real sqlite file, on the loop (``"normal"``) or on the commit thread
(``"full"``), one at a time, each followed up on the loop; pruning where the commits run and after them; a failed
commit or prune logged and followed up all the same; close() waits for the commit in flight and its follow-ups.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import pytest

from gateway.durable.store import ReplyRow, RequestRow, RequestStore
from gateway.durable.writer import BatchWriter
from tests.support.aio import synchronous
from tests.support.timeouts import scaled, until

LOOP = threading.current_thread().name  # asyncio.run runs its loop on the calling thread


class GatedStore(RequestStore):
    """A real store that records on which thread it commits and prunes, each waiting for the test's gate."""

    def __init__(self, path: Path, synchronous: Literal["normal", "full"]) -> None:
        super().__init__(path, synchronous)
        self.gate = threading.Event()
        self.gate.set()
        self.threads: list[tuple[str, str]] = []  # (what, the thread it ran on), in order
        self.prune_error: Exception | None = None

    def commit(
        self,
        requests: Iterable[RequestRow],
        replies: Iterable[ReplyRow],
        done: Iterable[int],
        started: Iterable[int] = (),
    ) -> None:
        self._through("commit")
        super().commit(requests, replies, done, started)

    def prune(self, seqs: Iterable[int], older_than: float, limit: int = 1000) -> int:
        self._through("prune")
        if self.prune_error is not None:
            raise self.prune_error
        return super().prune(seqs, older_than, limit)

    def _through(self, what: str) -> None:
        self.threads.append((what, threading.current_thread().name))
        assert self.gate.wait(scaled(10)), f"the test never let the {what} through"


def open_store(tmp_path: Path, synchronous: Literal["normal", "full"]) -> GatedStore:
    return GatedStore(tmp_path / "q.sqlite3", synchronous)


def request(seq: int) -> RequestRow:
    return (seq, time.time(), "devices/A/add", b"\x82\xa1a\x01\xa1b\x02", 1, "roost/replies/A", b"c", None)


def reply(seq: int, finished: float | None = None) -> ReplyRow:
    at = time.time() if finished is None else finished
    return (seq, seq.to_bytes(16, "big"), at, "roost/replies/A", b"\x81\xa6result\x03", 1, b"c")


def note(events: list[tuple[str, str]], what: str) -> Callable[[], None]:
    """A follow-up that records that it ran, and on which thread."""
    return lambda: events.append((what, threading.current_thread().name))


# -- synchronous = "normal": on the loop ---------------------------------------------------------------


def test_with_normal_a_commit_is_written_and_followed_up_before_commit_returns(tmp_path: Path) -> None:
    store = open_store(tmp_path, "normal")
    writer = BatchWriter(store)
    assert not writer.threaded
    seen: list[int] = []
    writer.commit([request(1), request(2)], [], [], [], lambda: seen.append(store.count()))
    assert seen == [2]  # the follow-up ran, after the rows were written
    assert store.threads == [("commit", LOOP)]
    assert writer.commits == 1 and not writer.busy
    writer.commit([], [reply(1)], [2], [], lambda: seen.append(len(store.unconfirmed())))
    assert seen == [2, 1] and writer.commits == 2
    writer.close()
    store.close()


def test_with_normal_pruning_runs_at_once_and_says_whether_more_is_due(tmp_path: Path) -> None:
    store = open_store(tmp_path, "normal")
    writer = BatchWriter(store)
    writer.commit([request(1), request(2)], [reply(1, finished=0.0), reply(2, finished=0.0)], [1], [], lambda: None)
    more: list[bool] = []
    writer.maintain([], time.time(), more.append)
    assert more == [False]
    assert [row[0] for row in store.kept()] == [2]  # 1 was confirmed and old; 2's reply is still to publish
    assert store.threads == [("commit", LOOP), ("prune", LOOP)]
    store.close()


# -- synchronous = "full": on the commit thread --------------------------------------------------------


@synchronous
async def test_with_full_a_commit_runs_on_the_commit_thread_and_its_follow_up_on_the_loop(tmp_path: Path) -> None:
    store = open_store(tmp_path, "full")
    writer = BatchWriter(store)
    assert writer.threaded
    store.gate.clear()
    events: list[tuple[str, str]] = []
    writer.commit([request(1)], [], [], [], note(events, "followed up"))
    assert writer.busy and events == []  # the loop goes on while the commit is in flight
    await until(lambda: store.threads)
    assert events == [] and writer.busy and store.count() == 0
    store.gate.set()
    await writer.idle()
    assert events == [("followed up", LOOP)]
    ((what, thread),) = store.threads
    assert what == "commit" and thread.startswith("roost-commit") and thread != LOOP
    assert store.count() == 1 and writer.commits == 1 and not writer.busy
    writer.close()
    store.close()


@synchronous
async def test_with_full_a_follow_up_may_commit_again_and_idle_waits_for_that_one_too(tmp_path: Path) -> None:
    store = open_store(tmp_path, "full")
    writer = BatchWriter(store)
    events: list[tuple[str, str]] = []

    def first() -> None:
        note(events, "first")()
        writer.commit([request(2)], [], [], [], note(events, "second"))

    writer.commit([request(1)], [], [], [], first)
    await asyncio.wait_for(writer.idle(), scaled(10))
    assert events == [("first", LOOP), ("second", LOOP)]
    assert store.count() == 2 and writer.commits == 2 and not writer.busy
    await asyncio.wait_for(writer.idle(), scaled(10))  # nothing in flight: at once
    writer.close()
    store.close()


@synchronous
async def test_with_full_pruning_waits_for_the_commit_in_flight_and_is_followed_up_after_it(tmp_path: Path) -> None:
    store = open_store(tmp_path, "full")
    writer = BatchWriter(store)
    store.gate.clear()
    events: list[tuple[str, str]] = []
    # One batch stores, answers and confirms request 1, finished long ago: prunable once written.
    writer.commit([request(1)], [reply(1, finished=0.0)], [1], [], note(events, "committed"))
    writer.maintain([], time.time(), lambda more: note(events, f"pruned, more: {more}")())
    store.gate.set()
    await until(lambda: len(events) == 2)
    assert events == [("committed", LOOP), ("pruned, more: False", LOOP)]
    assert [what for what, _ in store.threads] == ["commit", "prune"]
    assert all(thread.startswith("roost-commit") for _, thread in store.threads)
    assert store.count() == 0  # the prune saw the commit's rows
    writer.close()
    store.close()


# -- failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_a_failed_commit_is_logged_rolled_back_and_followed_up_all_the_same(
    tmp_path: Path, synchronous: Literal["normal", "full"], caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        store = open_store(tmp_path, synchronous)
        writer = BatchWriter(store)
        events: list[tuple[str, str]] = []
        writer.commit([request(1)], [], [], [], note(events, "first"))
        await writer.idle()
        # Request 2 is new, request 1 is stored already: the batch breaks the primary key, and all of it is undone.
        writer.commit([request(2), request(1)], [], [], [], note(events, "failed"))
        await writer.idle()
        assert events == [("first", LOOP), ("failed", LOOP)]
        assert writer.commits == 2 and not writer.busy
        assert [row.seq for row in store.unfinished()] == [1]
        writer.commit([request(2)], [], [], [], note(events, "after"))  # the connection is usable again
        await writer.idle()
        assert [row.seq for row in store.unfinished()] == [1, 2] and events[-1] == ("after", LOOP)
        writer.close()
        store.close()

    with caplog.at_level(logging.ERROR, logger="gateway.durable.writer"):
        asyncio.run(go())
    (record,) = caplog.records
    assert record.getMessage() == "durable queue: commit failed; 2 requests go on without being stored"
    assert record.exc_info is not None and isinstance(record.exc_info[1], sqlite3.IntegrityError)


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_a_failed_prune_is_logged_and_says_no_more_is_due(
    tmp_path: Path, synchronous: Literal["normal", "full"], caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> list[bool]:
        store = open_store(tmp_path, synchronous)
        store.prune_error = sqlite3.OperationalError("disk I/O error")
        writer = BatchWriter(store)
        more: list[bool] = []
        writer.maintain([1], time.time(), more.append)
        await until(lambda: more)
        writer.close()
        store.close()
        return more

    with caplog.at_level(logging.ERROR, logger="gateway.durable.writer"):
        assert asyncio.run(go()) == [False]
    assert [record.getMessage() for record in caplog.records] == ["durable queue: pruning old replies failed"]


# -- close ---------------------------------------------------------------------------------------------


@synchronous
async def test_close_waits_for_the_commit_in_flight_and_the_commits_its_follow_up_starts(tmp_path: Path) -> None:
    store = open_store(tmp_path, "full")
    writer = BatchWriter(store)
    store.gate.clear()
    events: list[tuple[str, str]] = []

    def first() -> None:
        note(events, "first")()
        writer.commit([request(2)], [], [], [], note(events, "second"))

    writer.commit([request(1)], [], [], [], first)
    store.gate.set()
    writer.close()  # on the loop's thread, without handing the loop a turn
    assert events == [("first", LOOP), ("second", LOOP)]
    assert store.count() == 2 and writer.commits == 2 and not writer.busy
    for _ in range(3):  # the commit thread's hand-offs to the loop, queued meanwhile, now run: and change nothing
        await asyncio.sleep(0)
    assert events == [("first", LOOP), ("second", LOOP)]
    store.close()


@synchronous
async def test_after_close_commits_and_pruning_run_on_the_caller_s_thread(tmp_path: Path) -> None:
    store = open_store(tmp_path, "full")
    writer = BatchWriter(store)
    writer.close()
    assert not writer.threaded
    events: list[tuple[str, str]] = []
    writer.commit([request(1)], [], [], [], note(events, "committed"))
    assert events == [("committed", LOOP)] and store.count() == 1
    writer.maintain([], time.time(), lambda more: note(events, "pruned")())
    assert events[-1] == ("pruned", LOOP)
    assert store.threads == [("commit", LOOP), ("prune", LOOP)]
    writer.close()  # twice: nothing left to do
    store.close()


def test_a_prune_that_ends_after_the_loop_closed_is_dropped_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(tmp_path, "full")
    writer = BatchWriter(store)
    store.gate.clear()
    more: list[bool] = []

    async def go() -> None:
        writer.maintain([], time.time(), more.append)
        await until(lambda: store.threads)

    asyncio.run(go())  # the queue stopped: the loop is closed with the prune still on the commit thread
    with caplog.at_level(logging.ERROR):
        store.gate.set()
        writer.close()  # joins the commit thread: the prune and its hand-off have run
    assert more == [] and caplog.records == []
    store.close()
