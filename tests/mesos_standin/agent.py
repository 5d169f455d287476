"""A Mesos agent: launches executors, serves them ``/api/v1/executor``, relays to the master.

The master calls the agent directly (same process); the agent answers through a
:class:`MasterLink`. Each agent listens on its own port, which is its executors'
``MESOS_AGENT_ENDPOINT``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

from tests.mesos_standin import containerizer, executor_api
from tests.mesos_standin.command_executor import CommandTask, command_executor_info
from tests.mesos_standin.containers import (
    AgentAddress,
    Container,
    environment,
    make_sandbox,
    sandbox_path,
)
from tests.mesos_standin.executor_run import AgentTask, ExecutorRun, Phase
from tests.mesos_standin.http import HttpServer
from tests.mesos_standin.protocol import Json, for_framework, ident, nanoseconds, partition_aware, task_status, value_of
from tests.mesos_standin.resources import Resources
from tests.mesos_standin.settings import Settings
from tests.mesos_standin.status_updates import StatusUpdateManager

log = logging.getLogger(__name__)


class MasterLink(Protocol):
    """What an agent tells its master."""

    def forward_status_update(self, agent_id: str, framework_id: str, status: Json, latest_state: str) -> None:
        """One status update from the agent's status update manager."""

    def executor_message(self, agent_id: str, framework_id: str, executor_id: str, data: str) -> None:
        """A framework message from an executor."""

    def executor_exited(self, agent_id: str, framework_id: str, executor_id: str, status: int, command: bool) -> None:
        """An executor's container is gone (``status`` is its wait status, -1 if it never started)."""


