"""The mesos executor when Mesos misbehaves: raising callbacks, a silent or restarted master, a reconnect loop.

Each test runs one gateway process against its own stand-in, through mosquitto, and checks what a user
relies on: the framework id never changes, and calls of idempotent functions keep being answered.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.devbroker import LocalBroker
from tests.mesos.mesos_gateway import mesos_gateway
from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe


def framework_ids_in(log: str) -> list[str]:
    """Every framework id the gateway (re-)registered as, in order."""
    return re.findall(r"registered with the Mesos master as framework (\S+)", log)


def only_framework(control: Control) -> str:
    """The id of the one framework the master has; none completed (nothing was torn down)."""
    state = control.state()
    assert len(state["frameworks"]) == 1 and not state["completed_frameworks"], state["frameworks"]
    return str(state["frameworks"][0]["id"])


def log_has(gateway: GatewayProcess, text: str, timeout: float = 15.0) -> None:
    """Wait until the gateway has logged ``text``."""
    wait_for(lambda: text in gateway.log(), timeout, f"the gateway to log {text!r}")


class Caller(threading.Thread):
    """Calls an idempotent function over and over on its own MQTT connection, keeping every reply."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.probe = Probe(port)
        self.replies: list[Any] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.replies.append(self.probe.request("devices/c1/mesos_again", {"seconds": 0.05}, timeout=15))

    def finish(self) -> list[Any]:
        """Stop after the call in progress; every reply."""
        self.stopping.set()
        self.join(20)
        assert not self.is_alive(), "a call got no reply"
        self.probe.close()
        return self.replies


def answered_by_executors(replies: list[Any]) -> None:
    """Every reply is a result from a Mesos executor."""
    assert replies and all(isinstance(r, dict) and "result" in r for r in replies), [
        r for r in replies if "result" not in r
    ][:3]
    assert all(str(r["result"]).startswith("roost-") for r in replies)


@contextlib.contextmanager
def calls_through_a_gateway(
    broker: LocalBroker, logs: Path, standin: StandIn, control: Control, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, Caller, str]]:
    """A gateway on the stand-in and a :class:`Caller` calling through it; its framework id. Both stopped after."""
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles"
    ).start()
    caller = Caller(broker.port)
    try:
        framework = only_framework(control)
        caller.start()
        yield gateway, caller, framework
    finally:
        caller.stopping.set()
        assert gateway.stop() == 0


def test_a_raising_callback_is_logged_and_reconciled_without_touching_the_framework(
    broker: LocalBroker, logs: Path, standin: StandIn, control: Control, tmp_path: Path, probe: Probe
) -> None:
    env = {"ROOST_TEST_RAISE_IN_CALLBACK": "status:4"}  # the first four status updates are lost in the callback
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles", env=env
    ).start()
    try:
        log_has(gateway, "the pymesos callback statusUpdate raised; the framework goes on and reconciles")
        # The lost TASK_RUNNING updates come back through reconciliation.
        wait_for(lambda: gateway.log().count("is running on agent") == 2, 15, "both pool tasks seen running")
        assert "reconciling: " in gateway.log()
        framework = only_framework(control)
        assert framework_ids_in(gateway.log()) == [framework]  # registered once, never again
        reply = probe.request("devices/r1/mesos_again", {"seconds": 0})
        assert str(reply["result"]).startswith("roost-"), reply
        assert gateway.process is not None and gateway.process.poll() is None
        assert "Traceback" in gateway.log()  # the exception is logged in full
        assert "CRITICAL" not in gateway.log()
    finally:
        assert gateway.stop() == 0
    assert only_framework(control) == framework


def test_a_silent_master_gets_a_new_driver_with_the_same_framework_and_no_call_is_lost(
    broker: LocalBroker, logs: Path, standin: StandIn, control: Control, tmp_path: Path
) -> None:
    with calls_through_a_gateway(broker, logs, standin, control, tmp_path) as (gateway, caller, framework):
        control.stall_heartbeats(4, silence=True)  # TCP up, nothing said: pymesos alone would wait forever
        log_has(gateway, "nothing heard from the Mesos master for")
        wait_for(lambda: len(framework_ids_in(gateway.log())) == 2, 20, "the new driver to re-register")
        log = gateway.log()
        assert framework_ids_in(log) == [framework, framework]
        assert "re-registered with the Mesos master as framework " + framework in log
        after = log[log.index("re-registered with") :]
        assert "reconciling: 2 known pool tasks explicitly, then all tasks implicitly" in after
        assert only_framework(control) == framework
        wait_for(lambda: all(not a["pending_updates"] for a in control.agents()), 10, "updates acknowledged")
        wait_for(lambda: len(caller.replies) > 40, 10, "calls after the failover")
        answered_by_executors(caller.finish())


def test_a_restarted_master_and_a_subscribe_loop_keep_the_framework_and_every_call(
    broker: LocalBroker, logs: Path, standin: StandIn, control: Control, tmp_path: Path
) -> None:
    with calls_through_a_gateway(broker, logs, standin, control, tmp_path) as (gateway, caller, framework):
        # Refused for 0.5 s, then SUBSCRIBE answered 503 twelve times: pymesos re-subscribes in a tight loop,
        # which the guard breaks (a new driver, with the same id, after a pause).
        control.subscribe_503(12)
        control.restart_master(downtime=0.5)
        wait_for(lambda: len(framework_ids_in(gateway.log())) >= 2, 25, "re-registration after the restart")
        log = gateway.log()
        assert "disconnections from the Mesos master in" in log and "(a reconnect loop)" in log
        assert set(framework_ids_in(log)) == {framework}
        assert only_framework(control) == framework
        wait_for(lambda: len(caller.replies) > 40, 10, "calls after the restart")
        answered_by_executors(caller.finish())
        assert "CRITICAL" not in gateway.log()
