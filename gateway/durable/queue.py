"""The durable queue: store QoS 1/2 requests before acknowledging them, store replies before publishing them.

:class:`DurableQueue` sits between the transport and the dispatcher. Requests
arriving in one event-loop turn are collected and written in **one** sqlite
transaction at the end of the turn (group commit); only then are they
acknowledged to the broker, in order of arrival. Replies take the same path
the other way: stored in the turn's transaction, then published; the broker's
confirmation marks them done in a later one.

The dispatcher starts an idempotent call at once, before the commit: if the
gateway dies first, the request was not acknowledged and comes again, and
running it twice is harmless. A fast call's reply then lands in the same
commit as its request: one commit per request, not two.

A non-idempotent call is recorded as started (in a group commit too) before
it is handed to an executor, and at most ``max_started`` of them are handed
over at a time: so after a crash only those really under way are answered
``unavailable``, and the rest of a backlog still runs.

After a crash, :meth:`DurableQueue.start` republishes stored replies the
broker had not confirmed and hands back the requests that were stored but not
answered. A request delivered again (same device, topic, correlation id and
payload: the same 16-byte key, ``gateway.dispatch.dedup_key``) is answered from
the store, or left to the first copy while that one still runs.

The replies kept for that are bounded three ways: ``result_ttl`` seconds,
``max_results`` rows and ``max_results_bytes`` bytes (what a kept row holds: its
reply, topic and correlation data). The index in memory holds one small,
fixed-size entry per kept row (a key is a digest, whatever the request), so it
is bounded by the count. Every ``PRUNE_INTERVAL`` the queue picks the rows past
a bound, oldest first, and the writer deletes them and gives a step of the freed
pages back to the file system (``gateway/durable/store.py``); while steps remain, the
next prune comes sooner. Nothing of this runs per request.

With ``synchronous = "full"`` (an fsync per commit) the commits run on a thread
of their own, one in flight at a time, while the next batch grows on the loop
(``gateway/durable/writer.py``; with ``"normal"`` they stay on the loop, which
is cheaper than the hand-off). Everything above holds either way: acks, starts
and publishes follow their own commit, batch after batch, on the loop, and a
reply in the batch in flight is still found by :meth:`DurableQueue.claim`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.durable.store import ROW_BYTES, ReplyRow, RequestRow, RequestStore, StoredRequest
from gateway.durable.writer import BatchWriter
from gateway.errors import Overloaded
from gateway.topics import BROKER_MAX_LEVELS, publish_problem
from gateway.transport.base import InboundMessage, OutboundMessage, Transport

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 1.0  # seconds between prunes of old confirmed rows
SHRINK_INTERVAL = 0.1  # seconds to the next prune while the file is shrinking or rows are due
PRUNE_ROWS = 2000  # rows deleted by one prune at most (a few ms)
PRUNE_BYTES = 2 * 1024 * 1024  # and bytes: long rows are slower to delete (overflow pages, ~0.2 ms per 60 KiB)
# Confirmations ride along with the next commit, or are written after this long: losing one costs
# only a republished (duplicate) reply, and a commit of its own would delay the next request.
CONFIRM_DELAY = 0.05


@dataclass(slots=True)
class _Known:
    """A request the queue keeps an answer for: a call under way (with a dedup key), or a stored outcome."""

    seq: int
    key: bytes | None  # the dedup key; None for requests that have none (events, refused requests)
    finished: float | None = None  # time.time() of the stored outcome; None while the call runs
    size: int = 0  # bytes its row keeps once finished


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The outcome of :meth:`DurableQueue.claim` for a request seen before."""

    reply: OutboundMessage | None  # the first copy's reply (to republish), None while it still runs