class Agent:
    """One agent: its executors, its tasks and its status update manager."""

    def __init__(self, index: int, agent_id: str, settings: Settings, master: MasterLink) -> None:
        self.index = index
        self.id = agent_id
        self.settings = settings
        self.master = master
        self.resources = Resources.parse_flag(settings.agent_resources)
        self.server = HttpServer(f"agent{index}", lambda request: executor_api.handle(self, request))
        self.runs: dict[tuple[str, str], ExecutorRun] = {}
        self.tasks: dict[tuple[str, str], AgentTask] = {}
        self.updates = StatusUpdateManager(self._forward, settings.status_update_retry_interval, self._forget_task)
        self.alive = True
        self.registered_time = time.time()
        self._background: set[asyncio.Task[None]] = set()

    # -- identity --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port of this agent's executor API."""
        return self.server.port

    @property
    def pid(self) -> str:
        """The libprocess pid, as Mesos shows it."""
        return f"slave(1)@{self.settings.host}:{self.port}"

    def attributes(self) -> list[Json]:
        """Agent attributes: which stand-in agent this is."""
        return [{"name": "standin_agent", "type": "TEXT", "text": {"value": f"agent{self.index}"}}]

    def info(self) -> Json:
        """``AgentInfo``, as executors receive it in SUBSCRIBED."""
        return {
            "hostname": self.settings.host,
            "port": self.port,
            "id": ident(self.id),
            "resources": self.resources.to_json(),
            "attributes": self.attributes(),
        }

    async def start(self) -> None:
        """Start serving executors on a free port."""
        await self.server.start(self.settings.host, 0)

    # -- called by the master --------------------------------------------------------------------

    def launch(self, framework_info: Json, executor_info: Json | None, tasks: list[Json], group: bool) -> None:
        """Run tasks: command tasks get their own container; others go to their (maybe new) executor."""
        fid = str(value_of(framework_info.get("id")))
        if executor_info is None:
            for task in tasks:
                self._launch_command(framework_info, task)
            return
        eid = str(value_of(executor_info.get("executor_id")))
        run = self.runs.get((fid, eid))
        if run is not None and not run.alive:
            for task in tasks:
                state = for_framework("TASK_DROPPED", partition_aware(framework_info))
                self._agent_update(
                    fid,
                    value_of(task["task_id"]) or "",
                    state,
                    "REASON_EXECUTOR_TERMINATED",
                    "Executor is terminating",
                    eid,
                )
            return
        if run is None:
            run = self._new_run(framework_info, executor_info, is_command=False)
            timeout = self.settings.executor_registration_timeout
            running = containerizer.run_executor(run, executor_info.get("command", {}), self._environment, timeout)
            self._spawn(self._watch(run, running))
        agent_tasks = [AgentTask(task, fid, eid) for task in tasks]
        for agent_task in agent_tasks:
            self.tasks[(fid, agent_task.id)] = agent_task
        run.add("LAUNCH_GROUP" if group else "LAUNCH", agent_tasks)

    def kill_task(self, framework_id: str, task_id: str, kill_policy: object = None) -> bool:
        """Kill a task: drop it if undelivered, else ask its executor; False when the agent does not know it."""
        task = self.tasks.get((framework_id, task_id))
        run = self.runs.get((framework_id, task.executor_id)) if task else None
        if task is None or run is None or task.is_terminal():
            return False
        if isinstance(run.command, CommandTask):
            run.command.kill(kill_policy or task.info.get("kill_policy"))
        elif run.unqueue(task_id):
            self._agent_update(
                framework_id,
                task_id,
                "TASK_KILLED",
                "REASON_TASK_KILLED_DURING_LAUNCH",
                "Killed before delivery to the executor",
                run.executor_id,
            )
            if not run.subscribed and not run.live_tasks():
                self.shutdown_executor(framework_id, run.executor_id)
        else:
            kill: Json = {"task_id": ident(task_id)}
            if kill_policy:
                kill["kill_policy"] = kill_policy
            run.send({"type": "KILL", "kill": kill})
        return True

    def acknowledge(self, framework_id: str, task_id: str, uuid_b64: str) -> bool:
        """A scheduler acknowledgement relayed by the master."""
        return self.updates.acknowledge(framework_id, task_id, uuid_b64)

    def message(self, framework_id: str, executor_id: str, data: str) -> bool:
        """A framework message for an executor; False when it is not subscribed (message dropped)."""
        run = self.runs.get((framework_id, executor_id))
        return run is not None and run.send({"type": "MESSAGE", "message": {"data": data}})

    def shutdown_executor(self, framework_id: str, executor_id: str) -> None:
        """SHUTDOWN the executor, then destroy its container after the grace period."""
        run = self.runs.get((framework_id, executor_id))
        if run is None or run.phase in (Phase.TERMINATING, Phase.TERMINATED):
            return
        subscribed = run.subscribed
        run.phase = Phase.TERMINATING
        if isinstance(run.command, CommandTask):
            run.command.kill(None)
        elif subscribed:
            run.send({"type": "SHUTDOWN"})
            grace = nanoseconds(run.info.get("shutdown_grace_period"), self.settings.executor_shutdown_grace_period)
            run.shutdown_timer = asyncio.get_running_loop().call_later(grace, run.container.destroy)
        else:
            run.container.destroy()

    def remove_framework(self, framework_id: str) -> None:
        """The framework is gone: shut its executors down quietly and forget its updates."""
        self.updates.remove_framework(framework_id)
        for (fid, eid), run in list(self.runs.items()):
            if fid == framework_id:
                run.quiet = True
                self.shutdown_executor(fid, eid)
        for key in [key for key in self.tasks if key[0] == framework_id]:
            del self.tasks[key]

    def executor_ids(self, framework_id: str) -> list[str]:
        """Custom executors of the framework that are alive here (``Offer.executor_ids``)."""
        return [
            eid for (fid, eid), run in self.runs.items() if fid == framework_id and run.alive and not run.is_command
        ]

    def running_executor_info(self, framework_id: str, executor_id: str) -> Json | None:
        """The ExecutorInfo of a live executor with that id, if any."""
        run = self.runs.get((framework_id, executor_id))
        return run.info if run is not None and run.alive else None

    def die(self) -> None:
        """Fault: the agent host dies; every container's process group is killed, nothing more is said."""
        self.alive = False
        self.updates.clear()
        for run in self.runs.values():
            run.quiet = True
            run.phase = Phase.TERMINATING
            run.container.destroy()
        self.tasks.clear()
        self._spawn(self.server.stop())

    async def stop(self) -> None:
        """Stop serving and destroy every container (the stand-in is shutting down)."""
        self.die()
        await self.server.stop()
        for run in list(self.runs.values()):
            run.container.destroy()
            run.container.forget()

    def kill_executor(self, framework_id: str, executor_id: str) -> bool:
        """Fault: SIGKILL an executor's process group, as if it crashed."""
        run = self.runs.get((framework_id, executor_id))
        if run is None or run.container.pid is None:
            return False
        run.container.destroy()
        return True

    # -- called by the executor API ----------------------------------------------------------------

    def find_run(self, framework_id: str, executor_id: str) -> ExecutorRun | None:
        """The executor run a call is about."""
        return self.runs.get((framework_id, executor_id))

    # -- internals -------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _new_run(self, framework_info: Json, executor_info: Json, is_command: bool) -> ExecutorRun:
        fid = str(value_of(framework_info.get("id")))
        eid = str(value_of(executor_info.get("executor_id")))
        container_id = str(uuid.uuid4())
        sandbox = make_sandbox(sandbox_path(self.settings.work_dir, self.id, fid, eid, container_id))
        container = Container(container_id, sandbox, self.settings.work_dir / "pids")
        run = ExecutorRun(framework_info, {**executor_info, "framework_id": ident(fid)}, container, is_command)
        self.runs[(fid, eid)] = run
        return run

    def _environment(self, run: ExecutorRun, command: Json) -> dict[str, str]:
        grace = nanoseconds(run.info.get("shutdown_grace_period"), self.settings.executor_shutdown_grace_period)
        address = AgentAddress(self.id, self.settings.host, self.port)
        checkpoint = bool(run.framework_info.get("checkpoint", False))
        sandbox = run.container.sandbox
        return environment(address, run.framework_id, run.executor_id, sandbox, checkpoint, grace, command)

    async def _watch(self, run: ExecutorRun, running: Awaitable[int]) -> None:
        """Wait for the container to end, then clean up after it."""
        self._terminated(run, await running)

    def _launch_command(self, framework_info: Json, task: Json) -> None:
        """A command task: its own container running the command (see command_executor)."""
        fid = str(value_of(framework_info.get("id")))
        tid = str(value_of(task.get("task_id")))
        command = task.get("command", {})
        generated = command_executor_info(task)
        run = self._new_run(framework_info, generated, is_command=True)
        agent_task = AgentTask(task, fid, tid)
        self.tasks[(fid, tid)] = agent_task
        run.tasks[tid] = agent_task
        run.command = CommandTask(task, self.id, run.container, lambda status: self.accept_update(fid, status))
        self._spawn(self._watch(run, containerizer.run_command_task(run, run.command, command, self._environment)))

    def _terminated(self, run: ExecutorRun, status: int) -> None:
        """The executor is gone: kill what is left of its group, fail its live tasks, tell the master."""
        if run.phase is Phase.TERMINATED:
            return
        run.phase = Phase.TERMINATED
        run.cancel_timers()
        run.container.destroy()
        run.container.forget()
        if run.stream is not None:
            run.stream.close()
        if self.runs.get((run.framework_id, run.executor_id)) is run:
            del self.runs[(run.framework_id, run.executor_id)]
        if run.quiet or not self.alive:
            return
        reason, message = run.exit_reason
        for task in run.live_tasks():
            self._agent_update(
                run.framework_id, task.id, "TASK_FAILED", reason, message, None if run.is_command else run.executor_id
            )
        self.master.executor_exited(self.id, run.framework_id, run.executor_id, status, run.is_command)

    def _agent_update(self, fid: str, task_id: str, state: str, reason: str, message: str, eid: str | None) -> None:
        """A reliable update generated by the agent itself (SOURCE_AGENT)."""
        status = task_status(
            task_id,
            state,
            source="SOURCE_AGENT",
            reason=reason,
            message=message,
            agent_id=self.id,
            executor_id=eid,
            reliable=True,
        )
        self.accept_update(fid, status)

    def accept_update(self, framework_id: str, status: Json) -> None:
        """Record a reliable update's state on its task and hand it to the status update manager."""
        task = self.tasks.get((framework_id, str(value_of(status.get("task_id")))))
        if task is not None:
            task.state = str(status["state"])
        self.updates.update(framework_id, status)

    def _forward(self, framework_id: str, status: Json) -> None:
        task = self.tasks.get((framework_id, str(value_of(status.get("task_id")))))
        latest = task.state if task is not None else str(status.get("state"))
        self.master.forward_status_update(self.id, framework_id, status, latest)

    def _forget_task(self, framework_id: str, task_id: str) -> None:
        task = self.tasks.pop((framework_id, task_id), None)
        run = self.runs.get((framework_id, task.executor_id)) if task is not None else None
        if run is not None:
            run.tasks.pop(task_id, None)
