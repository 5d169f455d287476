"""Isolated calls: one Mesos task per call, for functions registered with ``isolated=True``.

Such a call gets an executor of its own, launched from the first offer that
holds the function's ``cpus``/``mem`` (plus the executor's own share): the same
executor program as the warm pool, with one worker, reached over the same
channel under its own token. Its link is *dedicated*: the call is sent when the
executor connects, and no other call ever goes there. When the call has its
answer, whatever it is, the task is killed; so a call that times out (its worker
killed by the executor, as everywhere) also ends its task. If no answer comes
within ``start_timeout`` plus the call's timeout, the call is answered
``timeout`` and the task killed. A task that ends before answering answers
the call ``unavailable`` (isolated calls are not rerun).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config_sections import MesosSettings
from gateway.errors import CallTimeout
from gateway.executors.base import Call
from gateway.executors.mesos import tasks
from gateway.executors.mesos.remote_pool import RemotePool
from gateway.executors.mesos.tasks import ExecutorConfig, Json

log = logging.getLogger(__name__)

ENDED = frozenset(
    {
        "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE",
        "TASK_GONE_BY_OPERATOR", "TASK_LOST", "TASK_UNREACHABLE", "TASK_UNKNOWN",
    }
)  # fmt: skip


@dataclass(slots=True)
class IsolatedTask:
    """One isolated call's task: wanted (no offer yet), then launched."""

    ident: str
    token: str
    cpus: float
    mem: float
    agent_id: str = ""
    launched: bool = False
    done: bool = False  # the call has its answer: kill the task, or do not launch it


class IsolatedTasks:
    """The isolated calls' tasks; :class:`~.placement.PoolPlacement` hands it offers and status updates."""

    def __init__(
        self,
        settings: MesosSettings,
        pool: RemotePool,
        config: Callable[[str, int], ExecutorConfig],
        new_task_id: Callable[[], str],
        launch: Callable[[Json, Json], None],
        kill: Callable[[str], None],
        want_offers: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._config = config
        self._new_task_id = new_task_id
        self._launch = launch  # (offer, task info)
        self._kill = kill
        self._want_offers = want_offers
        self.tasks: dict[str, IsolatedTask] = {}
        self.bundle_uri = ""

    @property
    def waiting(self) -> bool:
        """Some call waits for an offer."""
        return any(not task.launched and not task.done for task in self.tasks.values())

    def submit(self, call: Call, key: str) -> asyncio.Future[bytes]:
        """Ask for a task for ``call``; its future is answered as the module docstring says."""
        spec = call.spec
        task = IsolatedTask(
            self._new_task_id(), secrets.token_urlsafe(24), spec.options.cpus or self._settings.cpus,
            spec.options.mem or self._settings.mem,
        )  # fmt: skip
        self.tasks[task.ident] = task
        link = self._pool.add_link(task.ident, task.token, "", dedicated=True)
        future = self._pool.submit_to(link, call, key)
        loop = asyncio.get_running_loop()
        limit = self._settings.start_timeout + call.timeout
        timer = loop.call_later(limit, self._expired, task.ident, limit)

        def answered(_: asyncio.Future[bytes]) -> None:
            timer.cancel()
            self._answered(task)

        future.add_done_callback(answered)
        log.info("isolated call of %s: waiting for an offer of %g cpus, %g MB (task %s)", key, task.cpus, task.mem,
                 task.ident)  # fmt: skip
        self._want_offers()
        return future

    def place(self, offers: list[Json]) -> list[Json]:
        """Launch waiting tasks on the offers that hold them; return the offers left."""
        left = list(offers)
        for task in self.tasks.values():
            if task.launched or task.done:
                continue
            offer = next((o for o in left if tasks.fits(o, task.cpus, task.mem)), None)
            if offer is None:
                continue
            left.remove(offer)
            task.launched, task.agent_id = True, str(offer["agent_id"]["value"])
            link = self._pool.link_for(task.ident)
            if link is not None:
                link.agent_id = task.agent_id
            info = tasks.pool_task(
                task.ident, offer, "", self.bundle_uri, self._settings.python, self._config(task.token, 1),
                task.cpus, task.mem,
            )  # fmt: skip
            info["name"] = f"roost isolated {task.ident}"
            log.info("launching isolated task %s on agent %s", task.ident, task.agent_id)
            self._launch(offer, info)
        return left

    def status(self, ident: str, state: str, status: Json) -> bool:
        """Handle an update if it is about an isolated task (True), else leave it to the pool."""
        task = self.tasks.get(ident)
        if task is None:
            return False
        if state not in ENDED:
            return True
        del self.tasks[ident]
        why = f"{state} ({status.get('reason', 'no reason')}): {status.get('message', '')}".rstrip(": ")
        log.info("isolated task %s ended: %s", ident, why)
        self._pool.remove_link(ident, why, expected=True)
        return True

    def launch_failed(self, ident: str, why: str) -> None:
        """The launch call failed: the call is answered ``unavailable``."""
        self.status(ident, "TASK_DROPPED", {"message": why})

    def kill_all(self) -> list[str]:
        """Mark every task done (not to be launched); the launched ones, to be killed."""
        for task in self.tasks.values():
            task.done = True
        launched = [task.ident for task in self.tasks.values() if task.launched]
        for ident in [i for i, t in self.tasks.items() if not t.launched]:
            self.status(ident, "TASK_KILLED", {"message": "the gateway is stopping"})
        return launched

    def _answered(self, task: IsolatedTask) -> None:
        task.done = True
        if task.launched and task.ident in self.tasks:
            self._kill(task.ident)
        elif not task.launched:
            self.tasks.pop(task.ident, None)
            self._pool.remove_link(task.ident, "answered before it was launched", expected=True)

    def _expired(self, ident: str, limit: float) -> None:
        log.warning("isolated task %s gave no answer within %g s; killing it", ident, limit)
        self._pool.end_call(ident, CallTimeout(f"the isolated call did not finish within {limit:g} s"))
