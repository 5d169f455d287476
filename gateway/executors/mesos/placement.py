"""Keeping the warm executors placed: offers in, pool tasks out; stale tasks killed.

On every (re)registration the framework's tasks are reconciled (explicitly for
the pool tasks we know, then implicitly: the master reports every task it
knows), and any task of an earlier gateway instance is killed, so a restart
leaves no executor behind. A pymesos callback that raised may have lost its
event, so it triggers the same reconciliation. Then, until ``executors``
pool tasks are live, each round of offers places at most one new executor per
agent, emptiest agents first, so executors spread over the agents; the other
offers are declined with a long filter, and offers are suppressed once the pool
is complete (revived when an executor is lost). A pool task that ends is
forgotten, its calls answered by the :class:`RemotePool`, and replaced after a
backoff that grows while replacements keep failing. A pool task reported
``TASK_LOST``/``TASK_UNREACHABLE`` (its agent is gone, maybe for a while), a
``FAILURE`` for its executor, or a ``FAILURE`` for its agent count as ended:
the task is replaced on another agent, and if it shows up running later it is
killed (its calls were already answered or retried).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.config_sections import MesosSettings
from gateway.executors.mesos import tasks
from gateway.executors.mesos.counters import MesosCounters
from gateway.executors.mesos.framework_state import FrameworkState
from gateway.executors.mesos.isolated import IsolatedTasks
from gateway.executors.mesos.remote_pool import RemotePool
from gateway.executors.mesos.scheduler import SchedulerDriver
from gateway.executors.mesos.tasks import ExecutorConfig, Json

log = logging.getLogger(__name__)

ENDED = frozenset(
    {
        "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE",
        "TASK_GONE_BY_OPERATOR", "TASK_LOST", "TASK_UNREACHABLE", "TASK_UNKNOWN",
    }
)  # fmt: skip
"""States after which a pool task serves nothing (a TASK_LOST/UNREACHABLE one that comes back is killed)."""

DECLINE_SECONDS = 300.0  # offers we do not need stay away this long (or until we revive)
MAX_BACKOFF = 30.0


@dataclass(slots=True)
class PoolTask:
    """One of this gateway's pool tasks."""

    ident: str
    agent_id: str
    state: str = "TASK_STAGING"


