"""The gateway's ``mesos`` executor: warm calls on Mesos agents, in executors this gateway launches.

The design: the package docstring (:mod:`gateway.executors.mesos`) and docs/mesos.md.
"""


from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from gateway.config import Settings
from gateway.errors import InternalError, RoostError, Unavailable, WireError
from gateway.executors.base import Call, Executor
from gateway.executors.local.executor import LocalExecutor
from gateway.executors.mesos import bundle
from gateway.executors.mesos.channel import ChannelServer
from gateway.executors.mesos.counters import MesosCounters
from gateway.executors.mesos.framework_state import FrameworkState
from gateway.executors.mesos.placement import PoolPlacement
from gateway.executors.mesos.remote_pool import RemotePool
from gateway.executors.mesos.scheduler import SchedulerDriver
from gateway.executors.mesos.tasks import ExecutorConfig
from gateway.registry import routers_of

log = logging.getLogger(__name__)

# pymesos puts its own stderr handler on its logger (MESOS_API.md quirk 16): use ours, once.
_pymesos_log = logging.getLogger("pymesos")
for _handler in list(_pymesos_log.handlers):
    _pymesos_log.removeHandler(_handler)
_pymesos_log.setLevel(logging.INFO)

KILL_TIMEOUT = 10.0  # seconds to wait for pool tasks to end when the gateway stops


