"""The durable queue with the dispatcher, the in-memory transport and a real sqlite file.

Covers: one commit per loop turn and acks only after it, in order; replies stored
before they are published; duplicates answered from the store; recovery after a
"crash" (a queue dropped without stopping) reruns idempotent calls, answers the
others ``unavailable`` and republishes unconfirmed replies. With
``synchronous="full"`` (commits on the commit thread): acks in order across
batches while a commit is in flight, replies and recorded calls only after
their commit, duplicates found in the batch in flight, and a stop that waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack

from gateway.dispatch import Dispatcher, DispatchOptions
from gateway.durable.queue import DurableQueue
from gateway.durable.store import DONE, REPLIED, STARTED, ReplyRow, RequestRow, RequestStore
from gateway.executors.inline import InlineExecutor
from gateway.registry import Registry
from gateway.topics import TopicTemplate
from gateway.transport.base import OutboundMessage
from gateway.transport.memory import MemoryTransport
from tests.support.aio import synchronous
from tests.support.durable_funcs import RUNS, request, router, settle
from tests.support.timeouts import scaled, until


class UnconfirmedTransport(MemoryTransport):
    """Records publishes but never confirms them, like a broker that went away."""

    def publish(self, message: OutboundMessage, on_confirmed: Any = None) -> None:
        self.published.append(message)


def make(
    path: Path, transport: MemoryTransport | None = None, store: RequestStore | None = None
) -> tuple[Dispatcher, MemoryTransport, DurableQueue]:
    transport = transport or MemoryTransport()
    durable = DurableQueue(store or RequestStore(path), transport, result_ttl=60.0, max_results=100)
    namespace = (TopicTemplate.parse("devices/{device_id}/{function:path}"),)
    dispatcher = Dispatcher(
        Registry.from_specs(router.specs),
        {"inline": InlineExecutor(10, 1000)},
        "inline",
        transport,
        DispatchOptions(namespace=namespace, max_payload_bytes=1000, call_timeout=1.0),
        ["devices/+/#"],
        durable,
    )
    return dispatcher, transport, durable


def states(path: Path) -> list[int]:
    store = RequestStore(path)
    try:
        return [reply.state for reply in store.replies()] + [STARTED for _ in store.unfinished()]
    finally:
        store.close()


class HeldStore(RequestStore):
    """A real store with an fsync per commit, whose commits wait until the test lets each one through."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "full")
        self.permits = threading.Semaphore(0)
        self.batches: list[list[int]] = []  # the request seqs of each commit, in commit order

    def commit(
        self,
        requests: Iterable[RequestRow],
        replies: Iterable[ReplyRow],
        done: Iterable[int],
        started: Iterable[int] = (),
    ) -> None:
        assert self.permits.acquire(timeout=scaled(10)), "the test never let this commit through"
        requests = list(requests)
        self.batches.append([row[0] for row in requests])
        super().commit(requests, replies, done, started)

    def let_through(self, commits: int = 1) -> None:
        self.permits.release(commits)


@synchronous
async def test_a_turn_is_stored_in_one_commit_then_acked_in_order(tmp_path: Path) -> None:
    dispatcher, transport, durable = make(tmp_path / "q.sqlite3")
    durable.start()
    messages = [request("devices/d1/add", {"a": n, "b": 1}, str(n).encode()) for n in range(20)]
    for message in messages:
        dispatcher.handle(message)
    assert transport.acked == [] and durable.store.count() == 0  # nothing acked before the commit
    await settle()
    assert transport.acked == messages
    assert durable.commits == 1  # requests and their (inline) replies; confirmations ride with a later one
    assert [msgpack.unpackb(m.payload) for m in transport.published] == [{"result": n + 1} for n in range(20)]
    assert states(tmp_path / "q.sqlite3") == [REPLIED] * 20
    durable.stop()  # writes the pending confirmations
    assert states(tmp_path / "q.sqlite3") == [DONE] * 20


