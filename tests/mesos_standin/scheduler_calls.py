"""Scheduler calls after SUBSCRIBE, for a subscribed framework with a valid stream id.

Each handler returns the HTTP answer: ``202 Accepted`` when the call is well formed (problems
found later, such as invalid offers or tasks, become status updates), 400 otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tests.mesos_standin import operations, reconciliation
from tests.mesos_standin.http import Response
from tests.mesos_standin.master import Master
from tests.mesos_standin.protocol import TERMINAL_STATES, Json, is_uuid, value_of
from tests.mesos_standin.records import Framework

log = logging.getLogger(__name__)

ACCEPTED = Response(202)


def dispatch(master: Master, framework: Framework, call: Json) -> Response:
    """Run one call."""
    kind = str(call["type"])
    body = call.get(kind.lower(), {})
    if not isinstance(body, dict):
        return Response.text(400, f"Failed to convert JSON into Call protobuf: '{kind.lower()}' must be an object")
    handler = HANDLERS.get(kind)
    if handler is None:  # inverse offers, operations, REQUEST: accepted and ignored
        log.info("%s from %s accepted and ignored by the stand-in", kind, framework.id)
        return ACCEPTED
    return handler(master, framework, body)


def _decline(master: Master, framework: Framework, body: Json) -> Response:
    for offer_id in body.get("offer_ids", []):
        offer = master.offers.get(str(value_of(offer_id)))
        if offer is not None and offer.framework_id == framework.id:
            master.remove_offer(offer, rescind=False)
            master.allocator.refuse(framework.id, offer.agent_id, offer.resources, body.get("filters"))
    return ACCEPTED


def _revive(master: Master, framework: Framework, body: Json) -> Response:
    framework.suppressed = False
    master.allocator.revive(framework.id)
    master.allocate_soon()
    return ACCEPTED


def _suppress(master: Master, framework: Framework, body: Json) -> Response:
    framework.suppressed = True
    return ACCEPTED


def _kill(master: Master, framework: Framework, body: Json) -> Response:
    task_id = value_of(body.get("task_id"))
    if task_id is None:
        return Response.text(400, "Failed to convert JSON into Call protobuf: 'kill.task_id' is required")
    task = framework.tasks.get(task_id)
    if task is None:  # an unknown task is answered like an explicit reconciliation
        reconciliation.explicit(master, framework, [{"task_id": {"value": task_id}, **_agent(body)}])
        return ACCEPTED
    slot = master.agents.get(task.agent_id)
    if slot is not None and slot.active:
        slot.agent.kill_task(framework.id, task_id, body.get("kill_policy"))
    return ACCEPTED


def _agent(body: Json) -> Json:
    return {"agent_id": body["agent_id"]} if "agent_id" in body else {}


def _acknowledge(master: Master, framework: Framework, body: Json) -> Response:
    agent_id, task_id, uuid = value_of(body.get("agent_id")), value_of(body.get("task_id")), body.get("uuid")
    if agent_id is None or task_id is None or uuid is None:
        return Response.text(
            400, "Failed to convert JSON into Call protobuf: acknowledge needs agent_id, task_id, uuid"
        )
    if not is_uuid(uuid):
        return Response.text(400, "Failed to validate scheduler::Call: Not a valid UUID")
    slot = master.agents.get(agent_id)
    if slot is not None and slot.active:
        slot.agent.acknowledge(framework.id, task_id, str(uuid))
    task = framework.tasks.get(task_id)
    if task is not None and task.update_uuid == uuid and task.update_state in TERMINAL_STATES:
        master.complete_task(framework, task)
    return ACCEPTED


def _reconcile(master: Master, framework: Framework, body: Json) -> Response:
    tasks = body.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and value_of(t.get("task_id")) for t in tasks):
        return Response.text(400, "Failed to convert JSON into Call protobuf: bad 'reconcile.tasks'")
    named = [str(value_of(t.get("task_id"))) for t in tasks]
    framework.reconciliations.append({"subscription": framework.subscriptions, "tasks": named})
    if tasks:
        reconciliation.explicit(master, framework, tasks)
    else:
        reconciliation.implicit(master, framework)
    return ACCEPTED


def _message(master: Master, framework: Framework, body: Json) -> Response:
    agent_id, executor_id, data = value_of(body.get("agent_id")), value_of(body.get("executor_id")), body.get("data")
    if agent_id is None or executor_id is None or not isinstance(data, str):
        return Response.text(
            400, "Failed to convert JSON into Call protobuf: message needs agent_id, executor_id, data"
        )
    slot = master.agents.get(agent_id)
    if slot is not None and slot.active and not master.faults.drop_message():
        slot.agent.message(framework.id, executor_id, data)
    return ACCEPTED


def _teardown(master: Master, framework: Framework, body: Json) -> Response:
    master.remove_framework(framework)
    return ACCEPTED


def _shutdown(master: Master, framework: Framework, body: Json) -> Response:
    agent_id, executor_id = value_of(body.get("agent_id")), value_of(body.get("executor_id"))
    if agent_id is None or executor_id is None:
        return Response.text(400, "Failed to convert JSON into Call protobuf: shutdown needs executor_id, agent_id")
    slot = master.agents.get(agent_id)
    if slot is not None and slot.active:
        slot.agent.shutdown_executor(framework.id, executor_id)
    return ACCEPTED


def _update_framework(master: Master, framework: Framework, body: Json) -> Response:
    info = body.get("framework_info")
    if not isinstance(info, dict) or value_of(info.get("id")) != framework.id:
        return Response.text(400, "Failed to validate scheduler::Call: 'framework_info.id' must match")
    framework.info = {key: value for key, value in info.items() if key != "id"}
    return Response(200)


HANDLERS: dict[str, Callable[[Master, Framework, Json], Response]] = {
    "ACCEPT": operations.accept,
    "DECLINE": _decline,
    "REVIVE": _revive,
    "SUPPRESS": _suppress,
    "KILL": _kill,
    "ACKNOWLEDGE": _acknowledge,
    "RECONCILE": _reconcile,
    "MESSAGE": _message,
    "TEARDOWN": _teardown,
    "SHUTDOWN": _shutdown,
    "UPDATE_FRAMEWORK": _update_framework,
}
