"""The mesos executor without a cluster: `unavailable` at once, or the local fallback until the cluster is back."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.devbroker import LocalBroker
from tests.mesos.mesos_gateway import mesos_gateway
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe

NO_CLUSTER = {"start_timeout": "1", "unreachable_after": "0.5"}  # serve after 1 s without executors


def gateway_without_cluster(broker: LocalBroker, logs: Path, tmp_path: Path, port: int, **mesos: str) -> GatewayProcess:
    """A gateway whose Mesos master at 127.0.0.1:``port`` does not answer."""
    settings = {**NO_CLUSTER, **mesos}
    return mesos_gateway(
        broker.address, logs, f"127.0.0.1:{port}", tmp_path / "framework.json", tmp_path.parent / "mesos-bundles",
        None, **settings,
    ).start()  # fmt: skip


def test_without_a_cluster_calls_are_answered_unavailable_at_once(
    broker: LocalBroker, logs: Path, tmp_path: Path, probe: Probe, free_port: int
) -> None:
    gateway = gateway_without_cluster(broker, logs, tmp_path, free_port)
    try:
        wait_for(lambda: "the Mesos cluster is unreachable" in gateway.log(), 5, "the unreachable state")
        assert "calls run nowhere: answered unavailable until it is back" in gateway.log()
        started = time.monotonic()
        reply = probe.request("devices/u1/mesos_again", {"seconds": 0})
        assert reply["error"]["code"] == "unavailable" and "unreachable" in reply["error"]["message"], reply
        assert time.monotonic() - started < 2  # not after the function's ten-second timeout
    finally:
        assert gateway.stop() == 0


def test_with_the_local_fallback_calls_run_here_until_the_cluster_is_back(
    broker: LocalBroker, logs: Path, tmp_path: Path, probe: Probe, free_port: int
) -> None:
    port = free_port
    gateway = gateway_without_cluster(broker, logs, tmp_path, port, fallback="local")
    try:
        wait_for(lambda: "calls run on the local executor (fallback)" in gateway.log(), 5, "the fallback")
        reply = probe.request("devices/u1/whereami")
        assert reply["result"]["executor_id"] is None, reply  # not in a Mesos executor

        with StandIn(tmp_path / "work", agents=1, port=str(port)):  # the master comes up where it was expected
            # pymesos retries the master with a backoff of up to 15 s; the executor then needs a few seconds.
            wait_for(lambda: "the Mesos cluster is back" in gateway.log(), 30, "the cluster to be back")
            reply = probe.request("devices/u1/whereami")
            assert str(reply["result"]["executor_id"]).startswith("roost-"), reply
            assert gateway.stop() == 0
    finally:
        gateway.kill()
