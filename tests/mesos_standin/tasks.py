"""Builders for the v1 JSON a scheduler sends in ACCEPT (TaskInfo, ExecutorInfo), for tests."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any


def scalar(name: str, value: float) -> dict[str, Any]:
    """A scalar Resource."""
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def executor_info(
    executor_id: str, bundle_url: str, script: str = "bundle/standin_executor.py", **extra: Any
) -> dict[str, Any]:
    """A CUSTOM executor fetched from ``bundle_url`` and run with this interpreter (by absolute path)."""
    command = {
        "value": f"{sys.executable} {script}",
        "uris": [{"value": bundle_url, "extract": True}],
        "environment": {"variables": [{"name": "ROOST_TEST", "value": "1"}]},
    }
    return {
        "executor_id": {"value": executor_id},
        "name": "standin test executor",
        "command": command,
        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
        **extra,
    }


def task_info(
    task_id: str,
    offer: dict[str, Any],
    *,
    executor: dict[str, Any] | None = None,
    command: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    cpus: float = 0.1,
    mem: float = 32,
) -> dict[str, Any]:
    """A TaskInfo on the offer's agent, with an executor or a command."""
    task: dict[str, Any] = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": offer["agent_id"],
        "resources": [scalar("cpus", cpus), scalar("mem", mem)],
    }
    if executor is not None:
        task["executor"] = executor
    if command is not None:
        task["command"] = command
    if data is not None:
        task["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    return task


def decode(data: str) -> dict[str, Any]:
    """A base64 JSON ``data`` field."""
    decoded: dict[str, Any] = json.loads(base64.b64decode(data))
    return decoded
