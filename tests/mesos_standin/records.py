"""What the master remembers: frameworks, their subscriptions, tasks and offers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.mesos_standin.http import EventStream
from tests.mesos_standin.protocol import TERMINAL_STATES, Json, ident, partition_aware, value_of
from tests.mesos_standin.resources import Resources

MAX_COMPLETED_TASKS = 1000
"""Like the master's ``--max_completed_tasks_per_framework``."""

MAX_RECONCILIATIONS = 1000
"""RECONCILE calls a framework's record keeps (the oldest are dropped)."""


@dataclass
class Offer:
    """An outstanding offer: resources of one agent set aside for one framework."""

    id: str
    framework_id: str
    agent_id: str
    resources: Resources


@dataclass
class Task:
    """The master's view of a launched task."""

    info: Json
    framework_id: str
    agent_id: str
    executor_id: str | None  # None for command tasks
    resources: Resources
    state: str = "TASK_STAGING"
    statuses: list[Json] = field(default_factory=list)
    update_uuid: str | None = None  # uuid and state of the last update forwarded by the agent
    update_state: str | None = None
    unreachable_time: float | None = None

    @property
    def id(self) -> str:
        """The task id string."""
        return str(value_of(self.info.get("task_id")))

    def is_terminal(self) -> bool:
        """True once the master has seen a terminal state (its resources are free again)."""
        return self.state in TERMINAL_STATES

    def to_state(self) -> Json:
        """The task as ``/master/state`` shows it."""
        shown: Json = {
            "id": self.id,
            "name": self.info.get("name", ""),
            "framework_id": self.framework_id,
            "executor_id": self.executor_id or "",
            "slave_id": self.agent_id,
            "state": self.state,
            "resources": self.resources.to_state(),
            "role": "*",
            "statuses": self.statuses,
        }
        for key in ("labels", "discovery", "container"):
            if key in self.info:
                shown[key] = self.info[key]
        return shown


class Subscription:
    """One scheduler's open event stream: stream id, heartbeats, and events held by a stall fault."""

    def __init__(self, stream: EventStream, stream_id: str) -> None:
        self.stream = stream
        self.stream_id = stream_id
        self.heartbeat: asyncio.TimerHandle | None = None
        self.held: list[Json] = []
        self.holding = False

    def send(self, event: Json) -> None:
        """Deliver an event now, or keep it while the stream is held silent."""
        if self.holding:
            self.held.append(event)
        else:
            self.stream.send(event)

    def release(self) -> None:
        """Stop holding and deliver what was held, in order."""
        self.holding = False
        held, self.held = self.held, []
        for event in held:
            self.stream.send(event)

    def end(self) -> None:
        """Stop the heartbeat timer (the stream itself is closed by the caller)."""
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None


@dataclass
class Framework:
    """A registered framework, connected or waiting out its failover timeout."""

    id: str
    info: Json
    registered_time: float = field(default_factory=time.time)
    reregistered_time: float | None = None
    unregistered_time: float = 0.0
    subscription: Subscription | None = None
    failover_timer: asyncio.TimerHandle | None = None
    suppressed: bool = False
    recovered: bool = False
    tasks: dict[str, Task] = field(default_factory=dict)
    unreachable_tasks: dict[str, Task] = field(default_factory=dict)
    completed_tasks: deque[Task] = field(default_factory=lambda: deque(maxlen=MAX_COMPLETED_TASKS))
    offers: dict[str, Offer] = field(default_factory=dict)
    executors: dict[str, dict[str, Json]] = field(default_factory=dict)  # agent id -> executor id -> info
    # Stand-in records for tests (not Mesos state): SUBSCRIBE calls attached, and every RECONCILE call as
    # {"subscription": the subscription it came on (1 = the first), "tasks": the task ids named, [] = implicit}.
    subscriptions: int = 0
    reconciliations: deque[Json] = field(default_factory=lambda: deque(maxlen=MAX_RECONCILIATIONS))

    @property
    def connected(self) -> bool:
        """True while a subscription stream is open."""
        return self.subscription is not None

    @property
    def partition_aware(self) -> bool:
        """True when the framework declared the PARTITION_AWARE capability."""
        return partition_aware(self.info)

    @property
    def checkpoint(self) -> bool:
        """``FrameworkInfo.checkpoint``."""
        return bool(self.info.get("checkpoint", False))

    @property
    def failover_timeout(self) -> float:
        """``FrameworkInfo.failover_timeout`` in seconds (Mesos default 0)."""
        value: Any = self.info.get("failover_timeout", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    def send(self, event: Json) -> bool:
        """Send an event if connected; False when it was dropped because nobody listens."""
        if self.subscription is None:
            return False
        self.subscription.send(event)
        return True

    def info_with_id(self) -> Json:
        """``FrameworkInfo`` carrying this framework's id (what executors are told)."""
        return {**self.info, "id": ident(self.id)}

    def used_on(self, agent_id: str) -> Resources:
        """Resources held by live tasks and executors on one agent."""
        used = Resources()
        for task in self.tasks.values():
            if task.agent_id == agent_id and not task.is_terminal():
                used = used + task.resources
        for info in self.executors.get(agent_id, {}).values():
            used = used + Resources.from_json(info.get("resources", []))
        return used