class DurableQueue:
    """Group-committed request intake and reply output over a :class:`RequestStore`."""

    def __init__(
        self,
        store: RequestStore,
        transport: Transport,
        result_ttl: float,
        max_results: int,
        max_results_bytes: int = 64 * 1024 * 1024,
        max_started: int = 16,
        max_waiting: int = 1000,
    ) -> None:
        self.store = store
        self._transport = transport
        self._ttl = result_ttl
        self._max_results = max_results
        self._max_bytes = max_results_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._inbound: list[InboundMessage] = []  # stored in the coming commit, acknowledged after it
        self._rows: list[RequestRow] = []
        self._replies: list[ReplyRow] = []
        self._outbound: list[tuple[int, OutboundMessage]] = []
        self._confirmed: list[int] = []
        self._calls: dict[int, _Known] = {}  # seq → its index entry, for calls still running
        self._index: collections.OrderedDict[bytes, _Known] = collections.OrderedDict()  # dedup key → request
        self._kept: collections.deque[_Known] = collections.deque()  # stored outcomes, in order of finishing
        self._kept_bytes = 0
        self._stopped = False
        self._staged: dict[int, OutboundMessage] = {}  # replies in the coming commit or the one in flight
        self._writer = BatchWriter(store)
        self._held = 0  # calls in the commit in flight, started once it is written
        self._pruner: asyncio.TimerHandle | None = None
        self._confirm_timer: asyncio.TimerHandle | None = None
        self._max_started = max_started
        self._max_waiting = max_waiting
        self._running: set[int] = set()  # non-idempotent calls recorded as started, not finished
        # Calls leave in order of arrival: (seq, start, record); record=True for non-idempotent ones,
        # which are recorded as started in the commit before they start and count against max_started.
        self._starting: list[tuple[int, Callable[[], None], bool]] = []  # start right after the coming commit
        self._waiting: collections.deque[tuple[int, Callable[[], None], bool]] = collections.deque()

    @property
    def commits(self) -> int:
        """Group commits written so far."""
        return self._writer.commits

    def start(self) -> list[tuple[InboundMessage, int, bool]]:
        """Begin: republish unconfirmed replies; return the stored requests that still need an answer.

        Each comes with its sequence number and whether it was started (it may have run).

        Call on the event loop before the transport connects: the transport queues the republished replies.
        """
        self._loop = asyncio.get_running_loop()
        for seq, key, finished, size in self.store.kept():
            known = _Known(seq, key if isinstance(key, bytes) else None, finished, size + ROW_BYTES)
            self._keep(known)
            if known.key is not None:
                self._remember(known.key, known)
        republished = 0
        for reply in self.store.unconfirmed():
            problem = None if reply.topic is None else publish_problem(reply.topic, BROKER_MAX_LEVELS)
            if problem is not None:
                # Stored by a gateway that did not check reply topics: resent, it would cost the connection.
                log.warning("durable queue: stored reply %d not republished: the topic %s", reply.seq, problem)
                self._confirm(reply.seq)
            elif reply.topic is not None:
                message = OutboundMessage(reply.topic, reply.payload, reply.qos, reply.correlation)
                self._send(reply.seq, message)
                republished += 1
        pending = [(_inbound(row), row.seq, row.started) for row in self.store.unfinished()]
        if republished or pending:
            log.info(
                "durable queue %s: %d unconfirmed replies republished, %d unanswered requests to work off",
                self.store.path,
                republished,
                len(pending),
            )
        self._pruner = self._loop.call_later(PRUNE_INTERVAL, self.prune)
        return pending

    async def settle(self) -> None:
        """Commit what is staged and wait until every commit's follow-up has run: its acks, calls and replies.

        For a clean stop: after it, the replies of finished calls are with the transport, to be drained.
        """
        if self._scheduled and not self._writer.busy:
            self._flush()
        await self._writer.idle()

    def stop(self) -> None:
        """Wait for the commit in flight, write what is staged and close the store."""
        self._stopped = True
        if self._pruner is not None:
            self._pruner.cancel()
        self._writer.close()  # from here on, commits run on the loop
        self._flush()
        self.store.close()

    # -- intake ----------------------------------------------------------------------------

    def stage(self, message: InboundMessage) -> int:
        """Take a QoS 1/2 request: stored at the end of this turn, then acknowledged; its sequence number."""
        seq = self.store.allocate()
        self._rows.append(
            (
                seq,
                time.time() - (time.monotonic() - message.received_at),
                message.topic,
                message.payload,
                message.qos,
                message.response_topic,
                message.correlation_data,
                message.message_expiry,
            )
        )
        self._inbound.append(message)
        self._schedule()
        return seq

    def claim(self, seq: int, key: bytes) -> Duplicate | None:
        """Register request ``seq`` as the call for ``key``; a :class:`Duplicate` if ``key`` was seen."""
        known = self._index.get(key)
        if known is not None and known.seq != seq and not self._expired(known):
            if known.finished is None:
                return Duplicate(None)
            reply = self._staged.get(known.seq) or self._stored_reply(known.seq)
            if reply is not None:
                return Duplicate(reply)
        known = _Known(seq, key)
        self._calls[seq] = known
        self._remember(key, known)
        return None

    def start_in_order(self, seq: int, start: Callable[[], None], record: bool) -> None:
        """Call ``start`` for request ``seq`` after the calls that arrived before it.

        ``record``: first record it as started (in a commit), and keep at most ``max_started``
        such calls under way. Without it, and with nothing ahead, ``start`` runs at once.
        ``Overloaded`` when too many calls wait.
        """
        if not self._starting and not self._waiting and not self._held:
            if not record:
                start()
                return
            if len(self._running) < self._max_started:
                self._running.add(seq)
                self._starting.append((seq, start, record))
                self._schedule()
                return
        if len(self._waiting) >= self._max_waiting:
            raise Overloaded(f"{len(self._waiting)} calls are waiting to start, the limit is {self._max_waiting}")
        self._waiting.append((seq, start, record))
        self._promote()

    def _promote(self) -> None:
        """Move waiting calls, in order, to the coming commit while the window allows."""
        waiting = self._waiting
        while waiting:
            seq, _, record = waiting[0]
            if record:
                if len(self._running) >= self._max_started:
                    return
                self._running.add(seq)
            self._starting.append(waiting.popleft())
            self._schedule()

    def finish(self, seq: int, reply: OutboundMessage | None) -> None:
        """Store the outcome of request ``seq``, then publish ``reply`` (``None``: nothing to send)."""
        running = self._running
        if seq in running:
            running.discard(seq)
            if self._waiting:
                self._promote()
        now = time.time()
        known = self._calls.pop(seq, None) or _Known(seq, None)
        known.finished = now
        if reply is None:
            known.size = ROW_BYTES
            self._replies.append((seq, known.key, now, None, b"", 0, None))
        else:
            correlation = reply.correlation_data
            known.size = ROW_BYTES + len(reply.payload) + len(reply.topic) + (len(correlation) if correlation else 0)
            self._replies.append((seq, known.key, now, reply.topic, reply.payload, reply.qos, correlation))
            self._outbound.append((seq, reply))
            self._staged[seq] = reply
        self._kept.append(known)  # what _keep does, without a call on the hot path
        self._kept_bytes += known.size
        self._schedule()

    # -- the group commit --------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            if self._writer.busy:
                return  # committed as soon as the commit in flight is written
            # call_soon runs after every callback already queued for this turn: one commit per turn.
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        writer = self._writer
        if writer.busy:
            return  # the batch grows until the commit in flight is written; _scheduled says to go then
        self._scheduled = False
        if self._confirm_timer is not None:
            self._confirm_timer.cancel()
            self._confirm_timer = None
        inbound, self._inbound = self._inbound, []
        outbound, self._outbound = self._outbound, []
        rows, self._rows = self._rows, []
        replies, self._replies = self._replies, []
        confirmed, self._confirmed = self._confirmed, []
        starting, self._starting = self._starting, []

        def written() -> None:
            """After the commit: acks in order of arrival, then the calls it recorded, then its replies."""
            self._held = 0
            staged = self._staged
            for seq, _ in outbound:
                staged.pop(seq, None)
            ack = self._transport.ack
            for message in inbound:
                ack(message)
            for _, start, _ in starting:
                start()
            for seq, reply in outbound:
                self._send(seq, reply)
            if writer.threaded and self._scheduled:
                self._flush()  # what arrived while this commit was in flight goes at once

        if not (rows or replies or confirmed or starting):
            written()
            return
        self._held = len(starting)
        writer.commit(rows, replies, confirmed, [seq for seq, _, record in starting if record], written)

    def _send(self, seq: int, reply: OutboundMessage) -> None:
        try:
            self._transport.publish(reply, lambda: self._confirm(seq))
        except (ValueError, TypeError, OSError) as exc:
            log.warning("could not publish to %r: %s", reply.topic, exc)
            self._confirm(seq)

    def _confirm(self, seq: int) -> None:
        self._confirmed.append(seq)
        if self._confirm_timer is None and not self._scheduled:
            loop = self._loop or asyncio.get_running_loop()
            self._confirm_timer = loop.call_later(CONFIRM_DELAY, self._confirms_due)

    def _confirms_due(self) -> None:
        self._confirm_timer = None
        self._schedule()

    # -- the dedup index ---------------------------------------------------------------------

    def _remember(self, key: bytes, known: _Known) -> None:
        index = self._index
        index[key] = known
        index.move_to_end(key)
        while len(index) > self._max_results:
            index.popitem(last=False)

    def _keep(self, known: _Known) -> None:
        """A stored outcome, to be pruned in its turn."""
        self._kept.append(known)
        self._kept_bytes += known.size

    def _expired(self, known: _Known) -> bool:
        return known.finished is not None and known.finished < time.time() - self._ttl

    def _stored_reply(self, seq: int) -> OutboundMessage | None:
        for reply in self.store.reply_of(seq):
            if reply.topic is not None:
                return OutboundMessage(reply.topic, reply.payload, reply.qos, reply.correlation)
        return None

    def _due(self, known: _Known, cutoff: float) -> bool:
        """Whether the oldest kept outcome goes: past its time, or the rows or their bytes over a bound."""
        finished = known.finished
        return (
            (finished is not None and finished < cutoff)
            or len(self._kept) > self._max_results
            or self._kept_bytes > self._max_bytes
        )

    def prune(self) -> None:
        """Pick the kept rows past a bound, oldest first, and have the writer delete them and shrink the file a step.

        At most ``PRUNE_ROWS`` rows and ``PRUNE_BYTES`` bytes at a time. Runs every ``PRUNE_INTERVAL``,
        every ``SHRINK_INTERVAL`` while rows are due or the file is shrinking.
        """
        if self._pruner is not None:
            self._pruner.cancel()  # called early (a test): one timer at a time
            self._pruner = None
        cutoff = time.time() - self._ttl
        kept, index = self._kept, self._index
        seqs: list[int] = []
        freed = 0
        while kept and len(seqs) < PRUNE_ROWS and freed < PRUNE_BYTES and self._due(kept[0], cutoff):
            known = kept.popleft()
            self._kept_bytes -= known.size
            freed += known.size
            seqs.append(known.seq)
            if known.key is not None and index.get(known.key) is known:
                del index[known.key]
        backlog = bool(kept) and self._due(kept[0], cutoff)
        self._writer.maintain(seqs, cutoff, lambda shrinking: self._pruned(backlog or shrinking))

    def _pruned(self, more: bool) -> None:
        if self._loop is not None and not self._stopped:
            if self._pruner is not None:
                self._pruner.cancel()
            self._pruner = self._loop.call_later(SHRINK_INTERVAL if more else PRUNE_INTERVAL, self.prune)


def _inbound(row: StoredRequest) -> InboundMessage:
    """Rebuild a stored request; its arrival time is carried over so deadlines still hold."""
    age = max(time.time() - row.arrived, 0.0)
    return InboundMessage(
        row.topic,
        row.payload,
        row.qos,
        time.monotonic() - age,
        row.response_topic,
        row.correlation,
        row.expiry,
    )
