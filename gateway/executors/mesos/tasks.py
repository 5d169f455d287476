"""The Mesos JSON the gateway sends: framework info, and the pool task that runs one warm executor.

Every executor runs one long-lived *pool task* whose resources cover its
workers, so Mesos accounts for them. Ids carry the gateway's instance (a fresh
random id per gateway run): ``roost-<instance>-<n>`` for both the task and its
executor. A gateway that re-registers after a restart recognises tasks of an
earlier instance by that id and kills them, so no executor is left behind.

What an executor needs to know travels in its environment: ``ROOST_EXECUTOR``
holds JSON (:class:`ExecutorConfig`), including the token that authenticates
its channel connection. Mesos shows executor environments in its state
endpoints; the token only admits an executor to this gateway's channel.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

Json = dict[str, Any]

CONFIG_VARIABLE = "ROOST_EXECUTOR"
EXECUTOR_CPUS = 0.1  # the executor process itself, on top of the pool task (Mesos warns below 0.01 / 32 MB)
EXECUTOR_MEM = 32.0
_ID = re.compile(r"^roost-([0-9a-f]+)-(\d+)$")


@dataclass(frozen=True)
class ExecutorConfig:
    """What the executor program reads from ``ROOST_EXECUTOR``."""

    channel: str  # HOST:PORT of the gateway's channel
    token: str
    functions: tuple[str, ...]
    workers: int
    max_result_bytes: int
    heartbeat: float
    channel_timeout: float
    orphan_timeout: float  # exit when the gateway has been unreachable this long
    log_level: str = "INFO"

    def to_json(self) -> str:
        """The variable's value."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ExecutorConfig:
        """Parse the variable (``ValueError``/``TypeError``/``KeyError`` when it is not ours)."""
        data = json.loads(text)
        data["functions"] = tuple(data["functions"])
        return cls(**data)


def task_id(instance: str, number: int) -> str:
    """The id of this gateway instance's ``number``-th pool task (and of its executor)."""
    return f"roost-{instance}-{number}"


def instance_of(task: str) -> str | None:
    """The gateway instance that launched a pool task, or ``None`` for a task not named by us."""
    match = _ID.match(task)
    return match.group(1) if match else None


def framework_info(
    name: str, user: str, role: str, failover_timeout: float, framework_id: str | None, principal: str | None = None
) -> Json:
    """``FrameworkInfo``: checkpointing, partition-aware, with an explicit failover timeout.

    With authentication on, Mesos requires ``principal`` to be the authenticated one (pymesos sends
    the credentials themselves as HTTP Basic auth).
    """
    info: Json = {
        "user": user,
        "name": name,
        "role": role,
        "failover_timeout": failover_timeout,  # pymesos would send 100 s if absent
        "checkpoint": True,
        "capabilities": [{"type": "PARTITION_AWARE"}],
    }
    if framework_id:
        info["id"] = {"value": framework_id}
    if principal:
        info["principal"] = principal
    return info


def scalar(name: str, value: float) -> Json:
    """A scalar ``Resource``."""
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def offered(offer: Json, name: str) -> float:
    """The amount of scalar resource ``name`` in an offer."""
    total = 0.0
    for resource in offer.get("resources", []):
        if resource.get("name") == name and resource.get("type") == "SCALAR":
            total += float(resource.get("scalar", {}).get("value", 0.0))
    return total


def fits(offer: Json, cpus: float, mem: float) -> bool:
    """Whether the offer holds a pool task of ``cpus``/``mem`` plus its executor."""
    return offered(offer, "cpus") >= cpus + EXECUTOR_CPUS - 1e-9 and offered(offer, "mem") >= mem + EXECUTOR_MEM - 1e-9


def pool_task(
    ident: str,
    offer: Json,
    framework_id: str,
    bundle_uri: str,
    python: str,
    config: ExecutorConfig,
    cpus: float,
    mem: float,
) -> Json:
    """``TaskInfo`` of a pool task on the offer's agent, with its custom executor fetched from ``bundle_uri``."""
    command = {
        # -I -S: nothing from the agent's Python environment; boot.py adds the bundle's own paths.
        "value": f'exec {python} -I -S "$MESOS_SANDBOX/roost/boot.py"',
        "shell": True,
        "uris": [{"value": bundle_uri, "extract": True, "cache": False}],
        "environment": {"variables": [{"name": CONFIG_VARIABLE, "value": config.to_json()}]},
    }
    executor = {
        "executor_id": {"value": ident},
        "framework_id": {"value": framework_id},
        "type": "CUSTOM",
        "name": "roost warm executor",
        "command": command,
        "resources": [scalar("cpus", EXECUTOR_CPUS), scalar("mem", EXECUTOR_MEM)],
    }
    return {
        "name": f"roost pool {ident}",
        "task_id": {"value": ident},
        "agent_id": offer["agent_id"],
        "resources": [scalar("cpus", cpus), scalar("mem", mem)],
        "executor": executor,
    }
