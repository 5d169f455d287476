"""Start gateways with the mesos executor against a stand-in, for the tests of ``gateway.executors.mesos``.

What a test learns about the gateway's Mesos side (the pool grew, tasks were reconciled, the framework
re-registered) it reads from the gateway's metrics (:func:`mesos_metrics`, :func:`metrics_when`) and from
the stand-in's state, not from the gateway's log.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.mesos_standin import harness
from tests.mesos_standin.containers import BASIC_PATH
from tests.mesos_standin.harness import StandIn
from tests.support import ops
from tests.support.gateway_process import GatewayProcess
from tests.support.timeouts import scaled_text

FUNCTIONS = ("functions.examples", "tests.integration.funcs", "tests.mesos.gateway_funcs")

FAST = {
    # The executor's tick (pool heartbeats, the elastic pool, the unreachable check) runs every heartbeat.
    "heartbeat": scaled_text(0.2),
    # No test needs a silent channel noticed quickly (a killed executor's socket closes at once): generous.
    "channel_timeout": scaled_text(4),
    "start_timeout": scaled_text(30),
    "orphan_timeout": scaled_text(10),
    "master_heartbeat": harness.FAST["--heartbeat-interval"],  # the stand-in's heartbeat interval, scaled alike
    "missed_heartbeats": "4",
    "resubscribe_pause": scaled_text(0.5),
}
"""Mesos settings that keep the tests quick, stretched by the suite's timeout scale; any can be overridden."""

METRIC_PREFIX = "roost_executor_"


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
    metrics_port: int | None = None,
    **mesos: str,
) -> GatewayProcess:
    """A (not yet started) gateway running every call on the stand-in's agents (or a master at ``HOST:PORT``).

    With ``metrics_port`` its operations endpoint listens there, for :func:`mesos_metrics`.
    """
    settings = {**FAST, "python": agent_python(), "state_file": str(state_file), "bundle_dir": str(bundle_dir)}
    settings.update(mesos)
    env = {**(env or {}), **{f"ROOST_MESOS__{name.upper()}": value for name, value in settings.items()}}
    if metrics_port is not None:
        env.update({"ROOST_METRICS__ENABLED": "true", "ROOST_METRICS__PORT": str(metrics_port)})
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


def mesos_metrics(port: int) -> dict[str, float]:
    """The Mesos executor's state on the gateway's ``/metrics`` at ``port``, by key.

    Keys are what :meth:`gateway.executors.mesos.cluster.MesosExecutor.gauges` reports (``pool_target``,
    ``executors``, ``unreachable``, ``registrations_total``, ...): ``roost_executor_<key>{executor="mesos"}``.
    """
    samples = ops.scrape(port)
    return {
        name.removeprefix(METRIC_PREFIX): ops.value(samples, name, executor="mesos")
        for name, labels in samples
        if name.startswith(METRIC_PREFIX) and dict(labels) == {"executor": "mesos"}
    }


def metrics_when(
    port: int, condition: Callable[[dict[str, float]], bool], timeout: float, what: str
) -> dict[str, float]:
    """Wait (``timeout`` in base seconds) until :func:`mesos_metrics` satisfies ``condition``; return them.

    A key missing from the metrics counts as "not yet" (the executor is not in the gateway yet).
    """

    def check() -> dict[str, float] | None:
        metrics = mesos_metrics(port)
        try:
            return metrics if condition(metrics) else None
        except KeyError:
            return None

    return ops.wait_for(check, timeout, what)


def executor_ids(standin: StandIn) -> set[str]:
    """Executors with a live container on any of the stand-in's agents."""
    return {str(c["executor_id"]) for c in standin.control.containers()}


def the_framework(standin: StandIn) -> dict[str, Any]:
    """The one framework ``/master/state`` shows; none completed (nothing was torn down)."""
    state = standin.control.state()
    assert len(state["frameworks"]) == 1 and not state["completed_frameworks"], state["frameworks"]
    framework: dict[str, Any] = state["frameworks"][0]
    return framework


def reconciliations_on(standin: StandIn, subscription: int) -> list[list[str]]:
    """The task ids named by each RECONCILE call of the one framework on its ``subscription``-th SUBSCRIBE
    (1 = the first), in order and sorted within each call; ``[]`` is an implicit reconciliation."""
    calls = the_framework(standin)["standin_reconciliations"]
    return [sorted(call["tasks"]) for call in calls if call["subscription"] == subscription]
