"""The executors' links: launched, connected, reconnected, silent and lost, and what that means for their calls.

A link is added when :mod:`.placement` or :mod:`.isolated` launches an
executor, and removed when Mesos reports its task gone; in between, the channel
reports its connections, frames and breaks (this class is the channel's
:class:`~gateway.executors.mesos.channel.ChannelListener`). Queueing and
dispatching the calls is the job of the
:class:`~gateway.executors.mesos.call_queue.MesosCallQueue` this class extends.

Delivery: the executor acknowledges every read. When a connection breaks, the
calls stay with their executor for ``reconnect_grace`` seconds; if it
reconnects, calls it never acknowledged are sent again and the results of
acknowledged ones are asked for again (``RESUME``): it runs a call id at most
once and keeps recent results, so a call runs once even across reconnects. If
it does not come back, or Mesos reports its task gone, its calls of functions
marked ``idempotent`` go back to the queue for another executor, and the others
are answered ``unavailable``. A call on an executor whose channel is down is
answered ``unavailable`` once its own timeout has passed, so no device waits
longer than that for the grace period. Calls still queued are never lost with
an executor; they go to the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.errors import Unavailable, WireError, error_for_code
from gateway.executors import framing
from gateway.executors.framing import ReplyKind
from gateway.executors.local.executor import PIPELINE
from gateway.executors.mesos import wire
from gateway.executors.mesos.call_queue import MesosCallQueue
from gateway.executors.mesos.channel import ChannelConnection, ExecutorLink
from gateway.executors.mesos.counters import MesosCounters

log = logging.getLogger(__name__)


class RemotePool(MesosCallQueue):
    """The executors' links and the calls queued for and sent to them (see the module docstring)."""

    def __init__(
        self,
        max_queue: int,
        reconnect_grace: float,
        heartbeat: float,
        channel_timeout: float,
        retry_budget: int = 0,
        counters: MesosCounters | None = None,
    ) -> None:
        super().__init__(max_queue, retry_budget, counters)
        self._grace = reconnect_grace
        self._heartbeat = heartbeat
        self._timeout = channel_timeout
        self._connected: asyncio.Event | None = None

    def links(self) -> list[ExecutorLink]:
        """Every executor link, connected or not."""
        return list(self._links.values())

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

    # Links, as the scheduler launches executors and Mesos reports them gone.

    def add_link(self, executor_id: str, token: str, agent_id: str, dedicated: bool = False) -> ExecutorLink:
        """Expect an executor that was just launched (or, ``dedicated``, is about to be for one call)."""
        link = ExecutorLink(executor_id, token, agent_id, dedicated=dedicated)
        self._links[executor_id] = link
        return link

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
        self.counters.executor_connections += 1
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
        busy = bool(outstanding)
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
        if busy:  # its idle time (for the elastic pool) starts at its last result
            link.last_busy = time.monotonic()
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
                self.counters.calls_lost += len(late)
                for pending in late:
                    del link.outstanding[pending.call_id]
                    self._finish(pending, Unavailable("the Mesos executor running the call is unreachable"))
        if self._queue and not self.usable():
            while self._queue and now - self._queue[0].queued_at > self._queue[0].call.timeout:
                self._finish(self._queue.popleft(), Unavailable("no Mesos executor is connected to run the call"))

    async def stop(self, grace: float) -> None:
        """Let calls finish for up to ``grace`` seconds, then answer the rest ``unavailable``."""
        await self._drain(grace)
        while self._queue:
            self._finish(self._queue.popleft(), Unavailable("the gateway stopped before the call finished"))
        for link in self._links.values():
            if link.lost_timer is not None:
                link.lost_timer.cancel()
            if link.reserved is not None:
                self._finish(link.reserved, Unavailable("the gateway stopped before the call ran"))
                link.reserved = None
            self._fail_sent(link, "the gateway stopped before the call finished", prefix=False, retry=False)
