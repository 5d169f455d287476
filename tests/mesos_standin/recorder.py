"""Unmodified pymesos scheduler drivers for tests, with a scheduler that only records what happens.

The callbacks hand off and never raise (an exception in a pymesos callback kills the driver and
interrupts the main thread, i.e. the test runner). Tests react from their own thread: wait for
an event, then call the driver, which is thread-safe. Every wait takes its timeout in base seconds,
stretched by the suite's timeout scale (``tests.support.timeouts``). Import this module on the main
thread: importing pymesos installs a SIGINT handler (MESOS_API.md quirk 1).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pymesos

from tests.support.timeouts import scaled

T = TypeVar("T")


class EventLog:
    """Callbacks as ``(name, args)`` in arrival order, with waiting."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.times: list[float] = []  # time.monotonic() of each event

    def add(self, name: str, *args: Any) -> None:
        """Record one callback."""
        with self._condition:
            self.events.append((name, args))
            self.times.append(time.monotonic())
            self._condition.notify_all()

    def of(self, name: str) -> list[tuple[Any, ...]]:
        """Arguments of every recorded callback called ``name``."""
        with self._condition:
            return [args for event, args in self.events if event == name]

    def wait(
        self, find: Callable[[list[tuple[str, tuple[Any, ...]]]], T | None], timeout: float = 10.0, what: str = "event"
    ) -> T:
        """Block until ``find(events)`` returns something truthy; AssertionError after ``timeout`` (base seconds)."""
        limit = scaled(timeout)
        with self._condition:
            found = self._condition.wait_for(lambda: find(self.events), limit)
            if not found:
                names = [name for name, _ in self.events][-30:]
                raise AssertionError(f"timed out after {limit:g} s waiting for {what}; last callbacks: {names}")
            return found

    def wait_for(
        self, name: str, predicate: Callable[..., bool] = lambda *a: True, timeout: float = 10.0, after: int = 0
    ) -> tuple[Any, ...]:
        """The first ``name`` callback (from index ``after``) whose arguments satisfy ``predicate``."""

        def find(events: list[tuple[str, tuple[Any, ...]]]) -> tuple[Any, ...] | None:
            for event, args in events[after:]:
                if event == name and predicate(*args):
                    return args
            return None

        return self.wait(find, timeout, name)

    def index_of(self, name: str, after: int = 0, timeout: float = 10.0) -> int:
        """Wait for the next ``name`` callback from index ``after``; returns its index (see ``times``)."""

        def find(events: list[tuple[str, tuple[Any, ...]]]) -> int | None:
            return next((i + 1 for i in range(after, len(events)) if events[i][0] == name), None)

        return self.wait(find, timeout, name) - 1

    def mark(self) -> int:
        """The current position, for waiting only on later events."""
        with self._condition:
            return len(self.events)

    def statuses(self, task_id: str) -> list[str]:
        """States received for a task, in order."""
        return [args[0]["state"] for args in self.of("statusUpdate") if args[0]["task_id"]["value"] == task_id]


class RecordingScheduler(pymesos.Scheduler):  # type: ignore[misc]  # pymesos is untyped
    """Records every scheduler callback into ``self.log``."""

    def __init__(self) -> None:
        self.log = EventLog()

    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        """Record."""
        self.log.add("registered", framework_id, master_info)

    def reregistered(self, driver: Any, master_info: Any) -> None:
        """Record."""
        self.log.add("reregistered", master_info)

    def disconnected(self, driver: Any) -> None:
        """Record."""
        self.log.add("disconnected")

    def processHeartBeat(self, driver: Any) -> None:
        """Record."""
        self.log.add("heartbeat")

    def resourceOffers(self, driver: Any, offers: Any) -> None:
        """Record."""
        self.log.add("resourceOffers", offers)

    def offerRescinded(self, driver: Any, offer_id: Any) -> None:
        """Record."""
        self.log.add("offerRescinded", offer_id)

    def statusUpdate(self, driver: Any, status: Any) -> None:
        """Record."""
        self.log.add("statusUpdate", status)

    def frameworkMessage(self, driver: Any, executor_id: Any, agent_id: Any, data: Any) -> None:
        """Record."""
        self.log.add("frameworkMessage", executor_id, agent_id, data)

    def slaveLost(self, driver: Any, agent_id: Any) -> None:
        """Record."""
        self.log.add("slaveLost", agent_id)

    def executorLost(self, driver: Any, executor_id: Any, agent_id: Any, status: Any) -> None:
        """Record."""
        self.log.add("executorLost", executor_id, agent_id, status)

    def error(self, driver: Any, message: Any) -> None:
        """Record."""
        self.log.add("error", message)


class RecordedFramework:
    """A pymesos scheduler driver plus the recorder behind it."""

    def __init__(self, master: str, implicit_acknowledgements: bool = True, **info: Any) -> None:
        self.scheduler = RecordingScheduler()
        self.info: dict[str, Any] = {
            "user": "roost",
            "name": "standin-test",
            "failover_timeout": 60.0,
            "checkpoint": True,
            "capabilities": [{"type": "PARTITION_AWARE"}],
            **info,
        }
        self.driver = pymesos.MesosSchedulerDriver(
            self.scheduler, self.info, master, failover=True, implicit_acknowledgements=implicit_acknowledgements
        )
        self.log = self.scheduler.log

    @property
    def id(self) -> str:
        """The framework id the driver holds."""
        return str(self.driver.framework_id)

    def start(self) -> RecordedFramework:
        """Start the driver and wait until it is registered (or re-registered)."""
        self.driver.start()
        self.log.wait(
            lambda events: any(name in ("registered", "reregistered") for name, _ in events), what="registration"
        )
        return self

    def stop(self, failover: bool = True) -> None:
        """Stop the driver (failover by default: no TEARDOWN) and wait for its thread a bounded time."""
        self.driver.stop(failover=failover)
        joiner = threading.Thread(target=self.driver.join, daemon=True)
        joiner.start()
        joiner.join(scaled(5))

    def offers(self, after: int = 0, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait for offers received after event index ``after`` covering ``count`` agents."""

        def find(events: list[tuple[str, tuple[Any, ...]]]) -> list[dict[str, Any]] | None:
            offers = [offer for name, args in events[after:] if name == "resourceOffers" for offer in args[0]]
            agents = {offer["agent_id"]["value"] for offer in offers}
            return offers if len(agents) >= count else None

        return self.log.wait(find, timeout, f"offers from {count} agent(s)")

    def status(self, task_id: str, state: str, after: int = 0, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for an update putting ``task_id`` in ``state`` (from event index ``after``)."""
        args = self.log.wait_for(
            "statusUpdate", lambda s: s["task_id"]["value"] == task_id and s["state"] == state, timeout, after
        )
        found: dict[str, Any] = args[0]
        return found
