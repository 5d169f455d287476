"""``GET /master/state`` and ``GET /version``: the master's state in the shape real Mesos uses.

Field names and nesting follow the master's ``/state`` endpoint (``readonly_handler.cpp``):
resources as flat objects (``{"cpus": 1.0, "mem": 128.0, "ports": "[31000-31000]"}``), ids as
plain strings, tasks with ``slave_id`` and ``statuses``; only the fields a test or the gateway
could care about are filled. Fields named ``standin_*`` are the stand-in's own records, not Mesos's:
a framework's active offer filters, whether it suppressed offers, how many SUBSCRIBE calls it made
(``standin_subscriptions``, 1 for a framework that never re-subscribed), and its RECONCILE calls in
order (``standin_reconciliations``: the subscription each came on, the task ids named, ``[]`` for an
implicit one).
"""

from __future__ import annotations

from tests.mesos_standin.master import AgentSlot, Master
from tests.mesos_standin.protocol import VERSION, Json, value_of
from tests.mesos_standin.records import Framework, Offer
from tests.mesos_standin.resources import Resources

BUILD_TIME = 1577836800.0  # a fixed, obviously fake build time


def version() -> Json:
    """The ``/version`` body (pymesos reads ``version`` and converts each dotted part to int)."""
    return {
        "version": VERSION,
        "build_date": "2020-01-01 00:00:00",
        "build_time": BUILD_TIME,
        "build_user": "roost-standin",
        "git_tag": VERSION,
    }


def master_state(master: Master) -> Json:
    """The whole ``/master/state`` document."""
    host, port = master.settings.host, master.port
    pid = f"master@{host}:{port}"
    agents = list(master.agents.values())
    return {
        **version(),
        "start_time": master.start_time,
        "elected_time": master.elected_time,
        "id": master.id,
        "pid": pid,
        "hostname": host,
        "activated_slaves": sum(1 for s in agents if s.active),
        "deactivated_slaves": sum(1 for s in agents if not s.active and s.unreachable_time is None),
        "unreachable_slaves": sum(1 for s in agents if s.unreachable_time is not None),
        "leader": pid,
        "leader_info": master.master_info(),
        "flags": _flags(master),
        "slaves": [_agent(master, slot) for slot in agents if slot.unreachable_time is None],
        "recovered_slaves": [],
        "frameworks": [_framework(master, fw) for fw in master.frameworks.values()],
        "completed_frameworks": [_framework(master, fw) for fw in master.completed_frameworks.values()],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    }


def _flags(master: Master) -> Json:
    settings = master.settings
    return {
        "allocation_interval": f"{settings.allocation_interval:g}secs",
        "agent_ping_timeout": f"{settings.agent_unreachable_timeout:g}secs",
        "max_agent_ping_timeouts": "1",
        "work_dir": str(settings.work_dir),
        "authenticate_frameworks": "false",
    }


def _agent(master: Master, slot: AgentSlot) -> Json:
    agent = slot.agent
    used = Resources()
    for framework in master.frameworks.values():
        used = used + framework.used_on(agent.id)
    offered = Resources()
    for offer in master.offers.values():
        if offer.agent_id == agent.id:
            offered = offered + offer.resources
    return {
        "id": agent.id,
        "pid": agent.pid,
        "hostname": master.settings.host,
        "port": agent.port,
        "attributes": {a["name"]: a["text"]["value"] for a in agent.attributes()},
        "registered_time": slot.registered_time,
        "resources": agent.resources.to_state(),
        "used_resources": used.to_state(),
        "offered_resources": offered.to_state(),
        "reserved_resources": {},
        "unreserved_resources": agent.resources.to_state(),
        "active": slot.active,
        "version": VERSION,
        "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT", "TASK_NO_EXECUTOR"],
    }


def _framework(master: Master, fw: Framework) -> Json:
    used = Resources()
    for agent_id in master.agents:
        used = used + fw.used_on(agent_id)
    offered = Resources()
    for offer in fw.offers.values():
        offered = offered + offer.resources
    shown: Json = {
        "id": fw.id,
        "name": fw.info.get("name", ""),
        "used_resources": used.to_state(),
        "offered_resources": offered.to_state(),
        "capabilities": [c.get("type") for c in fw.info.get("capabilities", []) if isinstance(c, dict)],
        "hostname": fw.info.get("hostname", ""),
        "webui_url": fw.info.get("webui_url", ""),
        "active": fw.connected,
        "connected": fw.connected,
        "recovered": fw.recovered,
        "user": fw.info.get("user", ""),
        "failover_timeout": fw.failover_timeout,
        "checkpoint": fw.checkpoint,
        "registered_time": fw.registered_time,
        "unregistered_time": fw.unregistered_time if not fw.connected else 0.0,
        "resources": (used + offered).to_state(),
        "role": fw.info.get("role", "*"),
        "tasks": [task.to_state() for task in fw.tasks.values()],
        "unreachable_tasks": [task.to_state() for task in fw.unreachable_tasks.values()],
        "completed_tasks": [task.to_state() for task in fw.completed_tasks],
        "offers": [_offer(offer) for offer in fw.offers.values()],
        "executors": [_executor(info, agent_id) for agent_id, infos in fw.executors.items() for info in infos.values()],
        "standin_filters": master.allocator.describe(fw.id),
        "standin_suppressed": fw.suppressed,
        "standin_subscriptions": fw.subscriptions,
        "standin_reconciliations": list(fw.reconciliations),
    }
    if fw.reregistered_time is not None:
        shown["reregistered_time"] = fw.reregistered_time
    if "principal" in fw.info:
        shown["principal"] = fw.info["principal"]
    if "labels" in fw.info:
        shown["labels"] = fw.info["labels"]
    return shown


def _offer(offer: Offer) -> Json:
    return {
        "id": offer.id,
        "framework_id": offer.framework_id,
        "slave_id": offer.agent_id,
        "resources": offer.resources.to_state(),
    }


def _executor(info: Json, agent_id: str) -> Json:
    shown = {key: value for key, value in info.items() if key not in ("executor_id", "framework_id", "resources")}
    shown["executor_id"] = value_of(info.get("executor_id"))
    shown["framework_id"] = value_of(info.get("framework_id"))
    shown["resources"] = Resources.from_json(info.get("resources", [])).to_state()
    shown["slave_id"] = agent_id
    return shown
