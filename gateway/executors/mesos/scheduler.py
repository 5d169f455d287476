"""pymesos's scheduler driver behind a thin adapter: its lifecycle, its calls off the loop, a supervisor and a watchdog.

pymesos's callbacks only hand off to the event loop, guarded so that none can
raise (:mod:`.scheduler_callbacks`); they report to a :class:`SchedulerEvents`.
Driver calls are blocking HTTP requests, so they run one at a time on a
dedicated thread, never on the event loop or pymesos's IO thread; so does the
driver's ``start()``, which asks the master for its version over HTTP.

The driver is built with ``failover=True`` and only ever stopped with
``stop(failover=True)``: stopping the gateway must not kill the framework,
so a restarted gateway re-registers with the framework id saved in the state
file (:class:`~.framework_state.FrameworkState`) and gets ``reregistered``. A supervisor thread
joins the driver; if the driver ends without being asked to (pymesos gave up on
the master, or crashed), :meth:`SchedulerEvents.driver_died` is told, and the
gateway exits non-zero. pymesos also interrupts the main thread then, which the
gateway's SIGINT handler turns into an ordinary stop: the supervisor is what
makes it a failure rather than a silent exit 0. A master that goes silent, or
a reconnect loop, gets a new driver with the same framework id
(:class:`SchedulerDriver`).

Import this module on the main thread before any event loop starts: importing
pymesos installs a SIGINT handler (MESOS_API.md quirks 1, 2).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import getpass
import logging
import threading
import time
from typing import Any, Protocol

import pymesos
import pymesos.process

from gateway.config_sections import MesosSettings
from gateway.executors.mesos.counters import MesosCounters
from gateway.executors.mesos.scheduler_callbacks import SchedulerCallbacks
from gateway.executors.mesos.tasks import Json, framework_info

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 10.0
TIGHT_LOOP_COUNT = 5  # this many disconnections ...
TIGHT_LOOP_PERIOD = 1.0  # ... less than this many seconds apart on average: a tight reconnect loop


class SchedulerEvents(Protocol):
    """What the scheduler reports, on the event loop (ids are plain strings)."""

    def registered(self, framework_id: str, again: bool) -> None:
        """Subscribed to the master (``again``: with a framework id we already had)."""

    def offers(self, offers: list[Json]) -> None:
        """Resource offers."""

    def status(self, status: Json) -> None:
        """A task status update (already acknowledged by pymesos when it carried a uuid)."""

    def executor_lost(self, executor_id: str, agent_id: str, status: int) -> None:
        """An executor process exited."""

    def agent_lost(self, agent_id: str) -> None:
        """An agent was removed."""

    def error(self, message: str) -> None:
        """The master sent an ERROR event."""

    def driver_died(self, why: str) -> None:
        """The driver's thread ended without :meth:`SchedulerDriver.stop`."""

    def callback_failed(self, name: str) -> None:
        """A pymesos callback raised (logged already): what it carried may be lost, so reconcile."""


