"""The mesos executor when an agent or an executor dies mid-call: idempotent calls run elsewhere, others are
answered `unavailable`, nobody waits past the timeout, and the pool is made whole again.

What happened to each call is read from its reply and the gateway's counters; the log is checked only for
the lines docs/mesos.md shows an operator."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gateway.cli.devbroker import LocalBroker
from tests.mesos.mesos_gateway import mesos_gateway, metrics_when
from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.probe import Probe, device_of, reply_topic_for
from tests.support.timeouts import scaled

pytestmark = pytest.mark.slow  # every test here runs a gateway on the Mesos stand-in


def send(probe: Probe, topic: str, args: dict[str, Any]) -> tuple[str, bytes]:
    """Publish a request without waiting; its reply topic and correlation data."""
    reply_topic, corr = reply_topic_for(device_of(topic)), uuid.uuid4().bytes
    probe.subscribe(reply_topic)
    probe.publish(topic, msgpack.packb(args), response_topic=reply_topic, correlation_data=corr)
    return reply_topic, corr


@pytest.mark.parametrize("lose", ["agent", "executor"])
def test_a_loss_mid_call_reruns_idempotent_calls_elsewhere_and_fails_the_others_in_time(
    broker: LocalBroker,
    logs: Path,
    standin: StandIn,
    control: Control,
    tmp_path: Path,
    probe: Probe,
    metrics_port: int,
    lose: str,
) -> None:
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
        metrics_port=metrics_port, workers="4", retry_budget="1",
    ).start()  # fmt: skip
    try:
        containers = control.containers()
        agent_of = {c["executor_id"]: c["agent_id"] for c in containers}
        assert len(agent_of) == 2 and len(set(agent_of.values())) == 2
        marks, gate = tmp_path / "marks", tmp_path / "gate"
        marks.mkdir()
        sent = {}
        for kind in ("mesos_again", "mesos_once"):
            for n in range(4):
                mark = marks / f"{kind}-{n}"
                args = {"mark": str(mark), "gate": str(gate), "limit": scaled(30)}
                sent[mark] = send(probe, f"devices/k1/{kind}", args)
        # Every call is running, held at the gate (each executor has four workers and got four calls): none
        # can finish before the loss.
        wait_for(lambda: all(m.exists() and m.read_text() for m in sent), 10, "all eight calls running")
        ran_on = {mark: mark.read_text() for mark in sent}
        lost_executor, victim = next(iter(agent_of.items()))
        lost = {lost_executor}
        (survivor,) = set(agent_of) - lost
        assert {e for e in ran_on.values()} == set(agent_of)

        killed_at = time.monotonic()
        if lose == "agent":  # its executors die; TASK_UNREACHABLE and FAILURE (agent) follow
            control.kill_agent(victim)
        else:  # TASK_FAILED and FAILURE (executor) follow
            control.kill_executor(containers[0]["framework_id"], lost_executor)
        gate.touch()  # the lost executor's processes were SIGKILLed before the answer: only the survivor's go on
        replies = {}
        for mark, (topic, corr) in sent.items():
            message = probe.wait_for(topic, 15)
            assert message.correlation_data == corr
            replies[mark] = message.decoded()
        assert time.monotonic() - killed_at < scaled(10)  # within the functions' timeout (a bound on the product)

        for mark, reply in replies.items():
            was_lost = ran_on[mark] in lost
            if mark.name.startswith("mesos_again"):
                assert reply.get("result") == survivor, (mark.name, reply)  # run again on the survivor if lost
            elif was_lost:
                assert reply.get("error", {}).get("code") == "unavailable", (mark.name, reply)
            else:
                assert reply.get("result") == survivor, (mark.name, reply)
        # Counted as they happened: the lost executor's idempotent calls rerun, its others lost.
        on_lost = [mark.name.partition("-")[0] for mark, executor in ran_on.items() if executor in lost]
        counted = metrics_when(
            metrics_port, lambda m: m["calls_rerun_total"] + m["calls_lost_total"] == len(on_lost), 10, "the counts"
        )
        assert counted["calls_rerun_total"] == on_lost.count("mesos_again")
        assert counted["calls_lost_total"] == on_lost.count("mesos_once")
        log = gateway.log()  # the operator's lines (docs/mesos.md, "What survives what")
        assert "go to another executor" in log and "answered unavailable" in log

        # The pool is whole again: a new executor on the surviving agent, taking calls.
        def replaced() -> list[dict[str, Any]] | None:
            found = [c for c in control.containers() if c["executor_id"] not in agent_of]
            return found or None

        (new,) = wait_for(replaced, 20, "a replacement executor")
        assert new["agent_id"] != victim or lose == "executor"
        whole = metrics_when(
            metrics_port, lambda m: m["executors"] == m["pool_tasks_running"] == 2, 20, "it to connect and run"
        )
        assert whole["executors_launched_total"] == 3
        seen = {probe.request("devices/k1/mesos_again", {"seconds": 0})["result"] for _ in range(6)}
        assert seen == {survivor, new["executor_id"]}
    finally:
        assert gateway.stop() == 0