class PoolPlacement:
    """Implements :class:`~gateway.executors.mesos.scheduler.SchedulerEvents` for a fixed pool of executors."""

    def __init__(
        self,
        settings: MesosSettings,
        pool: RemotePool,
        state: FrameworkState,
        config: Callable[[str, int], ExecutorConfig],
        on_fatal: Callable[[str], None],
        counters: MesosCounters | None = None,
    ) -> None:
        self.instance = secrets.token_hex(4)
        self.counters = counters if counters is not None else MesosCounters()
        self._settings = settings
        self._pool = pool
        self._state = state
        self._config = config  # (token, workers) -> the executor's configuration
        self._on_fatal = on_fatal
        self.driver: SchedulerDriver | None = None
        self.bundle_uri = ""
        self.tasks: dict[str, PoolTask] = {}  # live pool tasks of this instance
        self._launched = 0
        self._failures = 0  # pool tasks in a row that ended without running
        self._hold_until = 0.0
        self._killing: set[str] = set()  # earlier instances' tasks we asked to kill
        self._suppressed = False
        self.target = settings.executors  # pool tasks wanted now (the elastic pool moves it)
        self._background: set[asyncio.Task[Any]] = set()
        self.registered_event = asyncio.Event()
        self.all_ended = asyncio.Event()
        self.isolated = IsolatedTasks(
            settings, pool, config, self._new_task_id, self._launch_isolated, self._kill, self._want_offers
        )

    # SchedulerEvents

    def registered(self, framework_id: str, again: bool) -> None:
        """Save the id, reconcile, and ask for offers if the pool is not complete."""
        how = "re-registered with" if again else "registered with"
        log.info("%s the Mesos master as framework %s (instance %s)", how, framework_id, self.instance)
        self.counters.registrations += 1
        self.counters.reregistrations += int(again)
        try:
            self._state.save(framework_id)
        except OSError as exc:
            log.error("cannot save the framework id to %s: %s", self._state.path, exc)
        self.registered_event.set()
        self._suppressed = False
        self._spawn(self._reconcile())
        self._spawn(self._call("reviveOffers"))

    def callback_failed(self, name: str) -> None:
        """An event may be lost: ask the master for the state of every task again."""
        self.counters.callback_failures += 1
        self._spawn(self._reconcile())

    def offers(self, offers: list[Json]) -> None:
        """Place isolated calls' tasks, then missing executors, at most one per agent per round; decline the rest."""
        if self.driver is not None:
            self.isolated.bundle_uri = self.bundle_uri
            offers = self.isolated.place(offers)
        waiting = self.isolated.waiting
        need = self.target - len(self.tasks)
        held = self._hold_until - time.monotonic()
        per_agent: dict[str, int] = {}
        for task in self.tasks.values():
            per_agent[task.agent_id] = per_agent.get(task.agent_id, 0) + 1
        decline = []
        for offer in sorted(offers, key=lambda o: per_agent.get(o["agent_id"]["value"], 0)):
            if need > 0 and held <= 0 and self.driver is not None and self._fits(offer):
                self._launch(offer)
                need -= 1
            else:
                decline.append(offer["id"])
        if decline:
            seconds = held if need > 0 and held > 0 else (1.0 if need > 0 or waiting else DECLINE_SECONDS)
            self._spawn(self._call("declineOffer", decline, {"refuse_seconds": seconds}))
        if need <= 0 and not waiting and not self._suppressed:
            self._suppressed = True
            self._spawn(self._call("suppressOffers"))

    def status(self, status: Json) -> None:
        """Track our pool tasks; kill live tasks of earlier instances."""
        ident, state = str(status["task_id"]["value"]), str(status.get("state", ""))
        if self.isolated.status(ident, state, status):
            return
        task = self.tasks.get(ident)
        if task is not None:
            self._our_status(task, state, status)
        elif state not in ENDED and tasks.instance_of(ident) is not None:
            if ident not in self._killing:
                mine = tasks.instance_of(ident) == self.instance
                left = "given up as lost earlier" if mine else "left by an earlier gateway run"
                log.info("killing task %s, %s (%s)", ident, left, state)
                self._killing.add(ident)
                self._spawn(self._call("killTask", {"value": ident}))
        elif state in ENDED:
            self._killing.discard(ident)

    def executor_lost(self, executor_id: str, agent_id: str, status: int) -> None:
        """Our pool task's executor exited: the task ended (its own update may come later, or never)."""
        log.info("executor %s on agent %s exited (wait status %s)", executor_id, agent_id, status)
        task = self.tasks.get(executor_id)  # a pool task's executor has the task's id
        if task is not None:
            self._our_status(task, "TASK_FAILED", {"message": f"FAILURE: its executor exited (status {status})"})

    def agent_lost(self, agent_id: str) -> None:
        """Every pool task on the agent ended (their TASK_UNREACHABLE or TASK_LOST updates may come later)."""
        log.warning("Mesos agent %s was lost", agent_id)
        for task in [t for t in self.tasks.values() if t.agent_id == agent_id]:
            self._our_status(task, "TASK_LOST", {"message": f"FAILURE: agent {agent_id} was lost"})

    def error(self, message: str) -> None:
        """A removed framework can never come back: forget its id and stop (the next start registers anew)."""
        log.error("the Mesos master sent an error: %s", message)
        if "removed" in message.lower():
            self._state.clear()
            self._on_fatal(f"the Mesos master removed the framework ({message}); the next start registers anew")

    def driver_died(self, why: str) -> None:
        """Fatal: the gateway cannot place or reach executors without its driver."""
        self._on_fatal(f"the Mesos scheduler driver stopped unexpectedly: {why}")

    # The elastic pool (MesosExecutor decides when).

    def grow(self, waiting: int) -> None:
        """One more executor, unless at ``max_executors`` or one is still starting."""
        limit = self._settings.max_executors or self._settings.executors
        if self.target >= limit or len(self.tasks) < self.target:
            return
        if any(task.state != "TASK_RUNNING" for task in self.tasks.values()):
            return
        self.target += 1
        log.info("%d calls wait for a worker: growing the pool to %d executors", waiting, self.target)
        self._want_offers()

    def shrink(self, executor_id: str) -> bool:
        """Stop an idle executor while above ``executors``; whether it is being stopped."""
        if self.target <= self._settings.executors or executor_id not in self.tasks:
            return False
        self.target -= 1
        log.info("executor %s is idle: shrinking the pool to %d executors", executor_id, self.target)
        self._kill(executor_id)
        return True

    # Stopping.

    async def kill_all(self, timeout: float) -> None:
        """Kill our pool tasks (and isolated ones) and wait (up to ``timeout``) for the pool tasks to end."""
        for ident in self.isolated.kill_all():
            await self._call("killTask", {"value": ident})
        if not self.tasks:
            return
        self.all_ended.clear()
        for ident in list(self.tasks):
            await self._call("killTask", {"value": ident})
        try:
            await asyncio.wait_for(self.all_ended.wait(), timeout)
        except TimeoutError:
            log.warning("pool tasks %s did not end within %g s", sorted(self.tasks), timeout)

    # Internals.

    def _our_status(self, task: PoolTask, state: str, status: Json) -> None:
        previous, task.state = task.state, state
        if state == "TASK_RUNNING" and previous != state:
            self._failures = 0
            log.info("pool task %s is running on agent %s", task.ident, task.agent_id)
        if state not in ENDED:
            return
        del self.tasks[task.ident]
        why = f"{state} ({status.get('reason', 'no reason')}): {status.get('message', '')}".rstrip(": ")
        self._pool.remove_link(task.ident, why, expected=state == "TASK_KILLED")
        if not self.tasks:
            self.all_ended.set()
        if state == "TASK_KILLED":
            log.info("pool task %s was killed", task.ident)
            return
        log.error("pool task %s ended: %s (the executor's log is in its sandbox's stderr)", task.ident, why)
        if previous != "TASK_RUNNING":
            self._failures += 1
        delay = min(0.5 * 2 ** (self._failures - 1), MAX_BACKOFF) if self._failures else 0.0
        self._hold_until = time.monotonic() + delay
        self._suppressed = False
        self._spawn(self._revive_after(delay))

    def _fits(self, offer: Json) -> bool:
        return tasks.fits(offer, self._settings.cpus, self._settings.mem)

    def _new_task_id(self) -> str:
        self._launched += 1
        return tasks.task_id(self.instance, self._launched)

    def _launch_isolated(self, offer: Json, info: Json) -> None:
        assert self.driver is not None
        self.counters.isolated_tasks_launched += 1
        info["executor"]["framework_id"] = {"value": self.driver.framework_id or ""}
        self._spawn(self._launch_isolated_call(offer["id"], info))

    async def _launch_isolated_call(self, offer_id: Json, info: Json) -> None:
        assert self.driver is not None
        if not await self.driver.call("launchTasks", [offer_id], [info], {"refuse_seconds": 1.0}):
            self.isolated.launch_failed(info["task_id"]["value"], "the launch call failed")

    def _kill(self, ident: str) -> None:
        self._spawn(self._call("killTask", {"value": ident}))

    def _want_offers(self) -> None:
        if self._suppressed:
            self._suppressed = False
            self._spawn(self._call("reviveOffers"))

    def _launch(self, offer: Json) -> None:
        assert self.driver is not None
        ident = self._new_task_id()
        agent_id = str(offer["agent_id"]["value"])
        token = secrets.token_urlsafe(24)
        framework_id = self.driver.framework_id or ""
        config = self._config(token, self._settings.workers)
        info = tasks.pool_task(
            ident, offer, framework_id, self.bundle_uri, self._settings.python, config,
            self._settings.cpus, self._settings.mem,
        )  # fmt: skip
        self.tasks[ident] = PoolTask(ident, agent_id)
        self.counters.executors_launched += 1
        self._pool.add_link(ident, token, agent_id)
        log.info("launching pool task %s on agent %s (%s)", ident, agent_id, offer.get("hostname", "?"))
        self._spawn(self._launch_call(ident, offer["id"], info))
        asyncio.get_running_loop().call_later(self._settings.start_timeout, self._check_launch, ident)

    async def _launch_call(self, ident: str, offer_id: Json, info: Json) -> None:
        assert self.driver is not None
        launched = await self.driver.call("launchTasks", [offer_id], [info], {"refuse_seconds": 1.0})
        task = self.tasks.get(ident)
        if not launched and task is not None:
            self._our_status(task, "TASK_DROPPED", {"message": "the launch call failed"})

    def _check_launch(self, ident: str) -> None:
        """No word of a launched task at all: ask the master (pymesos may have dropped the call, quirk 9)."""
        task = self.tasks.get(ident)
        if task is not None and task.state == "TASK_STAGING":
            log.warning("no status for pool task %s after %g s; reconciling it", ident, self._settings.start_timeout)
            self.counters.reconciliations += 1
            self.counters.tasks_reconciled_explicitly += 1
            self._spawn(self._call("reconcileTasks", [{"task_id": {"value": ident}}]))

    async def _reconcile(self) -> None:
        # Not the ones still staging: their launch may not have reached the master yet (TASK_UNKNOWN would
        # come back); implicit reconciliation and the launch check cover them.
        known = [{"task_id": {"value": t.ident}} for t in self.tasks.values() if t.state != "TASK_STAGING"]
        log.info("reconciling: %d known pool tasks explicitly, then all tasks implicitly", len(known))
        self.counters.reconciliations += 1
        self.counters.tasks_reconciled_explicitly += len(known)
        if known:
            await self._call("reconcileTasks", known)
        await self._call("reconcileTasks", [])

    async def _revive_after(self, delay: float) -> None:
        await asyncio.sleep(delay)  # a backoff, not synchronisation
        await self._call("reviveOffers")

    async def _call(self, method: str, *args: Any) -> None:
        if self.driver is not None:
            await self.driver.call(method, *args)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