@synchronous
async def test_a_duplicate_is_answered_from_the_store_without_running_again(tmp_path: Path) -> None:
    dispatcher, transport, durable = make(tmp_path / "q.sqlite3")
    durable.start()
    RUNS.clear()
    dispatcher.handle(request("devices/d1/charge", {"amount": 5}, b"c1"))
    await settle()
    dispatcher.handle(request("devices/d1/charge", {"amount": 5}, b"c1"))
    dispatcher.handle(request("devices/d2/charge", {"amount": 5}, b"c1"))  # another device: its own call
    await settle()
    assert RUNS == ["charge", "charge"]
    assert [m.correlation_data for m in transport.published] == [b"c1", b"c1", b"c1"]
    assert {m.payload for m in transport.published} == {msgpack.packb({"result": 5})}
    durable.stop()


@synchronous
async def test_a_duplicate_of_a_running_call_is_left_to_the_first_copy(tmp_path: Path) -> None:
    dispatcher, transport, durable = make(tmp_path / "q.sqlite3")
    durable.start()
    RUNS.clear()
    dispatcher.handle(request("devices/d1/nap", {"seconds": 0.05}, b"n1"))
    await settle()
    dispatcher.handle(request("devices/d1/nap", {"seconds": 0.05}, b"n1"))
    await settle()
    assert RUNS == ["nap"] and len(transport.acked) == 2  # the copy is acknowledged, not run
    await until(lambda: len(transport.published) == 1)
    await settle()  # a reply to the copy, or a run of it, would follow the first's reply in these turns
    assert RUNS == ["nap"] and len(transport.published) == 1
    durable.stop()


@synchronous
async def test_after_a_crash_idempotent_calls_rerun_and_the_others_answer_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    dispatcher, _, durable = make(path)
    durable.start()
    # Stored and acked; the process dies before the calls finish (the naps never end here).
    dispatcher.handle(request("devices/d1/nap", {"seconds": 30}, b"n1"))
    await settle()
    assert states(path) == [STARTED]
    durable.store.close()  # the crash: nothing more is written

    RUNS.clear()
    dispatcher, transport, durable = make(path)
    for message, seq, started in durable.start():
        dispatcher.run_stored(message, seq, started=started)
    await settle()
    reply = msgpack.unpackb(transport.published[0].payload)
    assert reply["error"]["code"] == "unavailable"
    durable.stop()
    assert states(path) == [DONE]


@synchronous
async def test_idempotent_calls_are_rerun_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = RequestStore(path)
    seq = store.allocate()
    store.commit([(seq, time.time(), "devices/d1/add", msgpack.packb({"a": 2, "b": 3}), 1, "r/t", b"x", None)], [], [])
    store.close()
    RUNS.clear()
    dispatcher, transport, durable = make(path)
    for message, stored, started in durable.start():
        dispatcher.run_stored(message, stored, started=started)
    await settle()
    assert RUNS == ["add"]
    assert msgpack.unpackb(transport.published[0].payload) == {"result": 5}
    durable.stop()