class SchedulerDriver:
    """The pymesos scheduler driver, its call thread, its supervisor and its watchdog.

    The watchdog: pymesos has none (quirk 6), so a master that stops talking while
    TCP stays up would go unnoticed. Every event (heartbeats included) is noted;
    after ``missed_heartbeats`` heartbeat intervals of silence on a subscribed
    driver, the driver is stopped with failover, joined, and a new one subscribes
    with the same framework id (``reregistered``, then reconciliation). The same
    restart, after ``resubscribe_pause``, breaks pymesos's tight reconnect loop
    (quirk 7): ``disconnected`` more than once a second, several times in a row,
    as timed on pymesos's thread; a loop pymesos got out of by itself before the
    restart begins (it subscribed again) is left alone.
    """

    def __init__(
        self,
        settings: MesosSettings,
        events: SchedulerEvents,
        framework_id: str | None,
        counters: MesosCounters | None = None,
    ) -> None:
        self._settings = settings
        self._events = events
        self._framework_id = framework_id
        self._calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="roost-mesos-call")
        self._driver: Any = None
        self._callbacks: SchedulerCallbacks | None = None
        self._stopping = False
        self._restarting = False
        self._disconnects: collections.deque[float] = collections.deque(maxlen=TIGHT_LOOP_COUNT)
        self._watchdog: asyncio.TimerHandle | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = counters if counters is not None else MesosCounters()  # silences, loops, restarts

    @property
    def framework_id(self) -> str | None:
        """The id the driver holds (after registration)."""
        if self._driver is None:
            return self._framework_id
        value = self._driver.framework_id
        return str(value) if value else self._framework_id

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start subscribing (with the saved framework id, if any), supervise the driver, watch the master."""
        self._loop = loop
        await self._start_driver()
        self._watch()

    async def _start_driver(self) -> None:
        assert self._loop is not None
        settings = self._settings
        info = framework_info(
            settings.framework_name,
            settings.user or getpass.getuser(),
            settings.role,
            settings.failover_timeout,
            self._framework_id,
            settings.principal,
        )
        secret = settings.secret.get_secret_value() if settings.secret is not None else None
        callbacks = self._callbacks = SchedulerCallbacks(self._loop, self._events, self)
        driver = self._driver = pymesos.MesosSchedulerDriver(
            callbacks,
            info,
            settings.master,
            use_addict=False,
            implicit_acknowledgements=True,
            principal=settings.principal,
            secret=secret,
            failover=True,
            timeout=settings.give_up_after,
        )
        # pymesos's start() asks the master for its version with a blocking HTTP request (as long as
        # give_up_after if the master hangs): never on the event loop.
        await asyncio.to_thread(driver.start)
        threading.Thread(
            target=self._supervise, args=(driver, callbacks), name="roost-mesos-supervisor", daemon=True
        ).start()

    async def call(self, method: str, *args: Any) -> bool:
        """Run a driver method on the call thread; log and return False if it fails."""
        assert self._loop is not None
        if self._driver is None or self._stopping:
            return False
        bound = functools.partial(getattr(self._driver, method), *args)
        try:
            await self._loop.run_in_executor(self._calls, bound)
        except Exception as exc:  # a refused call (4xx) or a broken connection: reconciliation repairs the state
            log.warning("Mesos call %s failed: %s", method, exc)
            return False
        return True

    async def stop(self) -> None:
        """Stop with failover (the framework, its id and its tasks stay with the master) and join the driver."""
        if self._driver is None or self._stopping:
            return
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart_task
        await self._stop_driver()
        self._calls.shutdown(wait=False, cancel_futures=True)

    async def _stop_driver(self) -> None:
        driver, callbacks = self._driver, self._callbacks
        if driver is None or callbacks is None or callbacks.stopping:
            return
        callbacks.stopping = True
        self._framework_id = self.framework_id
        driver.stop(failover=True)  # never stop() or abort(): both tear the framework down
        thread = threading.Thread(target=driver.join, daemon=True)
        thread.start()
        await asyncio.to_thread(thread.join, JOIN_TIMEOUT)
        if thread.is_alive():
            log.warning("the Mesos scheduler driver did not stop within %g s", JOIN_TIMEOUT)

    def death(self) -> str | None:
        """Why the driver ended by itself, if it did.

        Also asked when the gateway stops: pymesos interrupts the main thread when its driver dies, which
        stops the gateway, and that can come before the supervisor's word.
        """
        callbacks = self._callbacks
        if self._driver is None or self._stopping or callbacks is None or callbacks.stopping:
            return None
        if not self._driver.aborted:
            return None
        error = pymesos.process._exc_info  # set by the IO thread when it died of an exception
        return f"{error[0].__name__}: {error[1]}" if error else "its thread ended"

    def _supervise(self, driver: Any, callbacks: SchedulerCallbacks) -> None:
        driver.join()
        if callbacks.stopping or self._stopping:
            return  # stopped on purpose (by the gateway, or to subscribe again)
        why = self.death()
        if why is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._events.driver_died, why)

    # The watchdog and the reconnect guard, on the event loop.

    def _watch(self) -> None:
        assert self._loop is not None
        settings = self._settings
        callbacks = self._callbacks
        if callbacks is not None and callbacks.subscribed and not callbacks.stopping and not self._restarting:
            silent = time.monotonic() - callbacks.last_heard
            if silent > settings.missed_heartbeats * settings.master_heartbeat:
                self._restart(f"nothing heard from the Mesos master for {silent:.1f} s", 0.0, loop=False)
        self._watchdog = self._loop.call_later(settings.master_heartbeat / 2, self._watch)

    def disconnected(self, callbacks: SchedulerCallbacks, at: float) -> None:
        """pymesos lost the master at ``at``; restart the driver after a pause if this keeps happening fast.

        The pace is judged by when the disconnections happened, not by when a busy event loop gets to
        them; and one that pymesos has recovered from since (it subscribed again, which its thread notes at
        once and the loop hears later) is over and does not count.
        """
        if callbacks is not self._callbacks or callbacks.stopping or callbacks.subscribed:
            return
        self._disconnects.append(at)
        count = len(self._disconnects)
        span = at - self._disconnects[0]
        if count == TIGHT_LOOP_COUNT and span < count * TIGHT_LOOP_PERIOD:
            self._disconnects.clear()
            why = f"{count} disconnections from the Mesos master in {span:.1f} s (a reconnect loop)"
            self._restart(why, self._settings.resubscribe_pause, loop=True)
        else:
            log.warning("disconnected from the Mesos master; pymesos is reconnecting")

    def _restart(self, why: str, pause: float, loop: bool) -> None:
        """Replace the driver (see :meth:`_failover`), unless one is being replaced already, or stopped."""
        if self._restarting or self._stopping or self._loop is None:
            return
        self._restarting = True
        self._restart_task = self._loop.create_task(self._failover(why, pause, loop))

    async def _failover(self, why: str, pause: float, loop: bool) -> None:
        """Stop the driver with failover, wait ``pause``, start a new one with the same framework id.

        For a reconnect ``loop``, not if pymesos has subscribed again by the time this runs: the loop is
        over, and stopping its driver now would only break a working subscription.
        """
        try:
            callbacks = self._callbacks
            if loop and callbacks is not None and callbacks.subscribed:
                log.info("%s, but pymesos has subscribed again since: its driver stays", why)
                return
            if loop:
                self.counters.reconnect_loops += 1
            else:
                self.counters.master_silences += 1
            log.warning(
                "%s: stopping the scheduler driver (failover) and subscribing again as framework %s%s",
                why, self.framework_id, f" in {pause:g} s" if pause else "",
            )  # fmt: skip
            await self._stop_driver()
            if pause:
                await asyncio.sleep(pause)  # a backoff against a master that keeps refusing, not synchronisation
            if not self._stopping:
                self.counters.driver_restarts += 1
                await self._start_driver()
        finally:
            self._restarting = False
