"""The ``local`` executor, the gateway's default: calls run in warm worker processes.

Processes, so a function that hangs or crashes costs one worker, not the
gateway (:mod:`gateway.executors.local.pool` starts, feeds and replaces them;
:mod:`gateway.executors.local.worker` is what runs inside). ProcessPoolExecutor is
not used: a call through it costs several times a round trip on our own pipes.

Calls submitted in one event-loop turn are dispatched together at the end of
the turn, all of one worker's frames in one write. A worker runs its calls in
order and replies to each as it finishes, so the oldest call it has not
answered is the one running; that call's timeout clock starts when it becomes
this head. A worker holds up to :data:`PIPELINE` calls, the least loaded worker
first, but a call waits behind others only when each of them is of a function
that recently ran in under :data:`QUICK` seconds (the worker reports run times):
otherwise one slow function would hold up the calls behind it while another
worker idles.

On timeout the worker is killed (SIGKILL: the function may be stuck in C code),
the call answered ``timeout`` and the calls behind it, which have not started,
put back at the front of the queue. When a worker dies on its own, the call it
was running is answered ``function_error`` "worker process died while running
the function (exit code -11)", not ``unavailable``: the function most likely
killed it (an extension's segfault, ``os._exit``) and would again, so "try
later" would mislead. The calls behind it are put back the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.errors import CallTimeout, InternalError, RoostError, Unavailable, WireError, error_for_code
from gateway.executors import framing
from gateway.executors.base import Call, Executor, next_live
from gateway.executors.call_queue import CallQueue, Pending
from gateway.executors.framing import REPLY_HEADER, ReplyKind
from gateway.executors.local.pool import WorkerPool, WorkerProcess
from gateway.registry import routers_of

log = logging.getLogger(__name__)

PIPELINE = 16  # calls outstanding per worker, at most
QUICK = 0.001  # seconds: calls wait only behind functions this quick


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the local executor, for metrics."""

    workers: int  # pool size asked for
    alive: int  # workers ready to run calls
    busy: int  # workers with at least one call
    restarts: int  # workers started to replace one that timed out, died or failed to start
    queued: int  # calls waiting for a worker


@dataclass(slots=True, eq=False)
class _Lane:
    """The calls sent to one ready worker, oldest (running) first."""

    worker: WorkerProcess
    outstanding: deque[Pending] = field(default_factory=deque)
    slow: int = 0  # outstanding calls of functions not known to be quick
    outbox: list[bytes] = field(default_factory=list)  # frames for this dispatch's write
    head_deadline: float = math.inf
    timer: asyncio.TimerHandle | None = None
    timer_at: float = math.inf