@synchronous
async def test_unconfirmed_replies_are_republished_on_start(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    dispatcher, transport, durable = make(path, UnconfirmedTransport())
    durable.start()
    dispatcher.handle(request("devices/d1/add", {"a": 1, "b": 1}, b"a1"))
    await settle()
    assert len(transport.published) == 1
    assert states(path) == [REPLIED]
    durable.store.close()

    RUNS.clear()
    dispatcher, transport, durable = make(path)
    assert durable.start() == []
    await settle()
    assert RUNS == []
    assert [(m.topic, m.correlation_data, msgpack.unpackb(m.payload)) for m in transport.published] == [
        ("r/t", b"a1", {"result": 2})
    ]
    # The broker delivers the request again (its ack was lost): answered from the store.
    dispatcher.handle(request("devices/d1/add", {"a": 1, "b": 1}, b"a1"))
    await settle()
    assert RUNS == [] and len(transport.published) == 2
    durable.stop()
    assert states(path) == [DONE, DONE]


@synchronous
async def test_a_stored_reply_to_a_topic_the_broker_refuses_is_not_republished(tmp_path: Path) -> None:
    # A file from a gateway that did not check reply topics: resending these would cost the connection.
    path = tmp_path / "q.sqlite3"
    store = RequestStore(path)
    poison = ["roost/replies/a/\x01", "roost/replies/a/\ufffe", "roost/replies/a" + "/x" * 250, "ok/topic"]
    for topic in poison:
        seq = store.allocate()
        store.commit([(seq, 0.0, "t", b"", 1, None, None, None)], [(seq, None, time.time(), topic, b"x", 1, None)], [])
    store.close()
    _, transport, durable = make(path)
    assert durable.start() == []
    await settle()
    assert [m.topic for m in transport.published] == ["ok/topic"]
    durable.stop()
    assert states(path) == [DONE] * 4  # never tried again


def test_old_replies_are_pruned(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "q.sqlite3")
    for n in range(10):
        seq = store.allocate()
        store.commit([(seq, 0.0, "t", b"", 1, None, None, None)], [(seq, None, float(n), "r", b"x", 1, None)], [seq])
    assert store.prune([9, 10], older_than=5.0) == 7  # the five finished before 5.0, and the two named
    assert store.count() == 3
    store.close()


@synchronous
async def test_calls_start_in_order_of_arrival_whatever_their_kind(tmp_path: Path) -> None:
    dispatcher, _, durable = make(tmp_path / "q.sqlite3")
    durable.start()
    RUNS.clear()
    dispatcher.handle(request("devices/d1/charge", {"amount": 1}, b"c"))  # waits for its "started" commit
    dispatcher.handle(request("devices/d1/add", {"a": 1, "b": 1}, b"a"))  # idempotent, but arrived later
    await settle()
    assert RUNS == ["charge", "add"]
    durable.stop()


@synchronous
async def test_with_full_sync_acks_stay_in_order_across_batches_while_a_commit_is_in_flight(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "q.sqlite3")
    dispatcher, transport, durable = make(tmp_path / "q.sqlite3", store=store)
    durable.start()
    messages = [request("devices/d1/add", {"a": n, "b": 1}, str(n).encode()) for n in range(7)]
    for message in messages[:3]:
        dispatcher.handle(message)
    await settle()  # batch 1 is in flight, held
    for message in messages[3:5]:
        dispatcher.handle(message)
    await settle()
    for message in messages[5:]:  # another turn: the loop keeps serving, batch 2 grows
        dispatcher.handle(message)
    await settle()
    assert transport.acked == [] and transport.published == []
    store.let_through()
    await until(lambda: len(transport.acked) >= 3)
    assert transport.acked == messages[:3]  # batch 2 is in flight now: not acked
    assert [msgpack.unpackb(m.payload) for m in transport.published] == [{"result": n + 1} for n in range(3)]
    store.let_through()
    await until(lambda: len(transport.acked) >= 7)
    assert transport.acked == messages
    assert len(transport.published) == 7
    assert store.batches == [[1, 2, 3], [4, 5, 6, 7]]  # one commit in flight at a time; the next one grew
    store.let_through(10)
    durable.stop()
    assert states(tmp_path / "q.sqlite3") == [DONE] * 7


@synchronous
async def test_with_full_sync_calls_start_and_replies_go_out_only_after_their_commit(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = HeldStore(path)
    dispatcher, transport, durable = make(path, store=store)
    durable.start()
    RUNS.clear()
    dispatcher.handle(request("devices/d1/charge", {"amount": 3}, b"c1"))
    dispatcher.handle(request("devices/d1/add", {"a": 1, "b": 1}, b"a1"))  # arrived later: starts later
    await settle()
    assert RUNS == []  # "started" is not written yet
    store.let_through()
    await until(lambda: len(transport.acked) == 2)
    assert RUNS == ["charge", "add"]
    await settle()
    assert transport.published == []  # their replies are in the commit in flight
    assert states(path) == [STARTED, STARTED]  # both stored, neither answered yet
    store.let_through()
    await until(lambda: len(transport.published) == 2)
    assert states(path) == [REPLIED, REPLIED]  # stored before published; the confirmations wait for a permit
    assert [msgpack.unpackb(m.payload) for m in transport.published] == [{"result": 3}, {"result": 2}]
    store.let_through(10)
    durable.stop()


@synchronous
async def test_with_full_sync_a_duplicate_is_answered_from_the_batch_in_flight(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "q.sqlite3")
    dispatcher, transport, durable = make(tmp_path / "q.sqlite3", store=store)
    durable.start()
    RUNS.clear()
    dispatcher.handle(request("devices/d1/charge", {"amount": 5}, b"c1"))
    await settle()
    store.let_through()
    await until(lambda: RUNS == ["charge"])  # its reply is in the commit now in flight, held
    dispatcher.handle(request("devices/d1/charge", {"amount": 5}, b"c1"))  # delivered again meanwhile
    await settle()
    assert RUNS == ["charge"] and transport.published == []
    store.let_through()  # the first reply's commit
    await until(lambda: len(transport.published) == 1)
    store.let_through()  # the duplicate and its answer
    await until(lambda: len(transport.published) == 2)
    assert RUNS == ["charge"]
    assert [m.payload for m in transport.published] == [msgpack.packb({"result": 5})] * 2
    # Once written, the reply is found in the store, even while another commit is in flight.
    dispatcher.handle(request("devices/d1/add", {"a": 1, "b": 1}, b"a1"))
    await settle()
    dispatcher.handle(request("devices/d1/charge", {"amount": 5}, b"c1"))
    await settle()
    assert RUNS == ["charge", "add"]
    store.let_through(10)
    await until(lambda: len(transport.published) == 4)
    assert transport.published[3].payload == msgpack.packb({"result": 5})
    durable.stop()


@synchronous
async def test_with_full_sync_stop_waits_for_the_commit_in_flight_and_writes_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = HeldStore(path)
    dispatcher, transport, durable = make(path, store=store)
    durable.start()
    messages = [request("devices/d1/add", {"a": n, "b": 1}, str(n).encode()) for n in range(4)]
    dispatcher.handle(messages[0])
    dispatcher.handle(messages[1])
    await settle()  # in flight
    dispatcher.handle(messages[2])
    dispatcher.handle(messages[3])
    await settle()  # waiting behind it
    store.let_through(10)
    durable.stop()  # the loop never ran the commit's follow-up: stop does, then commits the rest
    assert transport.acked == messages
    assert len(transport.published) == 4
    assert store.batches == [[1, 2], [3, 4], []]  # the last one: the confirmations, on the loop
    assert states(path) == [DONE] * 4


@synchronous
async def test_with_full_sync_a_stream_is_acked_and_started_in_order(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    dispatcher, transport, durable = make(path, store=RequestStore(path, "full"))
    durable.start()
    RUNS.clear()
    messages = []
    for turn in range(50):
        for n in range(turn * 4, turn * 4 + 4):
            if n % 2:
                messages.append(request("devices/d1/charge", {"amount": n}, str(n).encode()))
            else:
                messages.append(request("devices/d1/add", {"a": n, "b": 0}, str(n).encode()))
            dispatcher.handle(messages[-1])
        await asyncio.sleep(0)
    await until(lambda: len(transport.published) == len(messages))
    assert transport.acked == messages
    results = {m.correlation_data: msgpack.unpackb(m.payload) for m in transport.published}
    assert results == {str(n).encode(): {"result": n} for n in range(200)}
    assert RUNS == ["add", "charge"] * 100
    assert durable.commits < 100  # batches grew while commits were in flight
    durable.stop()
    assert states(path) == [DONE] * 200
