"""ACCEPT: offer checks, then LAUNCH and LAUNCH_GROUP operations, validated as the master does.

Problems found here are reported as status updates, because the ACCEPT itself is answered 202:
invalid offers give every task ``TASK_LOST`` (``TASK_DROPPED`` for PARTITION_AWARE frameworks)
with ``REASON_INVALID_OFFERS``; an invalid task gives ``TASK_ERROR`` with ``REASON_TASK_INVALID``.
Missing required protobuf fields make the whole call a 400, as JSON-to-protobuf conversion would.
Resources left unused count as declined, with the call's filter.
"""

from __future__ import annotations

import logging

from tests.mesos_standin.http import Response
from tests.mesos_standin.master import Master
from tests.mesos_standin.protocol import Json, ident, value_of
from tests.mesos_standin.records import Framework, Task
from tests.mesos_standin.resources import Resources

log = logging.getLogger(__name__)

MIN_EXECUTOR_CPUS = 0.01
MIN_EXECUTOR_MEM = 32.0


def accept(master: Master, framework: Framework, body: Json) -> Response:
    """Handle ``accept``: use the offers once, apply operations in order, refuse the rest."""
    operations = body.get("operations", [])
    missing = _missing_fields(body.get("offer_ids"), operations)
    if missing is not None:
        return Response.text(400, f"Failed to convert JSON into Call protobuf: {missing}")
    offer_ids = [str(value_of(o)) for o in body["offer_ids"]]
    error, agent_id, pool = _take_offers(master, framework, offer_ids)
    if error is not None or agent_id is None:
        for task in _all_tasks(operations):
            master.master_update(
                framework,
                str(value_of(task["task_id"])),
                "TASK_DROPPED",
                "REASON_INVALID_OFFERS",
                f"Task launched with invalid offers: {error}",
            )
        return Response(202)
    launcher = _Launch(master, framework, agent_id, pool)
    for operation in operations:
        kind = operation.get("type")
        if kind == "LAUNCH":
            for task in operation.get("launch", {}).get("task_infos", []):
                launcher.launch([task], task.get("executor"), group=False)
        elif kind == "LAUNCH_GROUP":
            group = operation.get("launch_group", {})
            launcher.launch(group.get("task_group", {}).get("tasks", []), group.get("executor"), group=True)
        else:
            log.warning("operation %s ignored: the stand-in only supports LAUNCH and LAUNCH_GROUP", kind)
    master.allocator.refuse(framework.id, agent_id, launcher.pool, body.get("filters"))
    return Response(202)


def _missing_fields(offer_ids: object, operations: object) -> str | None:
    """What the protobuf parser would reject: required fields absent or of the wrong shape."""
    if not isinstance(offer_ids, list) or not all(value_of(o) is not None for o in offer_ids):
        return "'accept.offer_ids' must be a list of OfferID"
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        return "'accept.operations' must be a list of Offer.Operation"
    for task in _all_tasks(operations):
        if not isinstance(task, dict):
            return "TaskInfo must be an object"
        for field in ("task_id", "agent_id"):
            if value_of(task.get(field)) is None:
                return f"TaskInfo.{field} is required"
        if not isinstance(task.get("name"), str):
            return "TaskInfo.name is required"
        executor = task.get("executor")
        if executor is not None and (not isinstance(executor, dict) or value_of(executor.get("executor_id")) is None):
            return "ExecutorInfo.executor_id is required"
    return None


def _all_tasks(operations: list[Json]) -> list[Json]:
    tasks: list[Json] = []
    for operation in operations:
        if operation.get("type") == "LAUNCH":
            tasks += operation.get("launch", {}).get("task_infos", [])
        elif operation.get("type") == "LAUNCH_GROUP":
            tasks += operation.get("launch_group", {}).get("task_group", {}).get("tasks", [])
    return tasks


def _take_offers(
    master: Master, framework: Framework, offer_ids: list[str]
) -> tuple[str | None, str | None, Resources]:
    """Remove the offers (each usable once) and pool their resources; an error if any is invalid."""
    error: str | None = None
    agents: set[str] = set()
    pool = Resources()
    if not offer_ids:
        error = "No offers specified"
    if len(set(offer_ids)) != len(offer_ids):
        error = "Duplicate offer ids"
    for offer_id in dict.fromkeys(offer_ids):
        offer = master.offers.get(offer_id)
        if offer is None or offer.framework_id != framework.id:
            error = error or f"Offer {offer_id} is no longer valid"
            continue
        master.remove_offer(offer, rescind=False)
        agents.add(offer.agent_id)
        pool = pool + offer.resources
    if len(agents) > 1:
        error = error or "Aggregated offers must belong to one single agent"
    if error is not None:
        return error, None, Resources()
    return None, agents.pop(), pool


