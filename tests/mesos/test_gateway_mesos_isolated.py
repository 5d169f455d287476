"""Isolated functions on the mesos executor: one Mesos task per call, with its own resources, killed after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.devbroker import LocalBroker
from tests.mesos.mesos_gateway import mesos_gateway
from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.probe import Probe


def task_in_state(control: Control, task_id: str) -> dict[str, Any] | None:
    """The task as ``/master/state`` shows it (live or completed)."""
    for framework in control.state()["frameworks"]:
        for task in framework["tasks"] + framework["completed_tasks"]:
            if task["id"] == task_id:
                return dict(task)
    return None


def test_an_isolated_call_runs_in_its_own_task_which_ends_with_the_call_even_on_timeout(
    broker: LocalBroker, logs: Path, standin: StandIn, control: Control, tmp_path: Path, probe: Probe
) -> None:
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles"
    ).start()
    try:
        pool = {c["executor_id"] for c in control.containers()}
        assert len(pool) == 2

        reply = probe.request("devices/i1/mesos_isolated", {"seconds": 0}, timeout=20)
        own = reply["result"]["executor_id"]
        assert own.startswith("roost-") and own not in pool, reply
        task = task_in_state(control, own)
        assert task is not None and task["resources"]["cpus"] == 0.5 and task["resources"]["mem"] == 64, task
        # The task is killed once the call has its answer; the warm pool is untouched.
        wait_for(lambda: {c["executor_id"] for c in control.containers()} == pool, 15, "the isolated task to end")
        wait_for(lambda: (task_in_state(control, own) or {}).get("state") == "TASK_KILLED", 10, "TASK_KILLED")

        reply = probe.request("devices/i1/mesos_isolated", {"seconds": 30}, timeout=20)
        assert reply["error"]["code"] == "timeout", reply
        wait_for(lambda: {c["executor_id"] for c in control.containers()} == pool, 15, "the timed-out task to end")
        log = gateway.log()
        assert log.count("launching isolated task") == 2 and log.count("isolated task roost-") >= 2
        assert probe.request("devices/i1/mesos_again", {"seconds": 0})["result"] in pool  # never on an isolated one
    finally:
        assert gateway.stop() == 0
    wait_for(lambda: not control.containers(), 15, "every executor to exit")
