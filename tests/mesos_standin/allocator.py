"""Who gets an agent's free resources: offer filters and a fair choice between frameworks.

Like Mesos's hierarchical allocator in the cases the gateway meets: a framework that declined
resources (or left part of an offer unused) is not offered the same or fewer resources on that
agent until the filter expires, it REVIVEs, or more resources free up there; suppressed
frameworks get nothing; among the rest the one with the smallest share goes first (a crude DRF).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from tests.mesos_standin.protocol import Json
from tests.mesos_standin.records import Framework
from tests.mesos_standin.resources import Resources

DEFAULT_REFUSE_SECONDS = 5.0
MAX_REFUSE_SECONDS = 365 * 24 * 3600.0


def refuse_seconds(filters: object) -> float:
    """``Filters.refuse_seconds`` with Mesos's rules: default 5 s, negative means default, capped at a year."""
    value = filters.get("refuse_seconds") if isinstance(filters, dict) else None
    if not isinstance(value, int | float) or value < 0:
        return DEFAULT_REFUSE_SECONDS
    return min(float(value), MAX_REFUSE_SECONDS)


class Allocator:
    """Offer filters per framework and agent, and the choice of framework for an agent's resources."""

    def __init__(self) -> None:
        self._filters: dict[tuple[str, str], list[tuple[Resources, float]]] = {}

    def refuse(self, framework_id: str, agent_id: str, resources: Resources, filters: object) -> None:
        """Remember that the framework refused ``resources`` on the agent (decline or unused part)."""
        seconds = refuse_seconds(filters)
        if seconds <= 0 or resources.is_empty():
            return
        self._filters.setdefault((framework_id, agent_id), []).append((resources, time.monotonic() + seconds))

    def revive(self, framework_id: str) -> None:
        """Drop every filter of the framework (REVIVE, re-subscription, removal)."""
        for key in [key for key in self._filters if key[0] == framework_id]:
            del self._filters[key]

    def is_filtered(self, framework_id: str, agent_id: str, available: Resources) -> bool:
        """True when an unexpired filter covers everything the agent could offer now."""
        now = time.monotonic()
        live = [(res, until) for res, until in self._filters.get((framework_id, agent_id), []) if until > now]
        if live:
            self._filters[(framework_id, agent_id)] = live
        else:
            self._filters.pop((framework_id, agent_id), None)
        return any(refused.contains(available) for refused, _ in live)

    def choose(
        self, agent_id: str, available: Resources, frameworks: Iterable[Framework], shares: dict[str, float]
    ) -> Framework | None:
        """The framework that gets ``available`` on the agent, or None when nobody may have it."""
        eligible = [
            fw
            for fw in frameworks
            if fw.connected and not fw.suppressed and not self.is_filtered(fw.id, agent_id, available)
        ]
        if not eligible:
            return None
        return min(eligible, key=lambda fw: (shares.get(fw.id, 0.0), fw.registered_time))

    def describe(self, framework_id: str) -> list[Json]:
        """Active filters of a framework (for ``/master/state`` debugging)."""
        now = time.monotonic()
        return [
            {"agent_id": agent_id, "resources": res.to_json(), "expires_in": round(until - now, 3)}
            for (fid, agent_id), entries in self._filters.items()
            if fid == framework_id
            for res, until in entries
            if until > now
        ]
