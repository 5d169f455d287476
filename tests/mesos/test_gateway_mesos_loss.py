"""The mesos executor when an agent or an executor dies mid-call: idempotent calls run elsewhere, others are
answered `unavailable`, nobody waits past the timeout, and the pool is made whole again."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gateway.devbroker import LocalBroker
from tests.mesos.mesos_gateway import mesos_gateway
from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.probe import Probe, device_of, reply_topic_for


def send(probe: Probe, topic: str, args: dict[str, Any]) -> tuple[str, bytes]:
    """Publish a request without waiting; its reply topic and correlation data."""
    reply_topic, corr = reply_topic_for(device_of(topic)), uuid.uuid4().bytes
    probe.subscribe(reply_topic)
    probe.publish(topic, msgpack.packb(args), response_topic=reply_topic, correlation_data=corr)
    return reply_topic, corr


@pytest.mark.parametrize("lose", ["agent", "executor"])
def test_a_loss_mid_call_reruns_idempotent_calls_elsewhere_and_fails_the_others_in_time(
    broker: LocalBroker, logs: Path, standin: StandIn, control: Control, tmp_path: Path, probe: Probe, lose: str
) -> None:
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
        workers="4", retry_budget="1",
    ).start()  # fmt: skip
    try:
        containers = control.containers()
        agent_of = {c["executor_id"]: c["agent_id"] for c in containers}
        assert len(agent_of) == 2 and len(set(agent_of.values())) == 2
        marks = tmp_path / "marks"
        marks.mkdir()
        sent = {}
        for kind in ("mesos_again", "mesos_once"):
            for n in range(4):
                mark = marks / f"{kind}-{n}"
                sent[mark] = send(probe, f"devices/k1/{kind}", {"seconds": 1.5, "mark": str(mark)})
        # Every call is running (each executor has four workers and got four calls).
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
        replies = {}
        for mark, (topic, corr) in sent.items():
            message = probe.wait_for(topic, 15)
            assert message.correlation_data == corr
            replies[mark] = message.decoded()
        assert time.monotonic() - killed_at < 10  # within the functions' timeout

        for mark, reply in replies.items():
            was_lost = ran_on[mark] in lost
            if mark.name.startswith("mesos_again"):
                assert reply.get("result") == survivor, (mark.name, reply)  # run again on the survivor if lost
            elif was_lost:
                assert reply.get("error", {}).get("code") == "unavailable", (mark.name, reply)
            else:
                assert reply.get("result") == survivor, (mark.name, reply)
        log = gateway.log()
        assert "go to another executor" in log and "answered unavailable" in log

        # The pool is whole again: a new executor on the surviving agent, taking calls.
        def replaced() -> list[dict[str, Any]] | None:
            found = [c for c in control.containers() if c["executor_id"] not in agent_of]
            return found or None

        (new,) = wait_for(replaced, 20, "a replacement executor")
        assert new["agent_id"] != victim or lose == "executor"
        wait_for(lambda: f"executor {new['executor_id']} connected" in gateway.log(), 20, "it to connect")
        seen = {probe.request("devices/k1/mesos_again", {"seconds": 0})["result"] for _ in range(6)}
        assert seen == {survivor, new["executor_id"]}
    finally:
        assert gateway.stop() == 0
