"""``POST /api/v1/executor`` on an agent: request rules, call validation, dispatch.

Rules as the real agent enforces them (MESOS_API.md 5.1 and 5.3): POST only (405), JSON content
type (400 missing, 415 other), ``Accept`` allowing JSON on SUBSCRIBE (406), ``framework_id`` and
``executor_id`` on every call, 400 for an unknown framework or executor, 403 for calls from an
executor that has not subscribed, 202 for valid UPDATE/MESSAGE/HEARTBEAT.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tests.mesos_standin.call_rules import accepts_json, check_request
from tests.mesos_standin.executor_run import Phase
from tests.mesos_standin.http import EventStream, Request, Response, StreamResponse
from tests.mesos_standin.protocol import Json, ident, is_uuid, value_of

if TYPE_CHECKING:
    from tests.mesos_standin.agent import Agent
    from tests.mesos_standin.executor_run import ExecutorRun

log = logging.getLogger(__name__)

PATHS = ("/api/v1/executor", "/slave(1)/api/v1/executor")


def handle(agent: Agent, request: Request) -> Response | StreamResponse:
    """Serve one request to an agent."""
    if request.path not in PATHS:
        return Response.text(404, "only /api/v1/executor is served by stand-in agents")
    refusal = check_request(request)
    if refusal is not None:
        return refusal
    try:
        call = request.json()
    except ValueError as error:
        return Response.text(400, f"Failed to parse body into JSON: {error}")
    if not isinstance(call, dict) or not isinstance(call.get("type"), str):
        return Response.text(400, "Failed to validate executor::Call: Expecting 'type' to be present")
    fid, eid = value_of(call.get("framework_id")), value_of(call.get("executor_id"))
    if fid is None or eid is None:
        return Response.text(400, "Failed to validate executor::Call: Expecting 'framework_id' and 'executor_id'")
    run = agent.find_run(fid, eid)
    if run is None or not agent.alive:
        return Response.text(400, f"Executor '{eid}' of framework '{fid}' is not known to this agent")
    kind = call["type"]
    if kind == "SUBSCRIBE":
        if not accepts_json(request):
            return Response.text(406, "Expecting 'Accept' to allow 'application/json'")
        return StreamResponse(lambda stream: _attach(agent, run, call, stream))
    if not run.subscribed:
        return Response.text(403, "Executor is not subscribed")
    if kind == "UPDATE":
        update = call.get("update")
        status = update.get("status") if isinstance(update, dict) else None
        if not isinstance(status, dict):
            return Response.text(400, "Expecting 'update.status' to be present")
        problem = status_error(run, status)
        if problem is not None:
            return Response.text(400, f"Failed to validate executor::Call: {problem}")
        on_update(agent, run, status)
        return Response(202)
    if kind == "MESSAGE":
        message = call.get("message")
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, str):
            return Response.text(400, "Expecting 'message.data' to be present")
        agent.master.executor_message(agent.id, run.framework_id, run.executor_id, data)
        return Response(202)
    if kind == "HEARTBEAT":
        return Response(202)
    return Response.text(400, f"Unknown executor call type {kind!r}")


def _attach(agent: Agent, run: ExecutorRun, call: Json, stream: EventStream) -> None:
    previous = run.stream
    run.stream = stream
    if previous is not None:
        previous.close()  # a new subscription replaces the old connection, as on a real agent
    on_subscribed(agent, run, call)


def status_error(run: ExecutorRun, status: Json) -> str | None:
    """Why an executor's TaskStatus is invalid (MESOS_API.md 5.3), or None."""
    if value_of(status.get("task_id")) is None:
        return "'status.task_id' must be present"
    if not is_uuid(status.get("uuid")):
        return "'status.uuid' must be a base64 16-byte UUID"
    if status.get("source") != "SOURCE_EXECUTOR":
        return "Received Call from executor with invalid source"
    if status.get("state") == "TASK_STAGING" or not isinstance(status.get("state"), str):
        return "Received TASK_STAGING from executor"
    executor_id = status.get("executor_id")
    if executor_id is not None and value_of(executor_id) != run.executor_id:
        return "ExecutorID in Call does not match ExecutorID in TaskStatus"
    return None


def on_subscribed(agent: Agent, run: ExecutorRun, call: Json) -> None:
    """An executor (re)subscribed: stop its registration clock, replay its unacknowledged updates, launch."""
    if run.registration_timer is not None:
        run.registration_timer.cancel()
        run.registration_timer = None
    subscribe = call.get("subscribe", {})
    for update in subscribe.get("unacknowledged_updates", []) if isinstance(subscribe, dict) else []:
        status = update.get("status") if isinstance(update, dict) else None
        if isinstance(status, dict) and status_error(run, status) is None:
            on_update(agent, run, status, acknowledge=False)
    run.send(run.subscribed_event(agent.info()))
    if run.phase is Phase.TERMINATING:
        run.send({"type": "SHUTDOWN"})
    else:
        run.deliver_queued()


def on_update(agent: Agent, run: ExecutorRun, status: Json, acknowledge: bool = True) -> None:
    """A validated UPDATE from an executor: into the status update manager, then ACKNOWLEDGED."""
    status["agent_id"] = ident(agent.id)
    status.setdefault("executor_id", ident(run.executor_id))
    task = agent.tasks.get((run.framework_id, str(value_of(status["task_id"]))))
    if task is not None and task.is_terminal():
        log.warning("update %s after terminal state of task %s ignored", status["uuid"], task.id)
        return
    agent.accept_update(run.framework_id, status)
    if acknowledge:
        acked = {"task_id": status["task_id"], "uuid": status["uuid"]}
        run.send({"type": "ACKNOWLEDGED", "acknowledged": acked})
