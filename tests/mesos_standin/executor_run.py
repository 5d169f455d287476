"""One run of an executor on an agent: its container, its tasks, its event stream, its queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum

from tests.mesos_standin.command_executor import CommandTask
from tests.mesos_standin.containers import Container
from tests.mesos_standin.http import EventStream
from tests.mesos_standin.protocol import TERMINAL_STATES, Json, ident, value_of


class Phase(Enum):
    """Where an executor run is in its life."""

    LAUNCHING = "launching"  # fetching URIs, process not started yet
    RUNNING = "running"  # process started (subscribed or not)
    TERMINATING = "terminating"  # SHUTDOWN sent or destroy requested
    TERMINATED = "terminated"  # process gone, group killed


@dataclass
class AgentTask:
    """The agent's view of one task."""

    info: Json
    framework_id: str
    executor_id: str
    state: str = "TASK_STAGING"

    @property
    def id(self) -> str:
        """The task id string."""
        return str(value_of(self.info.get("task_id")))

    def is_terminal(self) -> bool:
        """True once a terminal update was accepted for it."""
        return self.state in TERMINAL_STATES


class ExecutorRun:
    """An executor and its container; tasks wait in ``queue`` until the executor subscribes."""

    def __init__(self, framework_info: Json, info: Json, container: Container, is_command: bool) -> None:
        self.framework_info = framework_info
        self.info = info
        self.container = container
        self.is_command = is_command
        self.command: CommandTask | None = None  # set for command tasks (the built-in command executor)
        self.phase = Phase.LAUNCHING
        self.stream: EventStream | None = None
        self.queue: list[tuple[str, list[AgentTask]]] = []
        self.tasks: dict[str, AgentTask] = {}
        self.registration_timer: asyncio.TimerHandle | None = None
        self.shutdown_timer: asyncio.TimerHandle | None = None
        self.exit_reason = ("REASON_EXECUTOR_TERMINATED", "Executor terminated")
        self.quiet = False  # no status updates or FAILURE on exit (framework removed, agent dead)

    @property
    def framework_id(self) -> str:
        """The framework's id string."""
        return str(value_of(self.framework_info.get("id")))

    @property
    def executor_id(self) -> str:
        """The executor's id string."""
        return str(value_of(self.info.get("executor_id")))

    @property
    def subscribed(self) -> bool:
        """True while the executor's event stream is open."""
        return self.stream is not None and not self.stream.closed

    @property
    def alive(self) -> bool:
        """True until shutdown or destruction began."""
        return self.phase in (Phase.LAUNCHING, Phase.RUNNING)

    def send(self, event: Json) -> bool:
        """Send an event to the executor; False when it is not subscribed."""
        if self.stream is None or self.stream.closed:
            return False
        self.stream.send(event)
        return True

    def add(self, kind: str, tasks: list[AgentTask]) -> None:
        """Give tasks to the executor now if it is subscribed, else queue them."""
        for task in tasks:
            self.tasks[task.id] = task
        self.queue.append((kind, tasks))
        if self.subscribed:
            self.deliver_queued()

    def deliver_queued(self) -> None:
        """Send every queued launch, in order (each task exactly once: pymesos asserts on repeats)."""
        queue, self.queue = self.queue, []
        for kind, tasks in queue:
            live = [task for task in tasks if not task.is_terminal()]
            if not live:
                continue
            if kind == "LAUNCH":
                self.send({"type": "LAUNCH", "launch": {"task": live[0].info}})
            else:
                self.send({"type": "LAUNCH_GROUP", "launch_group": {"task_group": {"tasks": [t.info for t in live]}}})

    def unqueue(self, task_id: str) -> bool:
        """Remove a task that was not delivered yet; True when it was still queued."""
        for _, tasks in self.queue:
            for task in tasks:
                if task.id == task_id:
                    tasks.remove(task)
                    return True
        return False

    def live_tasks(self) -> list[AgentTask]:
        """Tasks not yet in a terminal state."""
        return [task for task in self.tasks.values() if not task.is_terminal()]

    def subscribed_event(self, agent_info: Json) -> Json:
        """The SUBSCRIBED event: the exact executor and framework ids pymesos compares with its environment."""
        return {
            "type": "SUBSCRIBED",
            "subscribed": {
                "executor_info": self.info,
                "framework_info": self.framework_info,
                "agent_info": agent_info,
                "container_id": ident(self.container.id),
            },
        }

    def cancel_timers(self) -> None:
        """Stop the registration and shutdown timers."""
        for timer in (self.registration_timer, self.shutdown_timer):
            if timer is not None:
                timer.cancel()
        self.registration_timer = self.shutdown_timer = None
