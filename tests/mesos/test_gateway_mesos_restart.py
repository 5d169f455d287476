"""The mesos executor across gateway restarts and driver failures: same framework, nothing left behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.devbroker import LocalBroker
from tests.mesos.mesos_gateway import (
    executor_ids,
    live_tasks,
    mesos_gateway,
    mesos_metrics,
    reconciliations_on,
    the_framework,
)
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.probe import Probe
from tests.support.timeouts import scaled, scaled_text

pytestmark = pytest.mark.slow  # every test here runs a gateway on the Mesos stand-in


def served_by(probe: Probe) -> str:
    """The Mesos executor a call ran in."""
    reply = probe.request("devices/r1/whereami")
    assert "result" in reply, reply
    executor: str = reply["result"]["executor_id"]
    return executor


def test_restart_reregisters_with_the_same_framework_and_leaves_no_executor_behind(
    broker: LocalBroker, logs: Path, standin: StandIn, tmp_path: Path, probe: Probe, metrics_port: int
) -> None:
    state, bundles = tmp_path / "framework.json", tmp_path.parent / "mesos-bundles"
    first = mesos_gateway(broker.address, logs, standin, state, bundles, metrics_port=metrics_port).start()
    framework = str(the_framework(standin)["id"])
    assert json.loads(state.read_text()) == {"framework_id": framework}  # saved for the next start
    assert mesos_metrics(metrics_port)["registrations_total"] == 1
    first_executors = executor_ids(standin)
    assert len(first_executors) == 2 and served_by(probe) in first_executors

    first.kill()  # SIGKILL: no chance to kill its tasks; its executors keep running, orphaned
    assert executor_ids(standin) == first_executors

    second = mesos_gateway(broker.address, logs, standin, state, bundles, metrics_port=metrics_port).start()
    # It re-registered: the same framework, subscribed a second time, and no new one.
    counted = mesos_metrics(metrics_port)
    assert counted["registrations_total"] == counted["reregistrations_total"] == 1
    shown = the_framework(standin)
    assert shown["id"] == framework and shown["standin_subscriptions"] == 2
    # The new gateway's reconciliation found the old pool tasks and killed them: only its own executors remain.
    wait_for(lambda: [] in reconciliations_on(standin, 2), 10, "an implicit reconciliation on the new subscription")

    def only_new_executors() -> set[str] | None:
        ids = executor_ids(standin)
        return ids if ids and not ids & first_executors else None

    second_executors = wait_for(only_new_executors, 15, "the old executors to be gone")
    assert len(second_executors) == 2
    assert served_by(probe) in second_executors

    def one_framework() -> dict[str, Any] | None:
        frameworks = standin.control.state()["frameworks"]
        return frameworks[0] if len(frameworks) == 1 and live_tasks(frameworks[0]) == second_executors else None

    shown = wait_for(one_framework, 10, "one framework with only the new pool tasks")
    assert shown["id"] == framework and shown["checkpoint"] and shown["failover_timeout"] == 604800
    assert "PARTITION_AWARE" in shown["capabilities"]

    # A clean stop kills its pool tasks and keeps the framework registered (failover, not teardown).
    assert second.stop() == 0
    wait_for(lambda: not standin.control.containers(), 15, "executors to exit")
    state_now = standin.control.state()
    assert [f["id"] for f in state_now["frameworks"]] == [framework] and not state_now["completed_frameworks"]
    assert not live_tasks(state_now["frameworks"][0])


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_driver_crash_ends_the_gateway_with_a_non_zero_exit_and_a_clear_log_line(
    broker: LocalBroker, logs: Path, tmp_path: Path, how: str
) -> None:
    with StandIn(tmp_path / "work", agents=1) as standin:
        gateway = mesos_gateway(
            broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
            executors="1", give_up_after=scaled_text(1),  # pymesos gives up on an unreachable master after 1 s
        )  # fmt: skip
        gateway.start()
        assert standin.process is not None
        if how == "sigterm":
            standin.process.terminate()
        else:
            standin.process.kill()
        process = gateway.process
        assert process is not None
        try:
            code = process.wait(scaled(20))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the gateway kept running:\n{gateway.log()[-3000:]}") from None
        finally:
            gateway.kill()
    log = gateway.log()
    assert code == 1, log[-3000:]
    assert "CRITICAL gateway.executors.mesos.cluster: the Mesos scheduler driver stopped unexpectedly: " in log
    assert "connect reach deadline" in log  # pymesos's own reason, carried into our line
    assert "CRITICAL roost: exiting: the Mesos scheduler driver stopped unexpectedly" in log
