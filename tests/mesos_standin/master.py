"""The Mesos master: framework subscriptions, failover, heartbeats, and what agents report.

Around it: ``scheduler_api`` (HTTP rules of the scheduler endpoint), ``scheduler_calls`` and
``operations`` (calls after SUBSCRIBE), ``offers`` and ``allocator`` (the allocation cycle),
``agent_loss``. The master talks to agents by direct calls (one process).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import uuid

from tests.mesos_standin import offers
from tests.mesos_standin.agent import Agent
from tests.mesos_standin.allocator import Allocator
from tests.mesos_standin.faults import Faults
from tests.mesos_standin.http import EventStream, StreamResponse
from tests.mesos_standin.protocol import VERSION, Json, for_framework, ident, task_status, value_of
from tests.mesos_standin.records import Framework, Offer, Subscription, Task
from tests.mesos_standin.settings import Settings

log = logging.getLogger(__name__)


class AgentSlot:
    """The master's record of an agent: registered, disconnected (dead) or unreachable (removed)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.active = True
        self.registered_time = time.time()
        self.unreachable_time: float | None = None


class Master:
    """One leading master."""

    def __init__(self, settings: Settings, faults: Faults) -> None:
        self.settings = settings
        self.faults = faults
        self.port = settings.port
        self.id = str(uuid.uuid4())
        self.start_time = self.elected_time = time.time()
        self.frameworks: dict[str, Framework] = {}
        self.completed_frameworks: dict[str, Framework] = {}
        self.agents: dict[str, AgentSlot] = {}
        self.offers: dict[str, Offer] = {}
        self.allocator = Allocator()
        self.unavailable_until = 0.0  # monotonic deadline of a simulated recovery (503s)
        self._framework_seq = 0
        self._offer_seq = 0
        self._allocation_timer: asyncio.TimerHandle | None = None
        self._allocation_pending = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic allocation cycle."""
        self._allocation_timer = asyncio.get_running_loop().call_later(self.settings.allocation_interval, self._tick)

    def stop(self) -> None:
        """Stop all timers."""
        if self._allocation_timer is not None:
            self._allocation_timer.cancel()
        for framework in self.frameworks.values():
            if framework.failover_timer is not None:
                framework.failover_timer.cancel()
            if framework.subscription is not None:
                framework.subscription.end()

    def restarted(self, recovery_seconds: float) -> None:
        """A new master process took over: new id, no offers, 503 for ``recovery_seconds``.

        Subscriptions were already dropped with the listener; frameworks and tasks are kept
        (the registry), each framework's failover timer started when its stream broke.
        """
        self.id = str(uuid.uuid4())
        self.elected_time = time.time()
        for offer in list(self.offers.values()):
            self.remove_offer(offer, rescind=False)
        self.unavailable_until = time.monotonic() + recovery_seconds

    def add_agent(self, agent: Agent) -> None:
        """Register an agent."""
        self.agents[agent.id] = AgentSlot(agent)

    def master_info(self) -> Json:
        """``MasterInfo`` as SUBSCRIBED carries it (``ip`` is the IPv4 address as a network-order uint32)."""
        host = self.settings.host
        packed = struct.unpack("=I", socket.inet_aton(host))[0]
        address = {"hostname": host, "ip": host, "port": self.port}
        return {
            "id": self.id,
            "ip": packed,
            "port": self.port,
            "hostname": host,
            "version": VERSION,
            "pid": f"master@{host}:{self.port}",
            "address": address,
        }

    # -- subscriptions ---------------------------------------------------------------------------

    def subscribe(self, info: Json, framework_id: str | None) -> StreamResponse:
        """Answer a valid SUBSCRIBE with a new event stream (or ERROR for a removed framework)."""
        stream_id = str(uuid.uuid4())
        if framework_id is not None and framework_id in self.completed_frameworks:
            return StreamResponse(_removed_error, {"Mesos-Stream-Id": stream_id})
        if framework_id is None:
            framework_id = f"{self.id}-{self._framework_seq:04d}"
            self._framework_seq += 1
            framework = Framework(framework_id, info)
            self.frameworks[framework_id] = framework
        elif framework_id not in self.frameworks:
            # An id the master does not know: it assumes its own failover and recovers the framework.
            framework = Framework(framework_id, info, recovered=True)
            self.frameworks[framework_id] = framework
        else:
            framework = self.frameworks[framework_id]
            framework.reregistered_time = time.time()
        info = {key: value for key, value in info.items() if key != "id"}
        return StreamResponse(
            lambda stream: self._attach(framework, info, stream, stream_id), {"Mesos-Stream-Id": stream_id}
        )

    def _attach(self, framework: Framework, info: Json, stream: EventStream, stream_id: str) -> None:
        previous = framework.subscription
        framework.subscription = None
        if previous is not None:
            previous.end()
            previous.stream.send({"type": "ERROR", "error": {"message": "Framework failed over"}})
            previous.stream.close()
        if framework.failover_timer is not None:
            framework.failover_timer.cancel()
            framework.failover_timer = None
        framework.info = info
        for offer in list(framework.offers.values()):
            self.remove_offer(offer, rescind=False)
        subscription = Subscription(stream, stream_id)
        framework.subscription = subscription
        framework.subscriptions += 1
        stream.on_close(lambda: self._stream_closed(framework, subscription))
        subscribed = {
            "framework_id": ident(framework.id),
            "heartbeat_interval_seconds": self.settings.heartbeat_interval,
            "master_info": self.master_info(),
        }
        stream.send({"type": "SUBSCRIBED", "subscribed": subscribed})
        stream.send({"type": "HEARTBEAT"})
        subscription.holding = self.faults.silenced()
        self._schedule_heartbeat(framework, subscription)
        self.allocate_soon()

    def _schedule_heartbeat(self, framework: Framework, subscription: Subscription) -> None:
        loop = asyncio.get_running_loop()
        subscription.heartbeat = loop.call_later(
            self.settings.heartbeat_interval, self._heartbeat, framework, subscription
        )

    def _heartbeat(self, framework: Framework, subscription: Subscription) -> None:
        if framework.subscription is not subscription:
            return
        # A stalled or silenced master says nothing; heartbeats are dropped, not held back.
        if not self.faults.heartbeats_stalled() and not subscription.holding:
            subscription.stream.send({"type": "HEARTBEAT"})
        self._schedule_heartbeat(framework, subscription)

    def _stream_closed(self, framework: Framework, subscription: Subscription) -> None:
        """The scheduler's connection broke: disconnected, offers recovered, failover timer running."""
        subscription.end()
        if framework.subscription is not subscription:
            return
        framework.subscription = None
        framework.unregistered_time = time.time()
        for offer in list(framework.offers.values()):
            self.remove_offer(offer, rescind=False)
        if framework.id in self.frameworks:
            timeout = framework.failover_timeout
            log.info("framework %s disconnected; removed in %.3g s unless it fails over", framework.id, timeout)
            framework.failover_timer = asyncio.get_running_loop().call_later(timeout, self.remove_framework, framework)

    def remove_framework(self, framework: Framework) -> None:
        """TEARDOWN or failover timeout: shut down its executors, kill its tasks, forget it for good."""
        if framework.failover_timer is not None:
            framework.failover_timer.cancel()
            framework.failover_timer = None
        subscription, framework.subscription = framework.subscription, None
        if subscription is not None:
            subscription.end()
            subscription.stream.close()
        for offer in list(framework.offers.values()):
            self.remove_offer(offer, rescind=False)
        for slot in self.agents.values():
            slot.agent.remove_framework(framework.id)
        for task in list(framework.tasks.values()) + list(framework.unreachable_tasks.values()):
            if not task.is_terminal():
                task.state = "TASK_KILLED"
            framework.completed_tasks.append(task)
        framework.tasks.clear()
        framework.unreachable_tasks.clear()
        framework.executors.clear()
        framework.unregistered_time = time.time()
        self.allocator.revive(framework.id)
        self.frameworks.pop(framework.id, None)
        self.completed_frameworks[framework.id] = framework
        log.info("framework %s removed", framework.id)

    # -- offers ----------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._allocate_now()
        self._allocation_timer = asyncio.get_running_loop().call_later(self.settings.allocation_interval, self._tick)

    def allocate_soon(self) -> None:
        """Run an allocation right after the current event (subscriptions and revives trigger one)."""
        if not self._allocation_pending:
            self._allocation_pending = True
            asyncio.get_running_loop().call_soon(self._allocate_now)

    def _allocate_now(self) -> None:
        self._allocation_pending = False
        offers.allocate(self)

    def next_offer_id(self) -> str:
        """A fresh offer id, ``<master id>-O<n>``."""
        self._offer_seq += 1
        return f"{self.id}-O{self._offer_seq - 1}"

    def remove_offer(self, offer: Offer, rescind: bool) -> None:
        """Take an offer back (its resources return to the pool); RESCIND tells the framework."""
        self.offers.pop(offer.id, None)
        framework = self.frameworks.get(offer.framework_id)
        if framework is not None:
            framework.offers.pop(offer.id, None)
            if rescind:
                framework.send({"type": "RESCIND", "rescind": {"offer_id": ident(offer.id)}})

    # -- what agents report (MasterLink) ---------------------------------------------------------

    def forward_status_update(self, agent_id: str, framework_id: str, status: Json, latest_state: str) -> None:
        """An agent forwards a reliable update: bookkeeping, then UPDATE to the scheduler if connected."""
        framework = self.frameworks.get(framework_id)
        if framework is None:
            return
        task = framework.tasks.get(str(value_of(status.get("task_id"))))
        if task is not None:
            task.state = latest_state
            task.update_uuid = status.get("uuid")
            task.update_state = str(status.get("state"))
            if not any(s.get("uuid") == task.update_uuid for s in task.statuses):
                shown: Json = {k: status[k] for k in ("state", "timestamp", "uuid", "healthy", "labels") if k in status}
                task.statuses.append(shown)
        framework.send({"type": "UPDATE", "update": {"status": status}})

    def executor_message(self, agent_id: str, framework_id: str, executor_id: str, data: str) -> None:
        """Relay an executor's framework message (best effort; the drop fault applies)."""
        framework = self.frameworks.get(framework_id)
        if framework is None or self.faults.drop_message():
            return
        message = {"agent_id": ident(agent_id), "executor_id": ident(executor_id), "data": data}
        framework.send({"type": "MESSAGE", "message": message})

    def executor_exited(self, agent_id: str, framework_id: str, executor_id: str, status: int, command: bool) -> None:
        """An executor ended: free its resources; FAILURE for custom executors."""
        framework = self.frameworks.get(framework_id)
        if framework is None:
            return
        framework.executors.get(agent_id, {}).pop(executor_id, None)
        if not command:
            failure = {"agent_id": ident(agent_id), "executor_id": ident(executor_id), "status": status}
            framework.send({"type": "FAILURE", "failure": failure})

    def master_update(
        self, framework: Framework, task_id: str, state: str, reason: str, message: str, agent_id: str | None = None
    ) -> None:
        """An update generated by the master: no uuid, never retried, not to be acknowledged."""
        shown = for_framework(state, framework.partition_aware)
        status = task_status(task_id, shown, source="SOURCE_MASTER", reason=reason, message=message, agent_id=agent_id)
        framework.send({"type": "UPDATE", "update": {"status": status}})

    def complete_task(self, framework: Framework, task: Task) -> None:
        """Move a task to the framework's completed tasks."""
        framework.tasks.pop(task.id, None)
        framework.unreachable_tasks.pop(task.id, None)
        framework.completed_tasks.append(task)


def _removed_error(stream: EventStream) -> None:
    stream.send({"type": "ERROR", "error": {"message": "Framework has been removed"}})
    stream.close()