class _Launch:
    """Validates and launches tasks of one ACCEPT, charging them to the offered pool."""

    def __init__(self, master: Master, framework: Framework, agent_id: str, pool: Resources) -> None:
        self.master = master
        self.framework = framework
        self.agent_id = agent_id
        self.pool = pool
        self.agent = master.agents[agent_id].agent
        self.seen: set[str] = set()

    def launch(self, tasks: list[Json], executor: Json | None, group: bool) -> None:
        """Launch tasks (a group is all or nothing); invalid ones get TASK_ERROR."""
        if executor is not None:
            executor = {**executor, "framework_id": ident(self.framework.id)}
        error = self._executor_error(executor, group)
        if error is not None:
            self._invalid(tasks, error)
            return
        new_executor = executor is not None and self._executor_info(executor) is None
        charge = Resources.from_json(executor.get("resources", [])) if executor and new_executor else Resources()
        valid: list[Json] = []
        for task in tasks:
            problem = self._task_error(task, group)
            if problem is None:
                needed = charge + Resources.from_json(task["resources"])
                if self.pool.contains(needed):
                    charge = needed
                else:
                    problem = "Task uses more resources than available"
            if problem is not None and group:
                self._invalid(tasks, problem)
                return
            if problem is not None:
                self._invalid([task], problem)
                continue
            valid.append(task)
            self.seen.add(str(value_of(task["task_id"])))  # later duplicates in this ACCEPT are invalid
        if not valid:
            return
        self.pool = self.pool - charge
        self._record(valid, executor, new_executor)
        self.agent.launch(self.framework.info_with_id(), executor, valid, group)

    def _executor_info(self, executor: Json) -> Json | None:
        eid = str(value_of(executor["executor_id"]))
        return self.framework.executors.get(self.agent_id, {}).get(eid) or self.agent.running_executor_info(
            self.framework.id, eid
        )

    def _executor_error(self, executor: Json | None, group: bool) -> str | None:
        if executor is None:
            return "LAUNCH_GROUP needs 'launch_group.executor'" if group else None
        kind = executor.get("type", "CUSTOM")
        if kind == "DEFAULT":
            return "The stand-in cannot run the DEFAULT executor; use a CUSTOM executor"
        if kind != "CUSTOM" or not isinstance(executor.get("command"), dict):
            return "A CUSTOM executor needs 'command'"
        try:
            resources = Resources.from_json(executor.get("resources", []))
        except ValueError as error:
            return f"Invalid executor resources: {error}"
        low = resources.scalars.get("cpus", 0) < MIN_EXECUTOR_CPUS or resources.scalars.get("mem", 0) < MIN_EXECUTOR_MEM
        if group and low:
            return f"Executor resources must include at least {MIN_EXECUTOR_CPUS} cpus and {MIN_EXECUTOR_MEM} mem"
        running = self._executor_info(executor)
        if running is not None and running != executor:
            return "ExecutorInfo is not compatible with the ExecutorInfo of the running executor"
        return None

    def _task_error(self, task: Json, group: bool) -> str | None:
        task_id = str(value_of(task["task_id"]))
        if task_id in self.framework.tasks or task_id in self.seen:
            return f"Task has duplicate ID: {task_id}"
        if task_id in self.framework.unreachable_tasks:
            return f"Task reuses the ID of an unreachable task: {task_id}"
        if value_of(task["agent_id"]) != self.agent_id:
            return "Task uses an agent ID different from the offer's"
        if not _parses(task) or not task["resources"]:
            return "Task uses no resources or invalid resources"
        if group and "executor" in task:
            return "'TaskInfo.executor' must not be set in a task group"
        if not group and (("command" in task) == ("executor" in task)):
            return "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
        return None

    def _invalid(self, tasks: list[Json], message: str) -> None:
        for task in tasks:
            task_id = str(value_of(task.get("task_id")))
            self.seen.add(task_id)
            self.master.master_update(self.framework, task_id, "TASK_ERROR", "REASON_TASK_INVALID", message)

    def _record(self, tasks: list[Json], executor: Json | None, executor_is_new: bool) -> None:
        eid = str(value_of(executor["executor_id"])) if executor is not None else None
        if executor is not None and executor_is_new:
            self.framework.executors.setdefault(self.agent_id, {})[str(eid)] = executor
        for task in tasks:
            task_id = str(value_of(task["task_id"]))
            resources = Resources.from_json(task["resources"])
            self.framework.tasks[task_id] = Task(task, self.framework.id, self.agent_id, eid, resources)


def _parses(task: Json) -> bool:
    try:
        Resources.from_json(task.get("resources"))
    except (ValueError, TypeError, AttributeError):
        return False
    return True
