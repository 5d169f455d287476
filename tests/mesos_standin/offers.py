"""The allocation cycle: turning agents' free resources into offers, and the Offer JSON.

Which framework gets an agent's resources is the allocator's decision (``allocator``); this module
computes what is free, enforces one outstanding offer per agent, and sends one OFFERS event per
framework per cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.mesos_standin.protocol import Json, ident
from tests.mesos_standin.records import Offer
from tests.mesos_standin.resources import Resources

if TYPE_CHECKING:
    from tests.mesos_standin.master import Master


def available(master: Master, agent_id: str) -> Resources:
    """An agent's resources not used by tasks or executors and not offered."""
    slot = master.agents[agent_id]
    free = slot.agent.resources
    for framework in master.frameworks.values():
        free = free - framework.used_on(agent_id)
    for offer in master.offers.values():
        if offer.agent_id == agent_id:
            free = free - offer.resources
    return free


def allocate(master: Master) -> None:
    """One allocation cycle: at most one outstanding offer per agent, all its free resources."""
    total_cpus = sum(slot.agent.resources.scalars.get("cpus", 0.0) for slot in master.agents.values()) or 1.0
    shares = {
        fid: sum(fw.used_on(a).scalars.get("cpus", 0.0) for a in master.agents) / total_cpus
        for fid, fw in master.frameworks.items()
    }
    batches: dict[str, list[Offer]] = {}
    for agent_id, slot in sorted(master.agents.items()):
        if not slot.active or any(offer.agent_id == agent_id for offer in master.offers.values()):
            continue
        free = available(master, agent_id)
        if not free.allocatable():
            continue
        framework = master.allocator.choose(agent_id, free, master.frameworks.values(), shares)
        if framework is None:
            continue
        offer = Offer(master.next_offer_id(), framework.id, agent_id, free)
        master.offers[offer.id] = framework.offers[offer.id] = offer
        shares[framework.id] = shares.get(framework.id, 0.0) + free.scalars.get("cpus", 0.0) / total_cpus
        batches.setdefault(framework.id, []).append(offer)
    for fid, made in batches.items():
        event = {"type": "OFFERS", "offers": {"offers": [offer_json(master, offer) for offer in made]}}
        master.frameworks[fid].send(event)


def offer_json(master: Master, offer: Offer) -> Json:
    """An Offer in the v1 JSON shape."""
    agent = master.agents[offer.agent_id].agent
    address = {"hostname": master.settings.host, "ip": master.settings.host, "port": agent.port}
    return {
        "id": ident(offer.id),
        "framework_id": ident(offer.framework_id),
        "agent_id": ident(offer.agent_id),
        "hostname": master.settings.host,
        "url": {"scheme": "http", "address": address, "path": "/slave(1)"},
        "resources": offer.resources.to_json(),
        "attributes": agent.attributes(),
        "executor_ids": [ident(eid) for eid in agent.executor_ids(offer.framework_id)],
    }
