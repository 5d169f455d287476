"""What the operations endpoint and the metrics read of a running gateway: a read-only view.

:class:`GatewayView` is the part of :class:`~gateway.app.Gateway` they use, so neither imports
the app, and :func:`readiness_problems` is the one answer to "is it ready" that both give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from gateway.config import Settings
from gateway.executors.base import Executor
from gateway.ops.stats import DispatchStats, ReloadStats
from gateway.registry import Registry
from gateway.transport.base import Transport


class GatewayView(Protocol):
    """A serving gateway as operators see it (attributes read, never written)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def ready(self) -> asyncio.Event: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def executors(self) -> Mapping[str, Executor]: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def stats(self) -> DispatchStats: ...

    @property
    def reloads(self) -> ReloadStats: ...


def readiness_problems(gateway: GatewayView) -> list[str]:
    """Why the gateway is not ready to answer requests; empty when it is."""
    problems = []
    if not gateway.ready.is_set():
        problems.append("not serving: starting up or shutting down")
    if not gateway.transport.link.connected:
        problems.append("not connected to the broker")
    for name, executor in gateway.executors.items():
        problem = executor.problem
        if problem is not None:
            problems.append(f"executor {name}: {problem}")
    return problems
