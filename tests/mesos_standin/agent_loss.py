"""Losing an agent (MESOS_API.md 6.4): disconnection first, then unreachable after a timeout.

On the disconnection, offers on the agent are rescinded and tasks of non-checkpointing frameworks
are lost at once (``REASON_AGENT_DISCONNECTED``). When the agent is marked unreachable, every
remaining task becomes ``TASK_UNREACHABLE`` (``TASK_LOST`` for frameworks that are not
PARTITION_AWARE) with ``REASON_AGENT_REMOVED``, and every framework gets ``FAILURE`` naming the
agent. The stand-in never lets an agent come back.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tests.mesos_standin.protocol import for_framework, ident, task_status

if TYPE_CHECKING:
    from tests.mesos_standin.master import Master


def agent_disconnected(master: Master, agent_id: str) -> None:
    """An agent's connection broke: rescind its offers, lose non-checkpointing tasks, start the clock."""
    slot = master.agents[agent_id]
    slot.active = False
    for offer in [o for o in master.offers.values() if o.agent_id == agent_id]:
        master.remove_offer(offer, rescind=True)
    for framework in master.frameworks.values():
        if framework.checkpoint:
            continue
        for task in [t for t in framework.tasks.values() if t.agent_id == agent_id]:
            if not task.is_terminal():
                master.master_update(
                    framework, task.id, "TASK_LOST", "REASON_AGENT_DISCONNECTED", "Agent disconnected", agent_id
                )
                task.state = "TASK_LOST"
            master.complete_task(framework, task)
        framework.executors.pop(agent_id, None)
    timeout = master.settings.agent_unreachable_timeout
    asyncio.get_running_loop().call_later(timeout, _agent_unreachable, master, agent_id)


def _agent_unreachable(master: Master, agent_id: str) -> None:
    """Health checks gave up: tasks become unreachable (or lost), every framework hears FAILURE."""
    slot = master.agents.get(agent_id)
    if slot is None or slot.active:
        return
    slot.unreachable_time = now = time.time()
    for framework in master.frameworks.values():
        for task in [t for t in framework.tasks.values() if t.agent_id == agent_id]:
            state = for_framework("TASK_UNREACHABLE", framework.partition_aware)
            status = task_status(
                task.id,
                state,
                source="SOURCE_MASTER",
                reason="REASON_AGENT_REMOVED",
                message="Agent is unreachable",
                agent_id=agent_id,
            )
            status["unreachable_time"] = {"nanoseconds": int(now * 1e9)}
            framework.send({"type": "UPDATE", "update": {"status": status}})
            task.state, task.unreachable_time = state, now
            framework.tasks.pop(task.id)
            if framework.partition_aware:
                framework.unreachable_tasks[task.id] = task
            else:
                framework.completed_tasks.append(task)
        framework.executors.pop(agent_id, None)
        framework.send({"type": "FAILURE", "failure": {"agent_id": ident(agent_id)}})
