"""pymesos's scheduler driver behind a thin adapter: callbacks hand off, driver calls run off the loop.

pymesos runs every callback on its one IO thread, and a callback that raises
kills that thread (and, without failover, tears the framework down). So each
callback here does one thing: ``loop.call_soon_threadsafe`` to a
:class:`SchedulerEvents` method, and is guarded: an exception is logged and
reported (:meth:`SchedulerEvents.callback_failed`, which reconciles), never
left to pymesos. Driver calls are blocking HTTP
requests, so they run one at a time on a dedicated thread, never on the event
loop or the IO thread.

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
from collections.abc import Callable
from typing import Any, Protocol

import pymesos
import pymesos.process

from gateway.config import MesosSettings
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


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """Make a pymesos callback unable to raise: an exception is logged and reported, never seen by pymesos.

    An exception escaping a callback would end pymesos's IO thread (MESOS_API.md quirk 4). The
    event it carried may be lost (a status update is acknowledged anyway), so the failure is
    handed to :meth:`SchedulerEvents.callback_failed`, which reconciles.
    """
    name = callback.__name__

    @functools.wraps(callback)
    def guarded(self: _Callbacks, driver: Any, *args: Any) -> None:
        if name != "disconnected":
            self.last_heard = time.monotonic()
        try:
            callback(self, driver, *args)
        except Exception:
            log.exception("the pymesos callback %s raised; the framework goes on and reconciles", name)
            with contextlib.suppress(Exception):
                self._loop.call_soon_threadsafe(self._events.callback_failed, name)

    return guarded


class _Callbacks(pymesos.Scheduler):  # type: ignore[misc]  # pymesos is untyped
    """pymesos callbacks reduced to hand-offs, each one :func:`_guarded`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: SchedulerEvents, owner: SchedulerDriver) -> None:
        self._loop = loop
        self._events = events
        self._owner = owner
        self.stopping = False  # set before the driver is stopped: its disconnection is then expected
        self.last_heard = time.monotonic()  # any event from the master, heartbeats included
        self.subscribed = False

    def _handoff(self, method: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the gateway is exiting
            self._loop.call_soon_threadsafe(method, *args)

    @_guarded
    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        """First subscription of a new framework."""
        self.subscribed = True
        self._handoff(self._events.registered, str(framework_id.get("value", "")), False)

    @_guarded
    def reregistered(self, driver: Any, master_info: Any) -> None:
        """Subscription with a framework id the driver already had (a failover)."""
        self.subscribed = True
        self._handoff(self._events.registered, str(driver.framework_id or ""), True)

    @_guarded
    def resourceOffers(self, driver: Any, offers: Any) -> None:
        """Offers."""
        self._handoff(self._events.offers, list(offers))

    @_guarded
    def statusUpdate(self, driver: Any, status: Any) -> None:
        """A status update; pymesos acknowledges it after this returns."""
        self._handoff(self._events.status, dict(status))

    @_guarded
    def executorLost(self, driver: Any, executor_id: Any, agent_id: Any, status: Any) -> None:
        """An executor exited (a FAILURE event with an executor id)."""
        self._handoff(self._events.executor_lost, str(executor_id.get("value")), str(agent_id.get("value")), status)

    @_guarded
    def slaveLost(self, driver: Any, agent_id: Any) -> None:
        """An agent was removed (a FAILURE event with only an agent id)."""
        self._handoff(self._events.agent_lost, str(agent_id.get("value")))

    @_guarded
    def error(self, driver: Any, message: Any) -> None:
        """The master refused or dropped the framework."""
        self._handoff(self._events.error, str(message))

    @_guarded
    def disconnected(self, driver: Any) -> None:
        """pymesos reconnects by itself, at once after a 503 or a closed stream: the owner watches the pace."""
        self.subscribed = False
        if not self.stopping:
            self._handoff(self._owner.disconnected, self)

    @_guarded
    def offerRescinded(self, driver: Any, offer_id: Any) -> None:
        """Nothing to do: offers are used or declined as they arrive."""

    @_guarded
    def frameworkMessage(self, driver: Any, executor_id: Any, agent_id: Any, data: Any) -> None:
        """Not used: calls and results travel on the direct channel."""

    @_guarded
    def processHeartBeat(self, driver: Any) -> None:
        """Only noted (by :func:`_guarded`): the watchdog reads ``last_heard``."""


class SchedulerDriver:
    """The pymesos scheduler driver, its call thread, its supervisor and its watchdog.

    The watchdog: pymesos has none (quirk 6), so a master that stops talking while
    TCP stays up would go unnoticed. Every event (heartbeats included) is noted;
    after ``missed_heartbeats`` heartbeat intervals of silence on a subscribed
    driver, the driver is stopped with failover, joined, and a new one subscribes
    with the same framework id (``reregistered``, then reconciliation). The same
    restart, after ``resubscribe_pause``, breaks pymesos's tight reconnect loop
    (quirk 7): ``disconnected`` more than once a second, several times in a row.
    """

    def __init__(self, settings: MesosSettings, events: SchedulerEvents, framework_id: str | None) -> None:
        self._settings = settings
        self._events = events
        self._framework_id = framework_id
        self._calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="roost-mesos-call")
        self._driver: Any = None
        self._callbacks: _Callbacks | None = None
        self._stopping = False
        self._restarting = False
        self._disconnects: collections.deque[float] = collections.deque(maxlen=TIGHT_LOOP_COUNT)
        self._watchdog: asyncio.TimerHandle | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.restarts = 0  # drivers replaced by the watchdog or the reconnect guard

    @property
    def framework_id(self) -> str | None:
        """The id the driver holds (after registration)."""
        if self._driver is None:
            return self._framework_id
        value = self._driver.framework_id
        return str(value) if value else self._framework_id

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start subscribing (with the saved framework id, if any), supervise the driver, watch the master."""
        self._loop = loop
        self._start_driver()
        self._watch()

    def _start_driver(self) -> None:
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
        callbacks = self._callbacks = _Callbacks(self._loop, self._events, self)
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
        driver.start()
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

    def _supervise(self, driver: Any, callbacks: _Callbacks) -> None:
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
                self._restart(f"nothing heard from the Mesos master for {silent:.1f} s", 0.0)
        self._watchdog = self._loop.call_later(settings.master_heartbeat / 2, self._watch)

    def disconnected(self, callbacks: _Callbacks) -> None:
        """pymesos lost the master; restart the driver after a pause if this keeps happening fast."""
        if callbacks is not self._callbacks or callbacks.stopping:
            return
        now = time.monotonic()
        self._disconnects.append(now)
        count = len(self._disconnects)
        span = now - self._disconnects[0]
        if count == TIGHT_LOOP_COUNT and span < count * TIGHT_LOOP_PERIOD:
            self._disconnects.clear()
            why = f"{count} disconnections from the Mesos master in {span:.1f} s (a reconnect loop)"
            self._restart(why, self._settings.resubscribe_pause)
        else:
            log.warning("disconnected from the Mesos master; pymesos is reconnecting")

    def _restart(self, why: str, pause: float) -> None:
        if self._restarting or self._stopping or self._loop is None:
            return
        self._restarting = True
        self._restart_task = self._loop.create_task(self._failover(why, pause))

    async def _failover(self, why: str, pause: float) -> None:
        try:
            log.warning(
                "%s: stopping the scheduler driver (failover) and subscribing again as framework %s%s",
                why, self.framework_id, f" in {pause:g} s" if pause else "",
            )  # fmt: skip
            await self._stop_driver()
            if pause:
                await asyncio.sleep(pause)  # a backoff against a master that keeps refusing, not synchronisation
            if not self._stopping:
                self.restarts += 1
                self._start_driver()
        finally:
            self._restarting = False