class LocalExecutor(CallQueue, Executor):
    """Runs calls in a pool of warm worker processes (see the module docstring)."""

    name = "local"

    def __init__(
        self, modules: Sequence[str], workers: int, max_queue: int, max_result_bytes: int, *, reimport: bool = False
    ) -> None:
        super().__init__(max_queue, "in worker processes")
        self._modules = tuple(modules)
        self._size = workers
        # reimport: after a reload the fork server still holds the old modules, so workers import them again.
        self._pool = WorkerPool(self._modules, workers, max_result_bytes, self, reimport=reimport)
        self._keys: frozenset[str] = frozenset()
        self._state = "new"  # starting, running, stopping, stopped
        self._lanes: dict[WorkerProcess, _Lane] = {}
        self._run_time: dict[str, float] = {}  # function key -> recent run time in seconds

    @property
    def stats(self) -> PoolStats:
        """Workers alive and busy, restarts so far, calls waiting."""
        busy = sum(1 for lane in self._lanes.values() if lane.outstanding)
        return PoolStats(self._size, self._pool.alive, busy, self._pool.restarts, len(self._queue))

    @property
    def problem(self) -> str | None:
        """Not started, stopping, or no worker process able to start."""
        if self._state != "running":
            return f"the local executor is {self._state}"
        if self._pool.broken is not None:
            return f"no worker process is running: {self._pool.broken}"
        return None

    def gauges(self) -> dict[str, float]:
        """The pool's state: workers asked for, alive, busy, restarts, calls queued."""
        stats = self.stats
        return {
            "workers": stats.workers,
            "alive": stats.alive,
            "busy": stats.busy,
            "restarts_total": stats.restarts,
            "queued": stats.queued,
        }

    async def start(self) -> None:
        """Start the workers and wait until each has imported its modules; raise if one cannot."""
        if self._state != "new":
            raise RoostError("the local executor was already started")
        for reference in self._modules:  # a module that cannot load fails here, before any process starts
            self._keys |= {spec.key for spec in routers_of(reference)}
        # Kept: on Python 3.11 every asyncio.get_running_loop() costs a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._state = "starting"
        try:
            await self._pool.start()
        except BaseException:
            self._state = "stopped"
            raise
        self._state = "running"

    def submit(self, call: Call) -> asyncio.Future[bytes]:
        """Queue ``call`` for this turn's dispatch; raise ``Overloaded`` at once when the queue is full."""
        if self._state != "running":
            raise Unavailable("the gateway is stopping" if self._state != "new" else "the executor is not started")
        if self._pool.broken is not None:
            raise Unavailable(f"no worker process is running: {self._pool.broken}")
        key = call.spec.key
        if key not in self._keys:
            raise InternalError(f"function {key!r} is not in the modules of the local executor")
        future, pending = self._admit(call, lambda call_id: framing.call_frame(call_id, key, call.kwargs,
                                                                             call.expires_at))  # fmt: skip
        if pending is not None:
            self._enqueue(pending)
        return future

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let queued and running ones finish for up to ``grace`` seconds, then stop the workers."""
        if self._state in ("stopping", "stopped"):
            return
        self._state = "stopping"
        await self._drain(grace)
        for lane in self._lanes.values():  # forget the lanes too: a late reply must not look like a stray one
            if lane.timer is not None:
                lane.timer.cancel()
            self._queue.extend(lane.outstanding)
        self._lanes.clear()
        while self._queue:
            self._finish(self._queue.popleft(), Unavailable("the gateway stopped before the call finished"))
        await self._pool.stop()
        self._state = "stopped"

    # What the pool reports (PoolListener).

    def worker_ready(self, worker: WorkerProcess) -> None:
        """Give the new worker calls."""
        self._lanes[worker] = _Lane(worker)
        self._dispatch()

    def worker_replies(self, worker: WorkerProcess, frames: list[bytes]) -> None:
        """Settle the calls these replies answer, in order, and refill the worker."""
        lane = self._lanes.get(worker)
        if lane is None:
            return
        outstanding, now = lane.outstanding, time.monotonic()
        for frame in frames:
            call_id, kind, micros = REPLY_HEADER.unpack_from(frame)
            if not outstanding or outstanding[0].call_id != call_id:
                running = self.worker_lost(worker, InternalError("the worker process sent an invalid reply"))
                log.error("worker process %d replied to call %d running %s; killing it", worker.pid, call_id, running)
                self._pool.retire(worker, kill=True)
                return
            pending = outstanding.popleft()
            lane.slow -= not pending.quick
            key, seconds = pending.call.spec.key, micros / 1e6
            previous = self._run_time.get(key)
            self._run_time[key] = seconds if previous is None else 0.8 * previous + 0.2 * seconds
            payload = frame[REPLY_HEADER.size :]
            self._finish(pending, payload if kind == ReplyKind.OK else error_for_code(*framing.parse_error(payload)))
            if outstanding:
                self._arm(lane, now)
        if self._queue:
            self._dispatch()

    def worker_lost(self, worker: WorkerProcess, error: WireError) -> str | None:
        """Answer the call the worker was running with ``error``, put the others back in the queue; name the first."""
        lane = self._lanes.pop(worker, None)
        if lane is None or not lane.outstanding:
            return None
        pending = lane.outstanding.popleft()
        self._finish(pending, error)
        self._requeue(lane)
        return pending.call.spec.name

    def pool_broken(self, reason: str) -> None:
        """No worker can start: fail the queued calls rather than let them wait."""
        while self._queue:
            self._finish(self._queue.popleft(), Unavailable(f"no worker process is running: {reason}"))

    # Dispatch, timeouts, settling.

    def _dispatch(self) -> None:
        self._dispatch_soon = False
        queue, now, touched = self._queue, time.monotonic(), []
        while (pending := next_live(queue, now, self._finish)) is not None:
            lane = self._pick()
            if lane is None:
                break
            queue.popleft()
            pending.quick = self._run_time.get(pending.call.spec.key, math.inf) < QUICK
            lane.slow += not pending.quick
            lane.outstanding.append(pending)
            if len(lane.outstanding) == 1:
                self._arm(lane, now)
            if not lane.outbox:
                touched.append(lane)
            lane.outbox.append(pending.body)
        for lane in touched:
            lane.worker.send(b"".join(lane.outbox))
            lane.outbox.clear()

    def _pick(self) -> _Lane | None:
        """An idle worker, else the least loaded one whose calls are all quick."""
        best: _Lane | None = None
        for lane in self._lanes.values():
            load = len(lane.outstanding)
            if load == 0:
                return lane
            if lane.slow == 0 and load < PIPELINE and (best is None or load < len(best.outstanding)):
                best = lane
        return best

    def _arm(self, lane: _Lane, now: float) -> None:
        """Start the head call's clock; the lane's one timer moves only when it would fire too late."""
        assert self._loop is not None  # started
        lane.head_deadline = now + lane.outstanding[0].call.timeout
        if lane.head_deadline < lane.timer_at:
            if lane.timer is not None:
                lane.timer.cancel()
            lane.timer_at = lane.head_deadline
            lane.timer = self._loop.call_later(lane.head_deadline - now, self._check_deadline, lane)

    def _check_deadline(self, lane: _Lane) -> None:
        assert self._loop is not None  # started
        lane.timer, lane.timer_at = None, math.inf
        if self._lanes.get(lane.worker) is not lane or not lane.outstanding:
            return
        now = time.monotonic()
        if now < lane.head_deadline:  # the call that armed this timer has finished; time the one running now
            lane.timer_at = lane.head_deadline
            lane.timer = self._loop.call_later(lane.head_deadline - now, self._check_deadline, lane)
            return
        pending = lane.outstanding.popleft()
        timeout = pending.call.timeout
        name, pid = pending.call.spec.name, lane.worker.pid
        log.warning("%s did not finish within %g s; killing worker process %d", name, timeout, pid)
        self._finish(pending, CallTimeout(f"function did not finish within {timeout:g} s"))
        del self._lanes[lane.worker]
        self._requeue(lane)
        self._pool.retire(lane.worker, kill=True)

    def _requeue(self, lane: _Lane) -> None:
        """Put the lane's calls, none of them started, back at the front of the queue in their order."""
        if lane.timer is not None:
            lane.timer.cancel()
        self._queue.extendleft(reversed(lane.outstanding))
        lane.outstanding.clear()
        if self._queue:
            self._dispatch_later()

