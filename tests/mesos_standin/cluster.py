"""A master and N agents in one process, on one event loop; the master port's routing.

Master port: ``GET /version``, ``GET /master/state`` (also ``/state``, ``.json`` variants),
``POST /api/v1/scheduler`` (also ``/master/api/v1/scheduler``), ``/standin/...`` (faults).
Each agent listens on its own free port for ``/api/v1/executor``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from tests.mesos_standin import fault_api, scheduler_api, snapshot
from tests.mesos_standin.agent import Agent
from tests.mesos_standin.faults import Faults
from tests.mesos_standin.http import HttpServer, Request, Response, StreamResponse
from tests.mesos_standin.master import Master
from tests.mesos_standin.settings import Settings

log = logging.getLogger(__name__)

STATE_PATHS = ("/master/state", "/state", "/master/state.json", "/state.json")


class Cluster:
    """Everything one ``python -m tests.mesos_standin`` runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.master = Master(settings, Faults(settings.seed))
        self.agents = [Agent(i, f"{self.master.id}-S{i}", settings, self.master) for i in range(settings.agents)]
        self.server = HttpServer("master", self.handle)
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start agents, then the master's listener and allocation cycle."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        for agent in self.agents:
            await agent.start()
            self.master.add_agent(agent)
        await self.server.start(self.settings.host, self.settings.port)
        self.master.port = self.server.port
        self.master.start()

    async def stop(self) -> None:
        """Close every connection and destroy every executor's process group."""
        self.master.stop()
        await self.server.stop()
        for agent in self.agents:
            await agent.stop()

    def handle(self, request: Request) -> Response | StreamResponse:
        """Route a request on the master port."""
        path = request.path
        if path in scheduler_api.PATHS:
            return scheduler_api.handle(self.master, request)
        if path == "/version":
            return Response.json(snapshot.version())
        if path in STATE_PATHS:
            return Response.json(snapshot.master_state(self.master))
        if path == "/health":
            return Response(200)
        if path.startswith("/standin/"):
            return fault_api.handle(self, request)
        return Response.text(404, f"{path} is not served by the stand-in master")

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def restart_master(self, downtime: float, recovery: float) -> None:
        """Fault: the master process dies and a new one starts on the same port, keeping the registry."""
        await asyncio.sleep(0)  # let the fault endpoint's answer go out first
        await self.server.stop()
        self.master.restarted(recovery)
        if downtime > 0:
            await asyncio.sleep(downtime)
        await self.server.start(self.settings.host, self.master.port)
        log.info("master restarted as %s", self.master.id)

    def ready_line(self) -> str:
        """The JSON line printed on stdout once everything listens (harnesses read the ports from it)."""
        agents = [{"id": a.id, "endpoint": f"{self.settings.host}:{a.port}"} for a in self.agents]
        return json.dumps(
            {
                "master": f"{self.settings.host}:{self.master.port}",
                "agents": agents,
                "work_dir": str(self.settings.work_dir),
            }
        )


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then clean up every executor."""
    cluster = Cluster(settings)
    await cluster.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(cluster.ready_line(), flush=True)
    sys.stdout.flush()
    await stop.wait()
    await cluster.stop()
