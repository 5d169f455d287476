"""Worker processes for the local executor: started warm, fed over pipes, replaced when lost.

Workers are forked by multiprocessing's fork server, a single-threaded process
that imported the function modules first (``set_forkserver_preload``), so the
workers share those pages copy-on-write and start in milliseconds. Nothing is
forked from the gateway itself, whose other threads (asyncio's to_thread workers,
the durable queue's commit thread) may hold locks at fork time; spawning fresh
interpreters instead would import every module once per worker. As with every
start method but plain fork, a worker re-runs the gateway's main script unless it
was started with ``python -m``, so entry points keep their work under
``if __name__ == "__main__"``.

A :class:`WorkerProcess` is the gateway's end of one worker: two non-blocking
pipes, read with ``loop.add_reader`` and written without ever blocking (what the
pipe does not take waits for ``add_writer``), and the process sentinel, readable
once the worker has exited. The :class:`WorkerPool` keeps ``size`` workers: a
worker lost is replaced at once, one that dies before it is ready is replaced
after an exponential backoff, and while none is running the pool is *broken*.
The pool knows nothing of calls; it tells a :class:`PoolListener`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol

from gateway.errors import FunctionError, InternalError, RegistryError, RoostError, WireError
from gateway.executors import framing
from gateway.executors.framing import REPLY_HEADER, ReplyKind
from gateway.executors.local import worker

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for the first workers to import their modules
_READ_SIZE = 1 << 18
_REPLY_ROOM = 1 << 16  # a reply frame may exceed max_result_bytes by its header or an error message
_CONTEXT = multiprocessing.get_context("forkserver")


class PoolListener(Protocol):
    """What the pool reports to its owner, always on the event loop."""

    def worker_ready(self, worker: WorkerProcess) -> None:
        """``worker`` has loaded its modules and takes calls."""

    def worker_replies(self, worker: WorkerProcess, frames: list[bytes]) -> None:
        """Reply frames from ``worker``, in the order it wrote them."""

    def worker_lost(self, worker: WorkerProcess, error: WireError) -> str | None:
        """``worker`` died or misbehaved: answer the call it was running with ``error`` and return its name."""

    def pool_broken(self, reason: str) -> None:
        """No worker is running and the last one to start failed."""


class WorkerProcess:
    """The gateway's end of one worker process."""

    def __init__(self, process: BaseProcess, call_fd: int, reply_fd: int, max_reply: int) -> None:
        self.process = process
        self.pid = process.pid or 0
        self.ready = False
        self.retired = False  # no longer read or written: lost, timed out or stopping
        self._call_fd = call_fd
        self._reply_fd = reply_fd
        self._reader = framing.FrameReader(max_reply)
        self._unsent = bytearray()
        self.failure = ""  # why it could not load its modules
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()  # awaited by WorkerPool.start() only
        self.exited: asyncio.Future[int | None] = loop.create_future()

    def send(self, data: bytes) -> None:
        """Write ``data`` without blocking; what the pipe does not take now is written when it drains."""
        if self.retired:
            return
        if self._unsent:  # already waiting for the pipe to drain
            self._unsent += data
            return
        try:
            written = os.write(self._call_fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the worker is gone; its sentinel will say so
            return
        if written < len(data):
            self._unsent += memoryview(data)[written:]
            asyncio.get_running_loop().add_writer(self._call_fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            written = os.write(self._call_fd, self._unsent)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._unsent)
        del self._unsent[:written]
        if not self._unsent:
            asyncio.get_running_loop().remove_writer(self._call_fd)

    def read(self) -> list[bytes] | None:
        """The frames completed by what the pipe holds now; ``None`` at its end. Raises ``FrameError``."""
        try:
            data = os.read(self._reply_fd, _READ_SIZE)
        except BlockingIOError:  # also after death, when a process the worker forked still holds the pipe
            return []
        except OSError as exc:
            log.warning("cannot read from worker process %d: %s", self.pid, exc)
            return None
        if not data:  # it closed its end, so it is exiting: the sentinel will say how
            asyncio.get_running_loop().remove_reader(self._reply_fd)
            return None
        return self._reader.feed(data)

    def close(self) -> None:
        """Stop reading and writing; an idle worker reads the end of its pipe and exits."""
        if self.retired:
            return
        self.retired = True
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._reply_fd)
        loop.remove_writer(self._call_fd)
        os.close(self._call_fd)
        os.close(self._reply_fd)


