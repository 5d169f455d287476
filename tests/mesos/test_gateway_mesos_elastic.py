"""The elastic warm pool: more executors while calls wait for a worker, fewer once they are idle."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgpack

from gateway.devbroker import LocalBroker
from tests.mesos.mesos_gateway import mesos_gateway
from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.probe import Probe, reply_topic_for


def calls_at_once(probe: Probe, count: int, seconds: float) -> list[str]:
    """``count`` concurrent calls of ``mesos_again``; the executor of each."""
    sent = []
    for _ in range(count):
        topic, corr = reply_topic_for("e1"), uuid.uuid4().bytes
        probe.subscribe(topic)
        probe.publish("devices/e1/mesos_again", msgpack.packb({"seconds": seconds}), response_topic=topic,
                      correlation_data=corr)  # fmt: skip
        sent.append(topic)
    return [probe.wait_for(topic, 20).decoded()["result"] for topic in sent]


def test_the_pool_grows_while_calls_wait_and_shrinks_back_when_idle(
    broker: LocalBroker, logs: Path, standin: StandIn, control: Control, tmp_path: Path, probe: Probe
) -> None:
    gateway = mesos_gateway(
        broker.address, logs, standin, tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
        executors="1", max_executors="2", workers="1", idle_timeout="2",
    ).start()  # fmt: skip
    try:
        (first,) = {c["executor_id"] for c in control.containers()}
        # One worker, three calls of a second each: two wait, so the pool grows to its maximum of two.
        assert calls_at_once(probe, 3, 1.0) == [first] * 3  # sent before the second executor was there
        assert "calls wait for a worker: growing the pool to 2 executors" in gateway.log()
        wait_for(lambda: len(control.containers()) == 2, 15, "a second executor")
        second = next(c["executor_id"] for c in control.containers() if c["executor_id"] != first)
        wait_for(lambda: f"executor {second} connected" in gateway.log(), 15, "it to connect")
        # Both take calls now (the new link may need a moment after its log line before it is dispatched
        # to): four half-second calls at a time on two one-worker executors, until both have answered.
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while seen != {first, second}:
            assert time.monotonic() < deadline, f"only {seen} took calls"
            seen.update(calls_at_once(probe, 4, 0.5))
        assert "growing the pool to 3" not in gateway.log()  # never past max_executors

        # Idle for two seconds: back to one executor; the framework declines and suppresses offers again.
        wait_for(lambda: "shrinking the pool to 1 executors" in gateway.log(), 10, "the pool to shrink")
        wait_for(lambda: len(control.containers()) == 1, 15, "one executor left")
        wait_for(lambda: control.state()["frameworks"][0]["standin_filters"], 10, "offers declined with a filter")
        assert calls_at_once(probe, 1, 0)[0] in {first, second}
    finally:
        assert gateway.stop() == 0
