"""``/standin/...`` endpoints on the master port: inject faults and look inside.

Not part of Mesos. Every fault endpoint is a POST with query parameters and answers JSON;
``tests.mesos_standin.control`` is the client. The GET endpoints expose what ``/master/state``
cannot (executor pids and sandboxes, agent endpoints) so tests can check processes directly.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tests.mesos_standin import agent_loss
from tests.mesos_standin.executor_run import ExecutorRun
from tests.mesos_standin.http import Request, Response

if TYPE_CHECKING:
    from tests.mesos_standin.agent import Agent
    from tests.mesos_standin.cluster import Cluster


class BadParameter(Exception):
    """A missing or malformed query parameter (answered 400)."""


def handle(cluster: Cluster, request: Request) -> Response:
    """Serve one ``/standin/...`` request."""
    name = request.path.removeprefix("/standin/")
    getter = GETTERS.get(name)
    if getter is not None:
        return Response.json(getter(cluster)) if request.method == "GET" else Response.text(405, "GET only")
    action = ACTIONS.get(name)
    if action is None:
        return Response.text(404, f"no stand-in endpoint {request.path}")
    if request.method != "POST":
        return Response.text(405, "POST only")
    try:
        return Response.json({"ok": True, **action(cluster, request.query)})
    except BadParameter as error:
        return Response.text(400, str(error))


def _number(query: dict[str, str], name: str, default: float | None = None) -> float:
    if name not in query:
        if default is None:
            raise BadParameter(f"query parameter {name!r} is required")
        return default
    try:
        return float(query[name])
    except ValueError:
        raise BadParameter(f"query parameter {name!r} must be a number") from None


def _find_agent(cluster: Cluster, query: dict[str, str]) -> Agent:
    wanted = query.get("agent")
    for agent in cluster.agents:
        if wanted in (agent.id, str(agent.index), f"agent{agent.index}"):
            return agent
    raise BadParameter(f"no agent {wanted!r} (give its id, index or 'agentN')")


def _kill_agent(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    agent = _find_agent(cluster, query)
    if not agent.alive:
        raise BadParameter(f"agent {agent.id} is already dead")
    agent.die()
    agent_loss.agent_disconnected(cluster.master, agent.id)
    return {"agent": agent.id}


def _kill_executor(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    framework, executor = query.get("framework"), query.get("executor")
    if framework is None or executor is None:
        raise BadParameter("'framework' and 'executor' are required")
    agents = [_find_agent(cluster, query)] if "agent" in query else cluster.agents
    for agent in agents:
        if agent.kill_executor(framework, executor):
            return {"agent": agent.id}
    raise BadParameter(f"no running executor {executor!r} of framework {framework!r}")


def _drop_scheduler_connection(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    wanted = query.get("framework")
    dropped = []
    for framework in list(cluster.master.frameworks.values()):
        if framework.subscription is not None and wanted in (None, framework.id):
            dropped.append(framework.id)
            framework.subscription.stream.abort()
    return {"frameworks": dropped}


def _stall_heartbeats(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    seconds = _number(query, "seconds")
    faults = cluster.master.faults
    faults.stall_until = time.monotonic() + seconds
    if query.get("silence", "0") not in ("0", "false", ""):
        faults.silence_until = faults.stall_until
        for framework in cluster.master.frameworks.values():
            if framework.subscription is not None:
                framework.subscription.holding = True
        asyncio.get_running_loop().call_later(seconds, _release, cluster)
    return {"seconds": seconds}


def _release(cluster: Cluster) -> None:
    """End of a silence: held events go out on streams that are still open."""
    if cluster.master.faults.silenced():
        return  # a later, longer silence is in force
    for framework in cluster.master.frameworks.values():
        if framework.subscription is not None:
            framework.subscription.release()


def _restart_master(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    downtime, recovery = _number(query, "downtime", 0.0), _number(query, "recovery", 0.0)
    cluster.spawn(cluster.restart_master(downtime, recovery))
    return {"downtime": downtime, "recovery": recovery}


def _subscribe_503(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    count = int(_number(query, "count", 1))
    cluster.master.faults.subscribe_503_remaining = count
    return {"count": count}


def _drop_messages(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    fraction = _number(query, "fraction")
    if not 0.0 <= fraction <= 1.0:
        raise BadParameter("'fraction' must be between 0 and 1")
    cluster.master.faults.drop_fraction = fraction
    return {"fraction": fraction}


def _reset(cluster: Cluster, query: dict[str, str]) -> dict[str, object]:
    cluster.master.faults.reset()
    _release(cluster)
    return {}


def _containers(cluster: Cluster) -> list[dict[str, object]]:
    return [_container(agent, run) for agent in cluster.agents for run in agent.runs.values()]


def _container(agent: Agent, run: ExecutorRun) -> dict[str, object]:
    return {
        "agent_id": agent.id,
        "framework_id": run.framework_id,
        "executor_id": run.executor_id,
        "container_id": run.container.id,
        "pid": run.container.pid,
        "sandbox": str(run.container.sandbox),
        "phase": run.phase.value,
        "subscribed": run.subscribed,
        "command_task": run.is_command,
        "tasks": {task_id: task.state for task_id, task in run.tasks.items()},
    }


def _agents(cluster: Cluster) -> list[dict[str, object]]:
    return [
        {
            "id": agent.id,
            "index": agent.index,
            "endpoint": f"{cluster.settings.host}:{agent.port}",
            "alive": agent.alive,
            "pending_updates": agent.updates.pending(),
        }
        for agent in cluster.agents
    ]


def _faults(cluster: Cluster) -> dict[str, object]:
    faults = cluster.master.faults
    return {
        "subscribe_503_remaining": faults.subscribe_503_remaining,
        "drop_fraction": faults.drop_fraction,
        "heartbeats_stalled": faults.heartbeats_stalled(),
        "silenced": faults.silenced(),
        "dropped_messages": faults.dropped_messages,
    }


ACTIONS = {
    "kill-agent": _kill_agent,
    "kill-executor": _kill_executor,
    "drop-scheduler-connection": _drop_scheduler_connection,
    "stall-heartbeats": _stall_heartbeats,
    "restart-master": _restart_master,
    "subscribe-503": _subscribe_503,
    "drop-messages": _drop_messages,
    "reset": _reset,
}
GETTERS = {"containers": _containers, "agents": _agents, "faults": _faults}
