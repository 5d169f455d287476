"""The elastic warm pool: more executors while calls wait for a worker, fewer once they are idle.

The waiting calls are held at a gate (a file the test creates), so the pool is short of workers for
exactly as long as the test needs, not for a duration raced against the pool's timers. What happened
is read from state: the gateway's metrics and the stand-in's containers and framework record.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gateway.cli.devbroker import LocalBroker
from tests.mesos.mesos_gateway import executor_ids, mesos_gateway, mesos_metrics, metrics_when, the_framework
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.probe import Probe, reply_topic_for
from tests.support.timeouts import scaled, scaled_text

pytestmark = pytest.mark.slow  # every test here runs a gateway on the Mesos stand-in


def send(probe: Probe, topic: str, args: dict[str, Any]) -> tuple[str, bytes]:
    """Publish a request without waiting for its reply; its reply topic and correlation data."""
    reply_topic, corr = reply_topic_for("e1"), uuid.uuid4().bytes
    probe.subscribe(reply_topic)
    probe.publish(topic, msgpack.packb(args), response_topic=reply_topic, correlation_data=corr)
    return reply_topic, corr


def test_the_pool_grows_while_calls_wait_and_shrinks_back_when_idle(
    broker: LocalBroker, logs: Path, standin: StandIn, tmp_path: Path, probe: Probe, metrics_port: int
) -> None:
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
        metrics_port=metrics_port, executors="1", max_executors="2", workers="1", idle_timeout=scaled_text(1),
    ).start()  # fmt: skip
    try:
        (first,) = executor_ids(standin)
        start = mesos_metrics(metrics_port)
        assert (start["pool_target"], start["executors"], start["executors_launched_total"]) == (1, 1, 1)

        # One worker, three calls held at the gate: two wait for a worker, so the pool grows to its maximum.
        gate = tmp_path / "gate"
        held = [send(probe, "devices/e1/mesos_gated", {"gate": str(gate), "limit": scaled(60)}) for _ in range(3)]
        grown = metrics_when(metrics_port, lambda m: m["executors"] == 2, 30, "a second executor taking calls")
        assert grown["pool_target"] == 2 and grown["executors_launched_total"] == 2
        (second,) = executor_ids(standin) - {first}
        # The held calls stay with the first executor (they were pipelined to it); a call sent now goes to
        # the idle new one. The calls still wait, so the new executor is not idle in the pool's sense.
        assert probe.request("devices/e1/mesos_again", {"seconds": 0})["result"] == second
        assert mesos_metrics(metrics_port)["pool_target"] == 2

        gate.touch()
        for topic, corr in held:
            reply = probe.wait_for(topic, 20)
            assert reply.correlation_data == corr and reply.decoded() == {"result": first}

        # Idle for idle_timeout: back to one executor; the framework declines offers with a filter and
        # suppresses them again.
        def one_executor(metrics: dict[str, float]) -> bool:
            return (metrics["pool_target"], metrics["pool_tasks"], metrics["executors"]) == (1, 1, 1)

        metrics_when(metrics_port, one_executor, 20, "the pool to shrink back to one executor")

        def one_container() -> set[str] | None:
            running = executor_ids(standin)
            return running if len(running) == 1 else None

        (left,) = wait_for(one_container, 15, "one executor container left")
        (stopped,) = {first, second} - {left}

        def declined() -> bool:
            framework = the_framework(standin)
            return bool(framework["standin_suppressed"] and framework["standin_filters"])

        wait_for(declined, 10, "offers declined with a filter and suppressed")
        assert probe.request("devices/e1/mesos_again", {"seconds": 0})["result"] == left
        # Never past max_executors: two pool tasks launched in all, the idle one killed.
        framework = the_framework(standin)
        tasks = framework["tasks"] + framework["completed_tasks"]
        assert {task["id"]: task["state"] for task in tasks} == {left: "TASK_RUNNING", stopped: "TASK_KILLED"}
        assert mesos_metrics(metrics_port)["executors_launched_total"] == 2
    finally:
        assert gateway.stop() == 0
