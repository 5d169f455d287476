"""The mesos executor without a cluster: `unavailable` at once, or the local fallback until the cluster is back.

Whether the cluster counts as unreachable is read from the gateway's metrics (``unreachable``); the log
lines that tell an operator so (docs/mesos.md, "What survives what") are checked as the messages they are.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.cli.devbroker import LocalBroker
from tests.mesos.mesos_gateway import mesos_gateway, metrics_when
from tests.mesos_standin.harness import StandIn
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe
from tests.support.timeouts import scaled, scaled_text

pytestmark = pytest.mark.slow  # every test here runs a gateway on the Mesos stand-in


def gateway_without_cluster(
    broker: LocalBroker, logs: Path, tmp_path: Path, port: int, metrics_port: int, fallback: str = "none"
) -> GatewayProcess:
    """A gateway whose Mesos master at 127.0.0.1:``port`` does not answer: it serves after 1 s without executors,
    and counts the cluster unreachable half a second later."""
    return mesos_gateway(
        broker.address, logs, f"127.0.0.1:{port}", tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
        metrics_port=metrics_port, start_timeout=scaled_text(1), unreachable_after=scaled_text(0.5), fallback=fallback,
    ).start()  # fmt: skip


def test_without_a_cluster_calls_are_answered_unavailable_at_once(
    broker: LocalBroker, logs: Path, tmp_path: Path, probe: Probe, free_port: int, metrics_port: int
) -> None:
    gateway = gateway_without_cluster(broker, logs, tmp_path, free_port, metrics_port)
    try:
        metrics_when(metrics_port, lambda m: m["unreachable"] == 1 and m["executors"] == 0, 10, "the unreachable state")
        assert "the Mesos cluster is unreachable" in gateway.log()  # what the operator reads
        assert "calls run nowhere: answered unavailable until it is back" in gateway.log()
        started = time.monotonic()
        reply = probe.request("devices/u1/mesos_again", {"seconds": 0})
        assert reply["error"]["code"] == "unavailable" and "unreachable" in reply["error"]["message"], reply
        # At once, not after the function's ten-second timeout (a bound on the product, not a wait).
        assert time.monotonic() - started < scaled(5)
    finally:
        assert gateway.stop() == 0


def test_with_the_local_fallback_calls_run_here_until_the_cluster_is_back(
    broker: LocalBroker, logs: Path, tmp_path: Path, probe: Probe, free_port: int, metrics_port: int
) -> None:
    port = free_port
    gateway = gateway_without_cluster(broker, logs, tmp_path, port, metrics_port, fallback="local")
    try:
        metrics_when(metrics_port, lambda m: m["unreachable"] == 1, 10, "the unreachable state")
        assert "calls run on the local executor (fallback)" in gateway.log()  # what the operator reads
        reply = probe.request("devices/u1/whereami")
        assert reply["result"]["executor_id"] is None, reply  # not in a Mesos executor

        with StandIn(tmp_path / "work", agents=1, port=str(port)):  # the master comes up where it was expected
            # pymesos retries the master with a backoff of up to 15 s; the executor then needs a few seconds.
            back = metrics_when(metrics_port, lambda m: m["unreachable"] == 0, 30, "the cluster to be back")
            assert back["executors"] >= 1 and back["registrations_total"] == 1
            assert "the Mesos cluster is back" in gateway.log()
            reply = probe.request("devices/u1/whereami")
            assert str(reply["result"]["executor_id"]).startswith("roost-"), reply
            assert gateway.stop() == 0
    finally:
        gateway.kill()