class MesosExecutor(Executor):
    """Runs calls on warm executors placed on Mesos agents (see the package docstring)."""

    name = "mesos"

    def __init__(self, settings: Settings, on_fatal: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._mesos = settings.mesos
        self._on_fatal = on_fatal
        limits = settings.limits
        mesos = self._mesos
        self.counters = MesosCounters()
        self._pool = RemotePool(
            limits.max_queue, mesos.reconnect_grace, mesos.heartbeat, mesos.channel_timeout, mesos.retry_budget,
            self.counters,
        )  # fmt: skip
        host, _, port = self._mesos.channel_listen.rpartition(":")
        self._channel = ChannelServer(self._pool, host, int(port), limits.max_result_bytes)
        self._bundle_server: bundle.BundleServer | None = None
        self._state = FrameworkState(self._mesos.state_file)
        self._placement = PoolPlacement(self._mesos, self._pool, self._state, self._config, self._fatal, self.counters)
        self._driver: SchedulerDriver | None = None
        self._keys: frozenset[str] = frozenset()
        self._phase = "new"  # starting, running, stopping, stopped
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop
        self.failure: str | None = None  # why the executor cannot go on, once it cannot
        self._fallback: LocalExecutor | None = None
        if mesos.fallback == "local":
            functions, workers = settings.functions, settings.workers
            self._fallback = LocalExecutor(functions, workers, limits.max_queue, limits.max_result_bytes)
        self._fallback_started = False
        self._without_since: float | None = None  # when the last usable executor went (or the start began)
        self.unreachable = False  # no executor for unreachable_after seconds: calls do not wait for one

    @property
    def in_flight(self) -> int:
        """Calls queued here or running on an executor."""
        return self._pool.in_flight

    @property
    def problem(self) -> str | None:
        """Why no call can run now: the driver died, or no executor is connected."""
        if self.failure is not None:
            return self.failure
        if self._phase == "running" and not self._pool.usable() and not (self.unreachable and self._fallback):
            return "no Mesos executor is connected"
        return None

    def gauges(self) -> dict[str, float]:
        """Calls waiting for an executor, executors taking calls, the pool's size, and what happened so far.

        ``pool_target`` is how many pool tasks are wanted now (the elastic pool moves it), ``pool_tasks`` how many
        are live and ``pool_tasks_running`` how many of those Mesos reported running; the ``*_total`` counters
        are :class:`~gateway.executors.mesos.counters.MesosCounters`.
        """
        pool_tasks = self._placement.tasks.values()
        return {
            "queued": self._pool.queued,
            "executors": self._pool.usable(),
            "unreachable": float(self.unreachable),
            "pool_target": self._placement.target,
            "pool_tasks": len(pool_tasks),
            "pool_tasks_running": sum(1 for task in pool_tasks if task.state == "TASK_RUNNING"),
            **self.counters.totals(),
        }

    @property
    def framework_id(self) -> str | None:
        """The Mesos framework id, once registered."""
        return self._driver.framework_id if self._driver is not None else None

    async def start(self) -> None:
        """Build and serve the bundle, register the framework, and wait for the executors to be warm."""
        if self._phase != "new":
            raise RoostError("the mesos executor was already started")
        self._phase = "starting"
        for reference in self._settings.functions:  # a module that cannot load fails here, before Mesos is asked
            self._keys |= {spec.key for spec in routers_of(reference)}
        self._loop = asyncio.get_running_loop()
        self._pool.bind(self._loop)
        self._without_since = time.monotonic()
        mesos = self._mesos
        try:
            if self._fallback is not None:
                await self._fallback.start()
                self._fallback_started = True
            self._placement.bundle_uri = await self._bundle_uri()
            await self._channel.start()
            self._channel.welcome = {"heartbeat": mesos.heartbeat, "channel_timeout": mesos.channel_timeout}
            self._driver = SchedulerDriver(mesos, self._placement, self._state.load(), self.counters)
            self._placement.driver = self._driver
            await self._driver.start(self._loop)
            self._tick()
            ready = await self._pool.wait_for_executors(
                mesos.executors, mesos.start_timeout, lambda: self.failure is not None
            )
        except BaseException:
            await self.stop(0)
            raise
        if self.failure is not None:
            await self.stop(0)
            raise RoostError(self.failure)
        self._phase = "running"
        if ready < mesos.executors:
            log.warning(
                "%d of %d Mesos executors are ready after %g s; serving, the rest may follow",
                ready, mesos.executors, mesos.start_timeout,
            )  # fmt: skip
        else:
            log.info("%d Mesos executors are warm (framework %s)", ready, self.framework_id)
        self._check_reach()

    def submit(self, call: Call) -> asyncio.Future[bytes]:
        """Queue ``call`` for an executor; raise ``Overloaded`` at once when the queue is full."""
        if self._phase != "running":
            raise Unavailable("the gateway is stopping" if self._phase != "new" else "the executor is not started")
        key = call.spec.key
        if key not in self._keys:
            future: asyncio.Future[bytes] = self._loop.create_future()
            future.set_exception(InternalError(f"function {key!r} is not in the modules of the mesos executor"))
            return future
        if self.unreachable:
            if self._fallback is not None:
                return self._fallback.submit(call)
            future = self._loop.create_future()
            future.set_exception(Unavailable("the Mesos cluster is unreachable: no executor is connected"))
            return future
        if call.spec.options.isolated:
            return self._placement.isolated.submit(call, key)
        return self._pool.submit(call, key)

    async def stop(self, grace: float) -> None:
        """Finish calls for up to ``grace`` s, kill the pool tasks, stop the driver with failover."""
        if self._phase in ("stopping", "stopped", "new"):
            self._phase = "stopped" if self._phase == "new" else self._phase
            return
        self._phase = "stopping"
        death = self._driver.death() if self._driver is not None else None
        if death is not None:
            self._placement.driver_died(death)
        if self._fallback is not None and self._fallback_started:
            await asyncio.gather(self._pool.stop(grace), self._fallback.stop(grace))
        else:
            await self._pool.stop(grace)
        if self._driver is not None and self.failure is None:  # without a driver, Mesos cannot be asked
            await self._placement.kill_all(KILL_TIMEOUT)
        if self._ticker is not None:
            self._ticker.cancel()
        await self._channel.stop()
        if self._driver is not None:
            await self._driver.stop()
        if self._bundle_server is not None:
            await asyncio.to_thread(self._bundle_server.stop)
        self._phase = "stopped"

    async def _bundle_uri(self) -> str:
        mesos = self._mesos
        if mesos.bundle_uri:
            return mesos.bundle_uri
        built = await asyncio.to_thread(
            bundle.build, self._settings.functions, mesos.bundle_dir, mesos.bundle_distributions
        )
        host, _, port = mesos.bundle_listen.rpartition(":")
        self._bundle_server = bundle.BundleServer(built, host, int(port))
        self._bundle_server.start()
        url = self._bundle_server.url(self._advertised(host))
        log.info("agents fetch the bundle from %s", url)
        return url

    def _advertised(self, listen_host: str) -> str:
        if self._mesos.advertise_host:
            return self._mesos.advertise_host
        return socket.getfqdn() if listen_host in ("0.0.0.0", "::", "") else listen_host

    def _config(self, token: str, workers: int) -> ExecutorConfig:
        host = self._mesos.channel_listen.rpartition(":")[0]
        return ExecutorConfig(
            channel=f"{self._advertised(host)}:{self._channel.port}",
            token=token,
            functions=tuple(self._settings.functions),
            workers=workers,
            max_result_bytes=self._settings.limits.max_result_bytes,
            heartbeat=self._mesos.heartbeat,
            channel_timeout=self._mesos.channel_timeout,
            orphan_timeout=self._mesos.orphan_timeout,
            log_level=self._settings.log_level,
        )

    def _tick(self) -> None:
        self._pool.tick()
        self._check_reach()
        self._scale()
        self._ticker = self._loop.call_later(self._mesos.heartbeat, self._tick)

    def _scale(self) -> None:
        """The elastic pool: grow while calls wait for a worker; stop one executor idle for ``idle_timeout``.

        While calls wait, no executor counts as idle, not even one without a call: it was launched for them,
        and calls already pipelined to a busy executor stay there (docs/mesos.md, "Not yet"). So an executor
        is stopped only once the pool has not been short of workers for ``idle_timeout``, and it had no call
        for as long.
        """
        mesos = self._mesos
        if mesos.max_executors is None or self._phase != "running":
            return
        now = time.monotonic()
        waiting = self._pool.waiting()
        if waiting:
            for link in self._pool.links():
                link.last_busy = now
            self._placement.grow(waiting)
            return
        if self._placement.target <= mesos.executors:
            return
        for link in self._pool.links():
            idle = not link.outstanding and now - link.last_busy > mesos.idle_timeout
            if link.usable and not link.dedicated and idle and self._placement.shrink(link.executor_id):
                link.draining = True  # no new calls while its task is killed
                return

    def _check_reach(self) -> None:
        """Enter or leave the unreachable state (see the package docstring); log each change."""
        if self._phase != "running":
            return
        usable, now = self._pool.usable(), time.monotonic()
        if usable:
            self._without_since = None
            if self.unreachable:
                self.unreachable = False
                log.warning("the Mesos cluster is back (%d executors connected): calls run on it again", usable)
            return
        if self._without_since is None:
            self._without_since = now
        if self.unreachable or now - self._without_since < self._mesos.unreachable_after:
            return
        self.unreachable = True
        where = "on the local executor (fallback)" if self._fallback is not None else "nowhere: answered unavailable"
        log.error(
            "the Mesos cluster is unreachable (no executor for %.1f s): calls run %s until it is back",
            now - self._without_since, where,
        )  # fmt: skip
        for pending in self._pool.take_queued():
            self._divert(pending.call, pending.future)

    def _divert(self, call: Call, future: asyncio.Future[bytes]) -> None:
        """Run a call that was waiting for an executor on the fallback, or answer it ``unavailable``."""
        if future.done():
            return
        if self._fallback is None:
            future.set_exception(Unavailable("the Mesos cluster is unreachable: no executor is connected"))
            return
        try:
            local = self._fallback.submit(call)
        except WireError as exc:
            future.set_exception(exc)
            return

        def settle(done: asyncio.Future[bytes]) -> None:
            if future.done():
                return
            if done.cancelled():
                future.cancel()
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result())

        local.add_done_callback(settle)

    def _fatal(self, why: str) -> None:
        if self.failure is not None:
            return
        self.failure = why
        log.critical("%s", why)
        self._pool.wake()
        if self._on_fatal is not None:  # also while stopping: the exit code must say it failed
            self._on_fatal(why)


__all__ = ["MesosExecutor"]
