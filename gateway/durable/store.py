"""The durable request store: an embedded sqlite database in WAL mode (stdlib ``sqlite3``).

One row per QoS 1/2 request, written before the request is acknowledged to
the broker. A row moves through these states:

* ``QUEUED``: stored; not started, or of an idempotent function (which may run again);
* ``STARTED``: a non-idempotent call recorded as started before it was handed to an executor;
* ``REPLIED``: the reply is stored, its publish not yet confirmed by the broker;
* ``DONE``: the broker confirmed the reply (or there was none to send).

Once its reply is stored, a row keeps only that reply and the request's
16-byte dedup key (the request's payload, topic, correlation data and response
topic are dropped in the same commit). Rows stay a while after ``DONE``, so a
request delivered again is answered from the store instead of running again;
the durable queue chooses which go (by age, count and bytes) and
:meth:`RequestStore.prune` deletes them.

The file gives the space back: it is in ``auto_vacuum = INCREMENTAL`` mode, and
:meth:`RequestStore.shrink` returns free pages to the file system a bounded step
at a time (an incremental vacuum), then truncates the WAL with a
``wal_checkpoint(TRUNCATE)``; ``journal_size_limit`` keeps the WAL from staying
at the size of its largest burst in between. A file written before that mode
existed is converted once when opened (a ``VACUUM``, proportional to what it holds).

Every method is synchronous and cheap: with ``synchronous=NORMAL`` a WAL commit
is a ``write()`` without ``fsync`` (about 70 µs for a batch of ten on this
project's CI machine), which survives a crash of the process, not of the
machine. ``synchronous=FULL`` adds an fsync per commit (0.5–1.5 ms), so the
durable queue writes from a thread of its own (``gateway/durable/writer.py``).

Two connections: writes (:meth:`~RequestStore.commit`, :meth:`~RequestStore.prune`,
:meth:`~RequestStore.shrink`) go through one, used by one thread at a time (the event loop, or the commit
thread); reads go through the other, used by the event loop. In WAL mode a
reader never waits for the writer and sees every commit that has returned.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

log = logging.getLogger(__name__)

QUEUED = 0
STARTED = 1
REPLIED = 2
DONE = 3

# seq, arrived (time.time()), topic, payload, qos, response topic, correlation data, message expiry
RequestRow: TypeAlias = tuple[int, float, str, bytes, int, str | None, bytes | None, int | None]
# seq, dedup key, finished (time.time()), reply topic (None: no reply), payload, qos, correlation data
ReplyRow: TypeAlias = tuple[int, bytes | None, float, str | None, bytes, int, bytes | None]
# seq, dedup key (str: written by an older version, never matched), finished, bytes of its reply
KeptRow: TypeAlias = tuple[int, bytes | str | None, float, int]

ROW_BYTES = 100  # what a kept row takes beside its reply: numbers, dedup key, record and index overhead
INCREMENTAL = 2  # PRAGMA auto_vacuum
WAL_LIMIT = 4 * 1024 * 1024  # journal_size_limit: about what the automatic checkpoints (1000 pages) leave
SHRINK_STEP = 256  # pages given back per shrink step (1 MiB of 4 KiB pages: ~5 ms)

# What a row no longer needs once its reply is stored.
_DROP_REQUEST = "payload = NULL, correlation = NULL, response_topic = NULL, topic = ''"

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
    dedup_key BLOB,
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
    dedup_key: bytes | str | None  # str: written by an older version
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
        self._db.execute(f"PRAGMA auto_vacuum={INCREMENTAL}")  # applies to a new file (before its first table)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
            self._convert(path)
        self._reader = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._shrunk = False  # pages were given back since the last truncating checkpoint
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
            # Once its reply is stored, the request is never run again: only the reply is kept.
            db.executemany(
                f"UPDATE requests SET state = CASE WHEN ? IS NULL THEN {DONE} ELSE {REPLIED} END,"
                " dedup_key = ?, finished = ?, reply_topic = ?, reply_payload = ?, reply_qos = ?,"
                f" reply_correlation = ?, {_DROP_REQUEST} WHERE seq = ?",
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

    def unconfirmed(self) -> list[StoredReply]:
        """Stored replies the broker has not confirmed, oldest first (to republish on start)."""
        rows = self._reader.execute(
            "SELECT seq, state, dedup_key, finished, reply_topic, reply_payload, reply_qos, reply_correlation"
            f" FROM requests WHERE state = {REPLIED} ORDER BY seq"
        )
        return [
            StoredReply(seq, state, key, at, topic, body or b"", qos or 0, corr)
            for seq, state, key, at, topic, body, qos, corr in rows
        ]

    def kept(self) -> list[KeptRow]:
        """Every row with a stored reply, in order of finishing: its seq, dedup key, finish time and reply bytes."""
        rows = self._reader.execute(
            "SELECT seq, dedup_key, finished, ifnull(length(reply_payload), 0) + ifnull(length(reply_correlation), 0)"
            f" + ifnull(length(CAST(reply_topic AS BLOB)), 0) FROM requests WHERE state >= {REPLIED}"
            " ORDER BY finished, seq"
        )
        return [(seq, key, finished, size) for seq, key, finished, size in rows]

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

    def prune(self, seqs: Iterable[int], older_than: float, limit: int = 1000) -> int:
        """Delete the confirmed rows among ``seqs``, and up to ``limit`` confirmed rows finished before ``older_than``.

        Rows not confirmed yet stay (their reply is still to be published); the second part catches them
        once they are. Returns the number of rows deleted.
        """
        db = self._db
        db.execute("BEGIN")
        try:
            cursor = db.executemany(f"DELETE FROM requests WHERE seq = ? AND state = {DONE}", ((seq,) for seq in seqs))
            deleted = max(cursor.rowcount, 0)
            cursor = db.execute(
                f"DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE state = {DONE} AND finished < ?"
                " LIMIT ?)",
                (older_than, limit),
            )
            deleted += cursor.rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")  # or every later BEGIN fails: "cannot start a transaction within a transaction"
            raise
        return deleted

    def shrink(self, max_pages: int = SHRINK_STEP) -> bool:
        """Give free pages back to the file system, at most ``max_pages``; True when another step is due.

        An eighth of the file (at least 256 pages) stays free for the next inserts, so a steady load
        does not give pages back and take them again every second. After the last step, a truncating
        checkpoint copies the WAL into the file and cuts the WAL to zero bytes; it does not wait for
        readers (if one is in the way, the next call tries again).
        """
        db = self._db
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        slack = max(256, db.execute("PRAGMA page_count").fetchone()[0] // 8)
        if free > slack:
            step = min(free - slack, max_pages)
            # executescript steps the pragma to its end; execute() would free one page (it returns no columns).
            db.executescript(f"PRAGMA incremental_vacuum({step})")
            self._shrunk = True
            return True
        if self._shrunk:
            self._shrunk = not self.checkpoint()
        return False

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes; False if a reader kept it from finishing."""
        db = self._db
        db.execute("PRAGMA busy_timeout = 0")  # a reader elsewhere (an operator's sqlite3) must not stall the loop
        try:
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            db.execute("PRAGMA busy_timeout = 5000")
        return not busy

    def size(self) -> int:
        """Bytes on disk: the database file and its WAL."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())

    def count(self) -> int:
        """Rows in the store (for tests and the log)."""
        row = self._reader.execute("SELECT count(*) FROM requests").fetchone()
        return int(row[0])

    def _convert(self, path: Path) -> None:
        """Turn on incremental vacuum in a file from before (once): VACUUM it, without what it no longer needs.

        That is what replied rows keep of their request, and their old dedup keys (the repr of the
        correlation id: up to hundreds of KiB each, and never equal to a key of this version).
        """
        size = path.stat().st_size
        started = time.monotonic()
        self._db.execute(f"UPDATE requests SET {_DROP_REQUEST}, dedup_key = NULL WHERE state >= {REPLIED}")
        self._db.execute("VACUUM")
        self.checkpoint()  # the VACUUM went through the WAL: as large as the file
        log.info(
            "durable queue %s: converted to auto_vacuum=incremental in %.1f s, %d bytes → %d",
            path,
            time.monotonic() - started,
            size,
            path.stat().st_size,
        )

    def close(self) -> None:
        """Close the database (WAL content stays valid)."""
        self._reader.close()
        self._db.close()
