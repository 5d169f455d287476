"""Task reconciliation (MESOS_API.md 6.5): the master's answers, never from agents.

Every answer is an UPDATE with ``source: SOURCE_MASTER``, ``reason: REASON_RECONCILIATION``, a
message starting with "Reconciliation:", and no uuid (so it is not acknowledged).
"""

from __future__ import annotations

from tests.mesos_standin.master import Master
from tests.mesos_standin.protocol import Json, value_of
from tests.mesos_standin.records import Framework, Task

REASON = "REASON_RECONCILIATION"


def _latest(master: Master, framework: Framework, task: Task) -> None:
    master.master_update(framework, task.id, task.state, REASON, "Reconciliation: Latest task state", task.agent_id)


def implicit(master: Master, framework: Framework) -> None:
    """Latest state of every task the master knows for the framework (live, unacknowledged terminal, unreachable)."""
    for task in list(framework.tasks.values()) + list(framework.unreachable_tasks.values()):
        _latest(master, framework, task)


def explicit(master: Master, framework: Framework, entries: list[Json]) -> None:
    """An answer for each listed task id; unknown ids get GONE/UNREACHABLE/UNKNOWN (LOST if not partition aware)."""
    for entry in entries:
        task_id = str(value_of(entry.get("task_id")))
        task = framework.tasks.get(task_id) or framework.unreachable_tasks.get(task_id)
        if task is not None:
            _latest(master, framework, task)
            continue
        agent_id = value_of(entry.get("agent_id"))
        slot = master.agents.get(agent_id) if agent_id is not None else None
        if slot is None:
            state, message = "TASK_UNKNOWN", "Reconciliation: Task is unknown"
        elif slot.unreachable_time is not None or not slot.active:
            state, message = "TASK_UNREACHABLE", "Reconciliation: Task is unreachable"
        else:
            state, message = "TASK_GONE", "Reconciliation: Task is unknown to the agent"
        master.master_update(framework, task_id, state, REASON, message, agent_id)
