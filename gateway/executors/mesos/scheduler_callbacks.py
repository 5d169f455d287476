"""pymesos's scheduler callbacks reduced to hand-offs to the event loop, each unable to raise.

pymesos runs every callback on its one IO thread, and a callback that raises
kills that thread (and, without failover, tears the framework down). So each
callback here does one thing: ``loop.call_soon_threadsafe`` to a
:class:`~gateway.executors.mesos.scheduler.SchedulerEvents` method, and is
guarded: an exception is logged and reported
(:meth:`~gateway.executors.mesos.scheduler.SchedulerEvents.callback_failed`,
which reconciles), never left to pymesos. The callbacks also note when the
master was last heard from, and hand disconnections to the
:class:`~gateway.executors.mesos.scheduler.SchedulerDriver`, whose watchdog
and reconnect guard read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pymesos

if TYPE_CHECKING:
    from gateway.executors.mesos.scheduler import SchedulerDriver, SchedulerEvents

log = logging.getLogger(__name__)


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """Make a pymesos callback unable to raise: an exception is logged and reported, never seen by pymesos.

    An exception escaping a callback would end pymesos's IO thread (MESOS_API.md quirk 4). The
    event it carried may be lost (a status update is acknowledged anyway), so the failure is
    handed to :meth:`SchedulerEvents.callback_failed`, which reconciles.
    """
    name = callback.__name__

    @functools.wraps(callback)
    def guarded(self: SchedulerCallbacks, driver: Any, *args: Any) -> None:
        if name != "disconnected":
            self.last_heard = time.monotonic()
        try:
            callback(self, driver, *args)
        except Exception:
            log.exception("the pymesos callback %s raised; the framework goes on and reconciles", name)
            with contextlib.suppress(Exception):
                self._loop.call_soon_threadsafe(self._events.callback_failed, name)

    return guarded


class SchedulerCallbacks(pymesos.Scheduler):  # type: ignore[misc]  # pymesos is untyped
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
            self._handoff(self._owner.disconnected, self, time.monotonic())

    @_guarded
    def offerRescinded(self, driver: Any, offer_id: Any) -> None:
        """Nothing to do: offers are used or declined as they arrive."""

    @_guarded
    def frameworkMessage(self, driver: Any, executor_id: Any, agent_id: Any, data: Any) -> None:
        """Not used: calls and results travel on the direct channel."""

    @_guarded
    def processHeartBeat(self, driver: Any) -> None:
        """Only noted (by :func:`_guarded`): the watchdog reads ``last_heard``."""
