"""Start gateways with the mesos executor against a stand-in, for the tests of ``gateway.executors.mesos``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.mesos_standin.containers import BASIC_PATH
from tests.mesos_standin.harness import StandIn
from tests.support.gateway_process import GatewayProcess

FUNCTIONS = ("functions.examples", "tests.integration.funcs", "tests.mesos.gateway_funcs")

FAST = {
    "heartbeat": "0.2",  # channel heartbeats, so a silent executor is noticed in about a second
    "channel_timeout": "1.5",
    "start_timeout": "30",
    "orphan_timeout": "10",
    "master_heartbeat": "0.5",  # the stand-in's heartbeat interval in tests (harness.FAST)
    "missed_heartbeats": "4",
    "resubscribe_pause": "0.5",
}
"""Mesos settings that keep the tests quick; any can be overridden."""


def agent_python() -> str:
    """The interpreter executors run: ``python3.X`` found on the agents' bare PATH (as in production), else
    the base interpreter of this venv by path (never the venv's own: ``-I -S`` keeps its packages out anyway)."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return name if shutil.which(name, path=BASIC_PATH) else str(getattr(sys, "_base_executable", sys.executable))


def mesos_gateway(
    broker: str,
    log_dir: Path,
    standin: StandIn | str,
    state_file: Path,
    bundle_dir: Path,
    env: dict[str, str] | None = None,
    **mesos: str,
) -> GatewayProcess:
    """A (not yet started) gateway running every call on the stand-in's agents (or a master at ``HOST:PORT``)."""
    settings = {**FAST, "python": agent_python(), "state_file": str(state_file), "bundle_dir": str(bundle_dir)}
    settings.update(mesos)
    env = {**(env or {}), **{f"ROOST_MESOS__{name.upper()}": value for name, value in settings.items()}}
    functions = [arg for module in FUNCTIONS for arg in ("--functions", module)]
    master = standin if isinstance(standin, str) else standin.master
    args = ["--executor", "mesos", "--mesos-master", master, "--transport", "fast", *functions]
    return GatewayProcess(broker, log_dir, *args, env=env)


def local_gateway(broker: str, log_dir: Path) -> GatewayProcess:
    """The same functions on the local executor, to compare replies with."""
    functions = [arg for module in FUNCTIONS for arg in ("--functions", module)]
    return GatewayProcess(broker, log_dir, "--executor", "local", "--transport", "fast", *functions)


def live_tasks(framework: dict[str, object]) -> set[str]:
    """Ids of a framework's tasks in ``/master/state`` that have not ended."""
    tasks = framework.get("tasks", [])
    assert isinstance(tasks, list)
    ended = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE"}
    return {str(task["id"]) for task in tasks if task.get("state") not in ended}