class WorkerPool:
    """Keeps ``size`` warm worker processes running for a :class:`PoolListener`."""

    def __init__(
        self, modules: Sequence[str], size: int, max_result_bytes: int, listener: PoolListener, reimport: bool = False
    ) -> None:
        self._modules = tuple(modules)
        self._reimport = reimport
        self._size = size
        self._max_result = max_result_bytes
        self._listener = listener
        self._workers: list[WorkerProcess] = []  # every process not reaped yet
        self._launches: set[asyncio.Task[None]] = set()
        self._heal_timer: asyncio.TimerHandle | None = None
        self._running = False
        self._start_failures = 0  # in a row; reset when a worker gets ready
        self.alive = 0  # workers ready and not retired
        self.restarts = 0  # workers started to replace one lost or failed
        self.broken: str | None = None  # why no worker is running, while none is

    async def start(self) -> None:
        """Start the workers and wait until each has imported its modules; raise if one cannot."""
        _CONTEXT.set_forkserver_preload([worker.__name__, *(ref.partition(":")[0] for ref in self._modules)])
        try:
            launched = await asyncio.gather(*(self._launch() for _ in range(self._size)), return_exceptions=True)
            waiters = []
            for outcome in launched:
                if isinstance(outcome, BaseException):
                    raise RoostError(f"cannot start a worker process: {outcome}") from outcome
                waiters.append(outcome.started)
            done, pending = await asyncio.wait(waiters, timeout=START_TIMEOUT, return_when=asyncio.FIRST_EXCEPTION)
            errors = [exc for fut in done if (exc := fut.exception()) is not None]
            if errors:
                raise errors[0]
            if pending:
                raise RoostError(f"worker processes did not load their modules within {START_TIMEOUT:g} s")
        except BaseException:
            await self.stop()
            raise
        self._running = True
        self._heal_soon()  # in case a worker died between getting ready and now

    def retire(self, worker: WorkerProcess, kill: bool = False) -> None:
        """Stop feeding ``worker`` (SIGKILL it when ``kill``) and start a replacement."""
        if worker.ready and not worker.retired:
            self.alive -= 1
        worker.close()
        if kill:
            worker.process.kill()
        self._heal_soon()

    async def stop(self) -> None:
        """Terminate every worker, kill those left after a second, and wait until all have exited."""
        self._running = False
        if self._heal_timer is not None:
            self._heal_timer.cancel()
            self._heal_timer = None
        if self._launches:
            await asyncio.wait(set(self._launches))
        workers = list(self._workers)
        for w in workers:
            self.retire(w)
            w.process.terminate()
        if workers:
            await asyncio.wait([w.exited for w in workers], timeout=1.0)
        left = [w for w in workers if not w.exited.done()]
        for w in left:
            w.process.kill()
        if left:
            await asyncio.wait([w.exited for w in left], timeout=5.0)
        for w in left:
            if not w.exited.done():
                log.error("worker process %d did not exit", w.pid)

    async def _launch(self) -> WorkerProcess:
        call_r, call_w = os.pipe()
        reply_r, reply_w = os.pipe()
        child_calls, child_replies = Connection(call_r, writable=False), Connection(reply_w, readable=False)
        process = _CONTEXT.Process(
            target=worker.serve,
            args=(child_calls, child_replies, self._modules, self._max_result, self._reimport),
            name="roost-worker",
            daemon=True,  # so a gateway that exits without stop() still ends its workers
        )
        loop = asyncio.get_running_loop()
        try:
            # Off the loop: the first start launches the fork server, which imports every module.
            await loop.run_in_executor(None, process.start)
        except BaseException:
            os.close(call_w)
            os.close(reply_r)
            raise
        finally:
            child_calls.close()
            child_replies.close()
        os.set_blocking(call_w, False)
        os.set_blocking(reply_r, False)
        w = WorkerProcess(process, call_w, reply_r, self._max_result + _REPLY_ROOM)
        self._workers.append(w)
        loop.add_reader(reply_r, self._on_readable, w)
        loop.add_reader(process.sentinel, self._on_exit, w)
        return w

    def _on_readable(self, w: WorkerProcess) -> None:
        try:
            frames = w.read()
        except framing.FrameError as exc:
            self._lose(w, InternalError("the worker process sent an invalid reply"), f"sent a bad frame: {exc}", True)
            return
        if frames:
            self._deliver(w, frames)

    def _deliver(self, w: WorkerProcess, frames: list[bytes]) -> None:
        if not w.ready:  # its first frame says whether it loaded its modules
            kind = REPLY_HEADER.unpack_from(frames[0])[1]
            if kind == ReplyKind.READY:
                w.ready = True
                self.alive += 1
                self._start_failures = 0
                self.broken = None
                if not w.started.done():
                    w.started.set_result(None)
                self._listener.worker_ready(w)
            else:
                w.failure = framing.parse_error(frames[0][REPLY_HEADER.size :])[1]
            frames = frames[1:]
        if frames and not w.retired:
            self._listener.worker_replies(w, frames)

    def _on_exit(self, w: WorkerProcess) -> None:
        asyncio.get_running_loop().remove_reader(w.process.sentinel)
        code = w.process.exitcode  # the sentinel is readable, so this does not block
        # Deliver what it wrote before dying: the call it was running is then the oldest unanswered one.
        while not w.retired and (frames := self._read_rest(w)):
            self._deliver(w, frames)
        if not w.retired and w.ready:
            message = f"worker process died while running the function (exit code {code})"
            self._lose(w, FunctionError(message), f"died (exit code {code})", False)
        elif not w.retired:
            reason = w.failure or f"worker process exited with code {code} before it was ready"
            self.retire(w)
            if not self._running:
                w.started.set_exception(RegistryError(f"a worker process could not load the functions: {reason}"))
            else:
                self._start_failed(reason)
        self._workers.remove(w)
        w.process.close()
        w.exited.set_result(code)

    def _read_rest(self, w: WorkerProcess) -> list[bytes] | None:
        try:
            return w.read()
        except framing.FrameError:
            return None

    def _lose(self, w: WorkerProcess, error: WireError, what: str, kill: bool) -> None:
        running = self._listener.worker_lost(w, error)
        doing = f"running {running}" if running else "while idle"
        log.error("worker process %d %s %s; starting a replacement", w.pid, what, doing)
        self.retire(w, kill)

    def _start_failed(self, reason: str) -> None:
        self._start_failures += 1
        log.error("%s; starting another in %.1f s", reason, self._backoff())
        if not self.alive:
            self.broken = reason
            self._listener.pool_broken(reason)
        self._heal_soon()

    def _backoff(self) -> float:
        return 0.0 if not self._start_failures else min(0.1 * 2 ** (self._start_failures - 1), 10.0)

    def _heal_soon(self) -> None:
        if self._heal_timer is None and self._running:
            self._heal_timer = asyncio.get_running_loop().call_later(self._backoff(), self._heal)

    def _heal(self) -> None:
        self._heal_timer = None
        # A finished launch's worker is already in _workers, so only count launches still under way.
        live = sum(1 for w in self._workers if not w.retired) + sum(1 for t in self._launches if not t.done())
        for _ in range(self._size - live):
            self.restarts += 1
            task = asyncio.get_running_loop().create_task(self._replace())
            self._launches.add(task)
            task.add_done_callback(self._launches.discard)

    async def _replace(self) -> None:
        try:
            await self._launch()
        except Exception as exc:
            self._start_failed(f"cannot start a worker process: {exc}")
