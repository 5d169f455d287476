"""Calls on their way to executors: queue, dispatch, acks, results, reconnects and losses.

Like the local executor, calls submitted in one event-loop turn go out together
at the end of the turn, one write per executor. Each executor holds at most its
``capacity`` (workers × the local pipeline depth), the least loaded first, ties
taken in turn so every executor gets calls; its own local executor picks the
worker and enforces each call's timeout (killing a stuck worker), so replies are
the very bytes a local worker would have produced.

Delivery: the executor acknowledges every read. When a connection breaks, the
calls stay with their executor for ``reconnect_grace`` seconds; if it
reconnects, calls it never acknowledged are sent again and the results of
acknowledged ones are asked for again (``RESUME``): it runs a call id at most
once and keeps recent results, so a call runs once even across reconnects. If
it does not come back, or Mesos reports its task gone, its calls of functions
marked ``idempotent`` go back to the front of the queue for another executor,
at most ``retry_budget`` times each; the others are answered ``unavailable``:
they may have run, so they are not run again. A call on an executor whose
channel is down is answered ``unavailable`` once its own timeout has passed, so
no device waits longer than that for the grace period. Calls still queued here
are never lost with an executor; they go to the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import Overloaded, Unavailable, WireError, error_for_code
from gateway.executors import framing
from gateway.executors.base import Call, next_live, settle
from gateway.executors.framing import ReplyKind
from gateway.executors.local import PIPELINE
from gateway.executors.mesos import wire
from gateway.executors.mesos.channel import ChannelConnection, ExecutorLink

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Pending:
    """One call from submit to its reply."""

    call_id: int
    call: Call
    pickled: bytes
    future: asyncio.Future[bytes]
    queued_at: float
    attempts: int = 1  # executors it was given to after a loss, counting the first


class RemotePool:
    """The executors' links and the calls queued for and sent to them (see the module docstring)."""

    def __init__(
        self, max_queue: int, reconnect_grace: float, heartbeat: float, channel_timeout: float, retry_budget: int = 0
    ) -> None:
        self._max_queue = max_queue
        self._retry_budget = retry_budget
        self._grace = reconnect_grace
        self._heartbeat = heartbeat
        self._timeout = channel_timeout
        self._links: dict[str, ExecutorLink] = {}
        self._queue: deque[Pending] = deque()
        self._count = 0  # calls queued or sent, not finished
        self._next_id = 1
        self._turn = 0  # where the next dispatch starts looking, so ties rotate
        self._dispatch_soon = False
        self._idle: asyncio.Future[None] | None = None
        self._connected: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_flight(self) -> int:
        """Calls queued or sent to an executor, not finished."""
        return self._count

    @property
    def queued(self) -> int:
        """Calls waiting here for an executor."""
        return len(self._queue)

    def links(self) -> list[ExecutorLink]:
        """Every executor link, connected or not."""
        return list(self._links.values())

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

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use this event loop (kept: ``get_running_loop`` costs a system call per submit on 3.11)."""
        self._loop = loop
        self._connected = asyncio.Event()

    async def wait_for_executors(self, count: int, timeout: float, give_up: Callable[[], bool]) -> int:
        """Wait until ``count`` executors are usable, ``timeout`` passes or ``give_up()``; return how many are."""
        assert self._connected is not None
        deadline = time.monotonic() + timeout
        while self.usable() < count and not give_up() and (left := deadline - time.monotonic()) > 0:
            self._connected.clear()
            try:
                await asyncio.wait_for(self._connected.wait(), left)
            except TimeoutError:
                break
        return self.usable()

    def wake(self) -> None:
        """Make :meth:`wait_for_executors` look at ``give_up`` again."""
        if self._connected is not None:
            self._connected.set()

    def submit(self, call: Call, key: str) -> asyncio.Future[bytes]:
        """Queue ``call`` for this turn's dispatch; ``Overloaded`` at once when the queue is full."""
        assert self._loop is not None
        if self._count >= self._max_queue:
            raise Overloaded(
                f"{self._count} calls are queued or running on Mesos executors, the limit is {self._max_queue}"
            )
        future: asyncio.Future[bytes] = self._loop.create_future()
        try:
            pickled = wire.pickle_call(key, call.kwargs)
        except Exception as exc:  # an argument pickle refuses: the function's types, not the device, are at fault
            future.set_exception(Unavailable(f"the arguments cannot be sent to a Mesos executor: {exc}"))
            return future
        call_id, self._next_id = self._next_id, self._next_id + 1
        self._count += 1
        self._queue.append(Pending(call_id, call, pickled, future, time.monotonic()))
        if not self._dispatch_soon:
            self._dispatch_soon = True
            self._loop.call_soon(self._dispatch)
        return future

    def take_queued(self) -> list[Pending]:
        """Hand over every call waiting for an executor (the owner runs or answers them elsewhere)."""
        taken = list(self._queue)
        self._queue.clear()
        self._count -= len(taken)
        if self._count == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        return taken

    # Links, as the scheduler launches executors and Mesos reports them gone.

    def add_link(self, executor_id: str, token: str, agent_id: str, dedicated: bool = False) -> ExecutorLink:
        """Expect an executor that was just launched (or, ``dedicated``, is about to be for one call)."""
        link = ExecutorLink(executor_id, token, agent_id, dedicated=dedicated)
        self._links[executor_id] = link
        return link

    def submit_to(self, link: ExecutorLink, call: Call, key: str) -> asyncio.Future[bytes]:
        """Keep ``call`` for ``link``'s dedicated executor: sent when it connects, never to another."""
        assert self._loop is not None
        future: asyncio.Future[bytes] = self._loop.create_future()
        try:
            pickled = wire.pickle_call(key, call.kwargs)
        except Exception as exc:  # as in submit
            future.set_exception(Unavailable(f"the arguments cannot be sent to a Mesos executor: {exc}"))
            return future
        call_id, self._next_id = self._next_id, self._next_id + 1
        self._count += 1
        link.reserved = Pending(call_id, call, pickled, future, time.monotonic())
        return future

    def end_call(self, executor_id: str, error: WireError) -> None:
        """Answer a dedicated executor's call with ``error`` (its deadline passed) if it has no answer yet."""
        link = self._links.get(executor_id)
        if link is None:
            return
        calls = list(link.outstanding.values())
        link.outstanding.clear()
        if link.reserved is not None:
            calls.append(link.reserved)
            link.reserved = None
        for pending in calls:
            self._finish(pending, error)

    def remove_link(self, executor_id: str, why: str, expected: bool = False) -> None:
        """The executor is gone for good: answer its calls ``unavailable`` and forget it."""
        link = self._links.pop(executor_id, None)
        if link is None:
            return
        if link.lost_timer is not None:
            link.lost_timer.cancel()
        if link.connection is not None:
            link.connection.close(why, logging.INFO if expected else logging.WARNING)
        if link.reserved is not None:  # its executor never connected
            self._finish(link.reserved, Unavailable(f"the Mesos task for the call ended before it ran: {why}"))
            link.reserved = None
        self._fail_sent(link, f"the Mesos executor running the call was lost: {why}", retry=not link.dedicated)

    # What the channel reports (ChannelListener).

    def link_for(self, executor_id: str) -> ExecutorLink | None:
        """The link of a launched executor."""
        return self._links.get(executor_id)

    def connected(self, link: ExecutorLink, connection: ChannelConnection) -> None:
        """Take the executor into the rotation; resend what it may not have."""
        link.connection = connection
        link.capacity = max(1, int(link.info.get("workers", 1))) * PIPELINE
        link.draining = False
        link.last_busy = time.monotonic()
        if link.lost_timer is not None:
            link.lost_timer.cancel()
            link.lost_timer = None
        unacked = [pending for _, pending in link.unacked]
        unacked_ids = {p.call_id for p in unacked}
        acked = [i for i in link.outstanding if i not in unacked_ids]
        link.unacked.clear()
        link.sent = 0
        if acked:
            link.outbox.append(wire.resume_frame(acked))
        for pending in unacked:
            self._send(link, pending, time.monotonic())
        if link.reserved is not None:
            self._send(link, link.reserved, time.monotonic())
            link.reserved = None
        if link.outbox:
            log.info(
                "executor %s is back: %d calls sent again, %d results asked for",
                link.executor_id,
                len(unacked),
                len(acked),
            )
            link.send(b"".join(link.outbox))
            link.outbox.clear()
        log.info("executor %s connected (pid %s on %s)", link.executor_id, link.info.get("pid"), link.info.get("host"))
        if self._connected is not None:
            self._connected.set()
        if self._queue:
            self._dispatch()

    def frames(self, link: ExecutorLink, bodies: list[bytes]) -> None:
        """Settle results, drop acknowledged calls from the resend list, note a drain."""
        outstanding = link.outstanding
        for body in bodies:
            kind = body[0]
            if kind == wire.Kind.RESULT:
                _, call_id, reply_kind, _ = wire.RESULT_HEADER.unpack_from(body)
                pending = outstanding.pop(call_id, None)
                if pending is not None:  # else a duplicate, after a resend
                    payload = body[wire.RESULT_HEADER.size :]
                    if reply_kind == ReplyKind.OK:
                        self._finish(pending, payload)
                    else:
                        self._finish(pending, error_for_code(*framing.parse_error(payload)))
            elif kind == wire.Kind.ACK:
                count, unacked = wire.parse_ack(body), link.unacked
                while unacked and unacked[0][0] <= count:
                    unacked.popleft()
            elif kind == wire.Kind.DRAIN:
                log.info("executor %s is stopping; sending it no more calls", link.executor_id)
                link.draining = True
            elif kind != wire.Kind.PING:
                if link.connection is not None:
                    link.connection.close(f"unexpected frame kind {kind}")
                return
        if self._queue:
            self._dispatch()

    def disconnected(self, link: ExecutorLink, connection: ChannelConnection) -> None:
        """Give the executor ``reconnect_grace`` seconds to come back before its calls fail."""
        if link.executor_id not in self._links:
            return  # it was removed: its task ended
        log.warning("lost the channel to executor %s", link.executor_id)
        if link.lost_timer is None and self._loop is not None:
            link.lost_timer = self._loop.call_later(self._grace, self._gave_up, link)

    def _gave_up(self, link: ExecutorLink) -> None:
        link.lost_timer = None
        if link.connection is None and link.outstanding:
            why = f"its executor did not reconnect within {self._grace:g} s"
            self._fail_sent(link, why, retry=not link.dedicated)
            link.unacked.clear()  # a late reconnection must not resend what went elsewhere

    # Heartbeats and stale calls: called every heartbeat by the owner.

    def tick(self) -> None:
        """Ping quiet connections, close silent ones, fail queued calls no executor will take."""
        now = time.monotonic()
        ping = wire.control(wire.Kind.PING)
        for link in self._links.values():
            if link.outstanding:
                link.last_busy = now
            connection = link.connection
            if connection is None:
                continue
            # The executor pings every heartbeat and acks every read, so silence means it or the path is gone.
            if now - connection.last_heard > self._timeout:
                connection.close(f"nothing heard for {self._timeout:g} s")
            elif now - connection.last_sent >= self._heartbeat:
                connection.send(ping)
        for link in self._links.values():
            if link.connection is None and link.outstanding:
                late = [p for p in link.outstanding.values() if now - p.queued_at > p.call.timeout]
                for pending in late:
                    del link.outstanding[pending.call_id]
                    self._finish(pending, Unavailable("the Mesos executor running the call is unreachable"))
        if self._queue and not self.usable():
            while self._queue and now - self._queue[0].queued_at > self._queue[0].call.timeout:
                self._finish(self._queue.popleft(), Unavailable("no Mesos executor is connected to run the call"))

    async def stop(self, grace: float) -> None:
        """Let calls finish for up to ``grace`` seconds, then answer the rest ``unavailable``."""
        if self._count and grace > 0:
            self._idle = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._idle], timeout=grace)
        while self._queue:
            self._finish(self._queue.popleft(), Unavailable("the gateway stopped before the call finished"))
        for link in self._links.values():
            if link.lost_timer is not None:
                link.lost_timer.cancel()
            if link.reserved is not None:
                self._finish(link.reserved, Unavailable("the gateway stopped before the call ran"))
                link.reserved = None
            self._fail_sent(link, "the gateway stopped before the call finished", prefix=False, retry=False)

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
        link.outbox.append(wire.call_frame(pending.call_id, pending.call.timeout, left, pending.pickled))
        link.outstanding[pending.call_id] = pending
        link.sent += 1
        link.unacked.append((link.sent, pending))

    def _fail_sent(self, link: ExecutorLink, why: str, prefix: bool = True, retry: bool = True) -> None:
        calls = list(link.outstanding.values())
        link.outstanding.clear()
        link.unacked.clear()
        now, again = time.monotonic(), []
        for pending in calls:
            expires_at = pending.call.expires_at
            if (
                retry
                and pending.call.spec.idempotent
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
            self._queue.extendleft(reversed(again))  # first in line: they have waited longest
            log.warning(
                "%d calls of idempotent functions on executor %s go to another executor: %s",
                len(again), link.executor_id, why,
            )  # fmt: skip
            if not self._dispatch_soon and self._loop is not None:
                self._dispatch_soon = True
                self._loop.call_soon(self._dispatch)
        failed = len(calls) - len(again)
        if failed and prefix:
            log.error("%d calls on executor %s answered unavailable: %s", failed, link.executor_id, why)

    def _finish(self, pending: Pending, outcome: bytes | WireError) -> None:
        self._count -= 1
        settle(pending.future, outcome)
        if self._count == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
