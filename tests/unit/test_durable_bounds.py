"""The durable queue's duplicate index stays bounded, and its file gives the space back.

Covers: the dedup key (16 bytes; a reused correlation id with other arguments or another topic
is a new request, a resend of the same request is a duplicate, across a restart too); the
replies kept for duplicates bounded by count and by bytes, and the index with them; a
request with 60 KiB of Correlation Data refused, and the file shrinking back once its row
is pruned (on the loop, and on the commit thread); a file from before converted to
incremental vacuum; the two settings' errors. The dispatcher, the in-memory transport
and a real sqlite file, as in ``test_durable.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gateway.codec import PayloadLimits
from gateway.config import load_settings
from gateway.dispatch import Dispatcher, DispatchOptions, dedup_key
from gateway.durable.queue import DurableQueue
from gateway.durable.store import DONE, RequestStore
from gateway.errors import ConfigError
from gateway.executors.inline import InlineExecutor
from gateway.protocol import ReplyAddress
from gateway.registry import Registry
from gateway.topics import TopicTemplate
from gateway.transport.base import InboundMessage
from gateway.transport.memory import MemoryTransport
from tests.support.aio import synchronous
from tests.support.durable_funcs import RUNS, request, router, settle
from tests.support.timeouts import until


def make(
    path: Path,
    *,
    max_results: int = 100,
    max_bytes: int = 64 * 1024 * 1024,
    ttl: float = 60.0,
    sync: str = "normal",
    max_correlation: int = 1024,
) -> tuple[Dispatcher, MemoryTransport, DurableQueue]:
    transport = MemoryTransport()
    store = RequestStore(path, "full" if sync == "full" else "normal")
    durable = DurableQueue(store, transport, result_ttl=ttl, max_results=max_results, max_results_bytes=max_bytes)
    namespace = (TopicTemplate.parse("devices/{device_id}/{function:path}"),)
    dispatcher = Dispatcher(
        Registry.from_specs(router.specs),
        {"inline": InlineExecutor(10, 64 * 1024)},
        "inline",
        transport,
        DispatchOptions(
            namespace=namespace,
            payload_limits=PayloadLimits(max_bytes=4096, max_correlation_bytes=max_correlation),
            call_timeout=1.0,
        ),
        ["devices/+/#"],
        durable,
    )
    return dispatcher, transport, durable


def results(transport: MemoryTransport) -> list[Any]:
    return [msgpack.unpackb(m.payload) for m in transport.published]


def confirmed(path: Path, count: int) -> Callable[[], bool]:
    """Whether ``count`` rows are confirmed (only confirmed rows are pruned)."""

    def check() -> bool:
        with sqlite3.connect(path) as db:
            return int(db.execute(f"SELECT count(*) FROM requests WHERE state = {DONE}").fetchone()[0]) == count

    return check


def test_the_dedup_key_is_16_bytes_and_names_one_request() -> None:
    def key(topic: str, args: dict[str, Any], corr: bytes | None, cid: str | None = None) -> bytes | None:
        payload = msgpack.packb({**args, "$cid": cid} if cid is not None else args)
        message = InboundMessage(topic, payload, 1, 0.0, "r/t", corr)
        return dedup_key(topic.split("/")[1], message, ReplyAddress("r/t", 1, corr, cid))

    first = key("devices/d1/add", {"a": 5, "b": 5}, b"1")
    assert first is not None and len(first) == 16
    assert key("devices/d1/add", {"a": 5, "b": 5}, b"1") == first  # a resend: the same request
    others = [
        key("devices/d1/add", {"a": 5, "b": 6}, b"1"),  # other arguments
        key("devices/d1/sub", {"a": 5, "b": 5}, b"1"),  # another function
        key("devices/d2/add", {"a": 5, "b": 5}, b"1"),  # another device
        key("devices/d1/add", {"a": 5, "b": 5}, b"2"),  # another id
        key("devices/d1/add", {"a": 5, "b": 5}, None, "1"),  # the id as $cid (a str) rather than Correlation Data
    ]
    assert len({first, *others}) == 6
    assert len(key("devices/d1/add", {}, bytes(60 * 1024)) or b"") == 16  # whatever the id's size
    assert key("devices/d1/add", {"a": 5, "b": 5}, None) is None  # an event has no identity to dedup on


@synchronous
async def test_a_reused_correlation_id_is_a_new_request_unless_it_is_the_same_request(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    dispatcher, transport, durable = make(path)
    durable.start()
    RUNS.clear()
    # The review's case: one correlation id for several calls each got the first one's reply.
    calls: list[tuple[str, dict[str, Any]]] = [
        ("devices/d1/add", {"a": 5, "b": 5}),
        ("devices/d1/echo", {"value": "x"}),
        ("devices/d1/charge", {"amount": 7}),
        ("devices/d1/charge", {"amount": 8}),
    ]
    for topic, args in calls:
        dispatcher.handle(request(topic, args, b"1"))
        await settle()
    assert RUNS == ["add", "echo", "charge", "charge"]
    assert results(transport) == [{"result": 10}, {"result": "x"}, {"result": 7}, {"result": 8}]
    dispatcher.handle(request("devices/d1/charge", {"amount": 7}, b"1"))  # the same request again
    await settle()
    assert RUNS == ["add", "echo", "charge", "charge"] and results(transport)[-1] == {"result": 7}
    durable.stop()

    # After a restart the keys are read back from the file: still a duplicate, still not run.
    dispatcher, transport, durable = make(path)
    assert durable.start() == []
    dispatcher.handle(request("devices/d1/charge", {"amount": 8}, b"1"))
    await settle()
    assert RUNS == ["add", "echo", "charge", "charge"] and results(transport) == [{"result": 8}]
    durable.stop()


@synchronous
async def test_the_replies_kept_for_duplicates_are_bounded_by_count_and_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    dispatcher, _, durable = make(path, max_results=20, max_bytes=64 * 1024)
    durable.start()
    RUNS.clear()
    for n in range(30):  # small replies: the count is the bound
        dispatcher.handle(request("devices/d1/charge", {"amount": n}, b"c%d" % n))
    await settle()
    await until(confirmed(path, 30), what="30 confirmed replies")
    durable.prune()
    assert durable.store.count() == 20
    for n in range(20):  # 4 KiB replies, 4,212 bytes a row with the topic, id and row: 64 KiB hold 15
        dispatcher.handle(request("devices/d1/blob", {"size": 4096}, b"b%d" % n))
    await settle()
    await until(confirmed(path, 40), what="40 confirmed replies")
    durable.prune()
    assert durable.store.count() == 15  # the bytes are the bound now: b5 to b19

    RUNS.clear()
    dispatcher.handle(request("devices/d1/blob", {"size": 4096}, b"b19"))  # kept: answered from the store
    dispatcher.handle(request("devices/d1/blob", {"size": 4096}, b"b0"))  # pruned: a new request
    dispatcher.handle(request("devices/d1/charge", {"amount": 0}, b"c0"))  # pruned long ago: a new request
    await settle()
    assert RUNS == ["blob", "charge"]
    durable.stop()


@synchronous
async def test_the_index_takes_the_same_few_hundred_bytes_per_entry_whatever_the_correlation_data(
    tmp_path: Path,
) -> None:
    _, _, durable = make(tmp_path / "q.sqlite3", max_results=20_000)
    durable.start()
    payload = msgpack.packb({"a": 1, "b": 2})
    ids = [n.to_bytes(4, "big") * (15 * 1024) for n in range(2000)]  # 60 KiB each
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq, corr in enumerate(ids, 1):
            message = InboundMessage("devices/d1/add", payload, 1, 0.0, "r/t", corr)
            key = dedup_key("d1", message, ReplyAddress("r/t", 1, corr))
            assert key is not None and durable.claim(seq, key) is None
            durable.finish(seq, None)
            if seq % 100 == 0:
                await settle()  # commits: what is written leaves memory
        await settle()
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(ids)
    finally:
        tracemalloc.stop()
    print(f"{per_entry:.0f} bytes per entry")
    assert per_entry < 400  # the old key alone was the repr of the correlation data: 240 KiB here
    durable.stop()


def pruned(durable: DurableQueue, condition: Callable[[], bool]) -> Callable[[], bool]:
    """``condition``, after a prune (as the queue's timer would run it, without waiting for the timer)."""

    def check() -> bool:
        durable.prune()
        return condition()

    return check


@synchronous
async def test_long_correlation_data_is_refused_and_neither_echoed_nor_kept(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    dispatcher, transport, durable = make(path)
    durable.start()
    empty = durable.store.size()
    for n in range(100):  # stored before they are parsed (60 KiB each), then answered bad_payload
        dispatcher.handle(request("devices/d1/add", {"a": n, "b": 1}, n.to_bytes(4, "big") * (15 * 1024)))
        await asyncio.sleep(0)
    await until(lambda: len(transport.published) == 100, what="100 replies")
    errors = {msgpack.unpackb(m.payload)["error"]["message"] for m in transport.published}
    assert errors == {"Correlation Data is 61440 bytes, over the limit of 1024"}
    assert {m.correlation_data for m in transport.published} == {None}  # not carried back
    with sqlite3.connect(path) as db:  # a replied row keeps its reply only: not the request's copy of the id
        assert db.execute("SELECT count(*) FROM requests WHERE correlation IS NOT NULL").fetchone()[0] == 0
    assert durable.store.size() < empty + 6 * 1024 * 1024  # what the WAL keeps (journal_size_limit, 4 MiB)
    RUNS.clear()
    dispatcher.handle(request("devices/d1/add", {"a": 1, "b": 1}, bytes(1024)))  # at the limit: served
    await settle()
    assert RUNS == ["add"] and transport.published[-1].correlation_data == bytes(1024)
    # MQTT 3.1.1: the id is $cid in the payload; the error goes to the default reply topic, without it.
    payload = msgpack.packb({"a": 1, "b": 1, "$cid": bytes(2000)})
    dispatcher.handle(InboundMessage("devices/d1/add", payload, 1, time.monotonic(), ack_token=b"311"))
    await settle()
    last = transport.published[-1]
    assert (last.topic, msgpack.unpackb(last.payload)) == (
        "roost/replies/d1",
        {"error": {"code": "bad_payload", "message": "$cid is 2000 bytes, over the limit of 1024"}},
    )
    assert RUNS == ["add"]
    durable.stop()


HEAVY = 30.0  # base seconds for the waits of the 12 MB test below


@pytest.mark.parametrize("sync", ["normal", "full"])
def test_the_file_shrinks_once_the_kept_replies_are_pruned(tmp_path: Path, sync: str) -> None:
    """On the loop (``normal``) and on the commit thread (``full``, where each request is also stored alone first)."""

    async def run() -> None:
        path = tmp_path / "q.sqlite3"
        # Ids of 60 KiB allowed here: each reply echoes one, and is kept.
        dispatcher, transport, durable = make(path, ttl=0.001, sync=sync, max_correlation=65535)
        durable.start()
        empty = durable.store.size()
        for n in range(200):
            dispatcher.handle(request("devices/d1/add", {"a": n, "b": 1}, n.to_bytes(4, "big") * (15 * 1024)))
            await asyncio.sleep(0)
        # 12 MB through sqlite, each reply stored then confirmed in commits of their own: a heavier wait than most
        # (a stress run with two busy processes took over 10 s), so a base of 30 s on the suite's one scale.
        await until(lambda: len(transport.published) == 200, HEAVY, "200 replies")
        assert [msgpack.unpackb(m.payload) for m in transport.published] == [{"result": n + 1} for n in range(200)]
        await until(confirmed(path, 200), HEAVY, "200 confirmed replies")
        grown = durable.store.size()
        assert grown > empty + 200 * 60 * 1024
        await until(pruned(durable, lambda: durable.store.count() == 0), HEAVY, "every row pruned")
        wal = path.with_name(path.name + "-wal")
        await until(pruned(durable, lambda: wal.stat().st_size == 0), HEAVY, "the file to shrink and the WAL truncated")
        assert durable.store.size() < empty + 2 * 1024 * 1024
        print(f"{sync}: {empty / 1e6:.2f} MB → {grown / 1e6:.1f} MB → {durable.store.size() / 1e6:.2f} MB")
        durable.stop()

    asyncio.run(run())


OLD_SCHEMA = """
CREATE TABLE requests (
    seq INTEGER PRIMARY KEY, arrived REAL NOT NULL, topic TEXT NOT NULL, payload BLOB, qos INTEGER NOT NULL,
    response_topic TEXT, correlation BLOB, expiry INTEGER, state INTEGER NOT NULL, dedup_key TEXT, finished REAL,
    reply_topic TEXT, reply_payload BLOB, reply_qos INTEGER, reply_correlation BLOB
);
"""


@synchronous
async def test_a_file_from_before_is_converted_once_and_its_old_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    with sqlite3.connect(path) as db:  # as the previous version left it: no auto_vacuum, replied rows kept whole
        db.executescript(OLD_SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "INSERT INTO requests VALUES (1, ?, 'devices/d1/add', ?, 1, 'r/t', ?, NULL, ?, ?, ?, 'r/t', ?, 1, ?)",
            (time.time(), bytes(60 * 1024), b"1", DONE, "d1\x00b'1'", time.time(), msgpack.packb({"result": 2}), b"1"),
        )
    dispatcher, transport, durable = make(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        assert db.execute("SELECT payload, correlation, dedup_key FROM requests").fetchall() == [(None, None, None)]
    assert durable.start() == []
    RUNS.clear()
    dispatcher.handle(request("devices/d1/add", {"a": 1, "b": 1}, b"1"))  # the old key is not this request's
    await settle()
    assert RUNS == ["add"] and results(transport) == [{"result": 2}]
    durable.stop()
    with sqlite3.connect(path) as db:
        assert [state for (state,) in db.execute("SELECT state FROM requests ORDER BY seq")] == [DONE, DONE]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ROOST_LIMITS__MAX_CORRELATION_BYTES", "8", "'limits.max_correlation_bytes': Input should be greater than"),
        ("ROOST_LIMITS__MAX_CORRELATION_BYTES", "70000", "'limits.max_correlation_bytes': Input should be less than"),
        ("ROOST_DURABLE__MAX_RESULTS_BYTES", "1000", "'durable.max_results_bytes': Input should be greater than"),
    ],
)
def test_the_bounds_settings_refuse_what_makes_no_sense(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting {message}")
