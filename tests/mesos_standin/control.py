"""A small client for a running stand-in: fault hooks, introspection, and Mesos's own GET endpoints.

Uses only the standard library, one short connection per request, so it works from any thread
of a test while pymesos drivers hold their own connections.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from tests.support.timeouts import scaled

TIMEOUT = 10.0  # base seconds for one request, stretched by the suite's timeout scale


class ControlError(Exception):
    """The stand-in answered a control request with an error status."""


class Control:
    """Talks to the master at ``host:port``."""

    def __init__(self, master: str) -> None:
        self.master = master
        host, _, port = master.rpartition(":")
        self._host, self._port = host, int(port)

    def _request(self, method: str, path: str, params: Mapping[str, object] | None = None) -> Any:
        query = "?" + urlencode({k: v for k, v in (params or {}).items() if v is not None}) if params else ""
        connection = http.client.HTTPConnection(self._host, self._port, timeout=scaled(TIMEOUT))
        try:
            connection.request(method, path + query, headers={"Connection": "close"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status >= 300:
            raise ControlError(f"{method} {path}{query}: {response.status} {body.decode(errors='replace')}")
        return json.loads(body) if body else None

    # -- Mesos endpoints ---------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """``GET /version``."""
        result: dict[str, Any] = self._request("GET", "/version")
        return result

    def state(self) -> dict[str, Any]:
        """``GET /master/state``."""
        result: dict[str, Any] = self._request("GET", "/master/state")
        return result

    def framework(self, framework_id: str) -> dict[str, Any]:
        """One framework's entry in ``/master/state`` (active or completed); ``ControlError`` if unknown."""
        state = self.state()
        for framework in state["frameworks"] + state["completed_frameworks"]:
            if framework["id"] == framework_id:
                return dict(framework)
        raise ControlError(f"framework {framework_id} is not in /master/state")

    # -- introspection -----------------------------------------------------------------------------

    def containers(self) -> list[dict[str, Any]]:
        """Live executor containers: ids, pid (= process group), sandbox, phase, tasks."""
        result: list[dict[str, Any]] = self._request("GET", "/standin/containers")
        return result

    def agents(self) -> list[dict[str, Any]]:
        """Agents: id, index, executor endpoint, alive."""
        result: list[dict[str, Any]] = self._request("GET", "/standin/agents")
        return result

    def faults(self) -> dict[str, Any]:
        """Active faults and the count of dropped framework messages."""
        result: dict[str, Any] = self._request("GET", "/standin/faults")
        return result

    # -- faults ------------------------------------------------------------------------------------

    def kill_agent(self, agent: str) -> None:
        """Kill an agent (id, index or ``agentN``): its executors die, then it is lost (unreachable)."""
        self._request("POST", "/standin/kill-agent", {"agent": agent})

    def kill_executor(self, framework_id: str, executor_id: str, agent: str | None = None) -> None:
        """SIGKILL an executor's process group, as if it crashed."""
        params = {"framework": framework_id, "executor": executor_id, "agent": agent}
        self._request("POST", "/standin/kill-executor", params)

    def drop_scheduler_connection(self, framework_id: str | None = None) -> list[str]:
        """Break the subscription stream of one framework (or all); returns the ids dropped."""
        result = self._request("POST", "/standin/drop-scheduler-connection", {"framework": framework_id})
        return list(result["frameworks"])

    def stall_heartbeats(self, seconds: float, silence: bool = False) -> None:
        """No HEARTBEAT for ``seconds``; with ``silence`` every other event is held back too."""
        self._request("POST", "/standin/stall-heartbeats", {"seconds": seconds, "silence": int(silence)})

    def restart_master(self, downtime: float = 0.0, recovery: float = 0.0) -> None:
        """Restart the master: connections drop, the port refuses for ``downtime`` s, then 503 for ``recovery`` s."""
        self._request("POST", "/standin/restart-master", {"downtime": downtime, "recovery": recovery})

    def subscribe_503(self, count: int) -> None:
        """Answer the next ``count`` SUBSCRIBE calls with 503."""
        self._request("POST", "/standin/subscribe-503", {"count": count})

    def drop_messages(self, fraction: float) -> None:
        """Lose this fraction of framework messages, both directions."""
        self._request("POST", "/standin/drop-messages", {"fraction": fraction})

    def reset(self) -> None:
        """Clear every fault."""
        self._request("POST", "/standin/reset")
