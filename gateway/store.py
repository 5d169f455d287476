"""The durable request store: an embedded sqlite database in WAL mode (stdlib ``sqlite3``).

One row per QoS 1/2 request, written before the request is acknowledged to
the broker. A row moves through these states:

* ``QUEUED``: stored; not started, or of an idempotent function (which may run again);
* ``STARTED``: a non-idempotent call recorded as started before it was handed to an executor;
* ``REPLIED``: the reply is stored, its publish not yet confirmed by the broker;
* ``DONE``: the broker confirmed the reply (or there was none to send).

Rows keep their reply (and the device's correlation key) for a while after
``DONE``, so a request delivered again is answered from the store instead of
running again; :meth:`RequestStore.prune` bounds them by age and count.

Every method is synchronous and cheap: with ``synchronous=NORMAL`` a WAL commit
is a ``write()`` without ``fsync`` (about 70 µs for a batch of ten on this
project's CI machine), which survives a crash of the process, not of the
machine. ``synchronous=FULL`` adds an fsync per commit (0.5–1.5 ms), so the
durable queue writes from a thread of its own (``gateway/durable_writer.py``).

Two connections: writes (:meth:`~RequestStore.commit`, :meth:`~RequestStore.prune`)
go through one, used by one thread at a time (the event loop, or the commit
thread); reads go through the other, used by the event loop. In WAL mode a
reader never waits for the writer and sees every commit that has returned.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

QUEUED = 0
STARTED = 1
REPLIED = 2
DONE = 3

# seq, arrived (time.time()), topic, payload, qos, response topic, correlation data, message expiry
RequestRow: TypeAlias = tuple[int, float, str, bytes, int, str | None, bytes | None, int | None]
# seq, dedup key, finished (time.time()), reply topic (None: no reply), payload, qos, correlation data
ReplyRow: TypeAlias = tuple[int, str | None, float, str | None, bytes, int, bytes | None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY,
    arrived REAL NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB,
    qos INTEGER NOT NULL,
    response_topic TEXT,
    correlation BLOB,
    expiry INTEGER,
    state INTEGER NOT NULL,
    dedup_key TEXT,
    finished REAL,
    reply_topic TEXT,
    reply_payload BLOB,
    reply_qos INTEGER,
    reply_correlation BLOB
);
CREATE INDEX IF NOT EXISTS requests_open ON requests(state) WHERE state < 2;
CREATE INDEX IF NOT EXISTS requests_finished ON requests(finished) WHERE state = 3;
"""


@dataclass(slots=True)
class StoredRequest:
    """A request as it arrived: enough to run it again after a restart."""

    seq: int
    arrived: float  # time.time() when it arrived
    topic: str
    payload: bytes
    qos: int
    response_topic: str | None
    correlation: bytes | None
    expiry: int | None
    started: bool  # a non-idempotent call that may have run before the crash


@dataclass(slots=True)
class StoredReply:
    """A reply kept for republishing and for answering duplicates."""

    seq: int
    state: int
    dedup_key: str | None
    finished: float
    topic: str | None  # None: the request needed no reply (an event, a dropped request)
    payload: bytes
    qos: int
    correlation: bytes | None


class RequestStore:
    """The sqlite file behind the durable queue; one writer at a time, reads from the event loop."""

    def __init__(self, path: Path, synchronous: Literal["normal", "full"] = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit, one per group commit.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        self._reader = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        row = self._reader.execute("SELECT max(seq) FROM requests").fetchone()
        self._next_seq = (row[0] or 0) + 1
        self.path = path
        self.synchronous = synchronous

    def allocate(self) -> int:
        """The sequence number of the next request (rows are written by :meth:`commit`)."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def commit(
        self,
        requests: Iterable[RequestRow],
        replies: Iterable[ReplyRow],
        done: Iterable[int],
        started: Iterable[int] = (),
    ) -> None:
        """One transaction: new requests, calls about to start, stored replies, and confirmed replies."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO requests (seq, arrived, topic, payload, qos, response_topic, correlation, expiry, state)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, {QUEUED})",
                requests,
            )
            db.executemany(f"UPDATE requests SET state = {STARTED} WHERE seq = ?", ((seq,) for seq in started))
            # The request's payload is no longer needed once its reply is stored.
            db.executemany(
                f"UPDATE requests SET state = CASE WHEN ? IS NULL THEN {DONE} ELSE {REPLIED} END,"
                " dedup_key = ?, finished = ?, reply_topic = ?, reply_payload = ?, reply_qos = ?,"
                " reply_correlation = ?, payload = NULL WHERE seq = ?",
                ((topic, key, at, topic, body, qos, corr, seq) for seq, key, at, topic, body, qos, corr in replies),
            )
            db.executemany(f"UPDATE requests SET state = {DONE} WHERE seq = ?", ((seq,) for seq in done))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def unfinished(self) -> list[StoredRequest]:
        """Requests stored but not answered when the last run ended, oldest first."""
        rows = self._reader.execute(
            "SELECT seq, arrived, topic, payload, qos, response_topic, correlation, expiry, state FROM requests"
            f" WHERE state <= {STARTED} ORDER BY seq"
        )
        return [
            StoredRequest(seq, arrived, topic, payload, qos, response_topic, corr, expiry, state == STARTED)
            for seq, arrived, topic, payload, qos, response_topic, corr, expiry, state in rows
        ]

    def replies(self) -> Iterator[StoredReply]:
        """Stored replies (confirmed or not), oldest first."""
        rows = self._reader.execute(
            "SELECT seq, state, dedup_key, finished, reply_topic, reply_payload, reply_qos, reply_correlation"
            f" FROM requests WHERE state >= {REPLIED} ORDER BY seq"
        )
        for seq, state, key, finished, topic, payload, qos, corr in rows:
            yield StoredReply(seq, state, key, finished, topic, payload or b"", qos or 0, corr)

    def reply_of(self, seq: int) -> list[StoredReply]:
        """The stored reply of request ``seq`` (an empty list when there is none yet)."""
        rows = self._reader.execute(
            "SELECT seq, state, dedup_key, finished, reply_topic, reply_payload, reply_qos, reply_correlation"
            f" FROM requests WHERE seq = ? AND state >= {REPLIED}",
            (seq,),
        )
        return [
            StoredReply(seq, state, key, at, topic, body or b"", qos or 0, corr)
            for seq, state, key, at, topic, body, qos, corr in rows
        ]

    def prune(self, older_than: float, keep: int) -> int:
        """Delete confirmed rows finished before ``older_than`` and beyond the newest ``keep``; the count."""
        db = self._db
        db.execute("BEGIN")
        try:
            cursor = db.execute(f"DELETE FROM requests WHERE state = {DONE} AND finished < ?", (older_than,))
            deleted = cursor.rowcount
            row = db.execute(f"SELECT count(*) FROM requests WHERE state = {DONE}").fetchone()
            excess = row[0] - keep
            if excess > 0:
                cursor = db.execute(
                    f"DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE state = {DONE}"
                    " ORDER BY seq LIMIT ?)",
                    (excess,),
                )
                deleted += cursor.rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")  # or every later BEGIN fails: "cannot start a transaction within a transaction"
            raise
        return deleted

    def count(self) -> int:
        """Rows in the store (for tests and the log)."""
        row = self._reader.execute("SELECT count(*) FROM requests").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database (WAL content stays valid)."""
        self._reader.close()
        self._db.close()
