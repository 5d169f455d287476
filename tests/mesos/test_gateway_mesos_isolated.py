"""Isolated functions on the mesos executor: one Mesos task per call, with its own resources, killed after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli.devbroker import LocalBroker
from tests.mesos.mesos_gateway import executor_ids, mesos_gateway, mesos_metrics, the_framework
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.probe import Probe

pytestmark = pytest.mark.slow  # every test here runs a gateway on the Mesos stand-in


def tasks_in_state(standin: StandIn) -> dict[str, dict[str, Any]]:
    """Every task of the one framework as ``/master/state`` shows it (live or completed), by id."""
    framework = the_framework(standin)
    return {task["id"]: task for task in framework["tasks"] + framework["completed_tasks"]}


def test_an_isolated_call_runs_in_its_own_task_which_ends_with_the_call_even_on_timeout(
    broker: LocalBroker, logs: Path, standin: StandIn, tmp_path: Path, probe: Probe, metrics_port: int
) -> None:
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
        metrics_port=metrics_port,
    ).start()  # fmt: skip
    try:
        pool = executor_ids(standin)
        assert len(pool) == 2

        reply = probe.request("devices/i1/mesos_isolated", {"seconds": 0}, timeout=20)
        own = reply["result"]["executor_id"]
        assert own.startswith("roost-") and own not in pool, reply
        task = tasks_in_state(standin)[own]
        assert task["resources"]["cpus"] == 0.5 and task["resources"]["mem"] == 64, task
        # The task is killed once the call has its answer; the warm pool is untouched.
        wait_for(lambda: executor_ids(standin) == pool, 15, "the isolated task to end")
        wait_for(lambda: tasks_in_state(standin)[own]["state"] == "TASK_KILLED", 10, "TASK_KILLED")

        reply = probe.request("devices/i1/mesos_isolated", {"seconds": 30}, timeout=20)
        assert reply["error"]["code"] == "timeout", reply
        wait_for(lambda: executor_ids(standin) == pool, 15, "the timed-out task to end")

        # Two isolated tasks in all, one per call, each with the function's resources, both killed.
        def isolated_tasks() -> dict[str, dict[str, Any]] | None:
            isolated = {ident: task for ident, task in tasks_in_state(standin).items() if ident not in pool}
            return isolated if all(task["state"] == "TASK_KILLED" for task in isolated.values()) else None

        isolated = wait_for(isolated_tasks, 10, "the isolated tasks killed")
        assert len(isolated) == 2 and own in isolated
        assert all((t["resources"]["cpus"], t["resources"]["mem"]) == (0.5, 64) for t in isolated.values())
        assert mesos_metrics(metrics_port)["isolated_tasks_launched_total"] == 2
        assert probe.request("devices/i1/mesos_again", {"seconds": 0})["result"] in pool  # never on an isolated one
    finally:
        assert gateway.stop() == 0
    wait_for(lambda: not standin.control.containers(), 15, "every executor to exit")
