"""The mesos executor end to end: mosquitto, a gateway process, the stand-in and real executors on two agents."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.devbroker import LocalBroker
from tests.mesos.mesos_gateway import live_tasks, local_gateway, mesos_gateway
from tests.mesos_standin.harness import StandIn, wait_for
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """A stand-in with two agents for the whole module; stopped with its executors by pid."""
    with StandIn(tmp_path_factory.mktemp("mesos") / "work", agents=2) as running:
        yield running


@pytest.fixture(scope="module")
def gateway_on_mesos(
    broker: LocalBroker, logs: Path, cluster: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway with the mesos executor, warm once it says 'serving'."""
    state = tmp_path_factory.mktemp("state") / "framework.json"
    bundles = tmp_path_factory.getbasetemp() / "mesos-bundles"
    gateway = mesos_gateway(broker.address, logs, cluster, state, bundles)
    gateway.start()
    yield gateway
    gateway.kill()


@pytest.fixture(scope="module")
def gateway_on_local(broker: LocalBroker, logs: Path) -> Iterator[GatewayProcess]:
    """The same functions on the local executor, under another namespace owner (its own client id)."""
    gateway = local_gateway(broker.address, logs)
    yield gateway
    gateway.kill()


def whereabouts(probe: Probe, count: int) -> list[dict[str, Any]]:
    """``count`` calls of ``whereami``, each reply's result."""
    results = []
    for _ in range(count):
        reply = probe.request("devices/m1/whereami")
        assert "result" in reply, reply
        results.append(reply["result"])
    return results


@pytest.mark.slow
def test_calls_run_warm_in_executor_workers_on_both_agents(
    gateway_on_mesos: GatewayProcess, cluster: StandIn, probe: Probe
) -> None:
    seen = whereabouts(probe, 24)
    containers = {c["executor_id"]: c for c in cluster.control.containers()}
    assert len(containers) == 2
    agents = {agent["id"] for agent in cluster.agents}
    assert {r["agent_id"] for r in seen} == agents  # both agents served calls
    assert {r["executor_id"] for r in seen} == set(containers)
    gateway_pid = gateway_on_mesos.process.pid if gateway_on_mesos.process else 0
    for result in seen:
        container = containers[result["executor_id"]]
        # A worker of that executor: in the executor's process group (its container), not the gateway's.
        assert result["pid"] not in (gateway_pid, container["pid"])
        assert result["pgid"] == container["pid"] != os.getpgid(0)
        assert Path(result["sandbox"]) == Path(container["sandbox"])
    # Warm: a handful of worker processes serve every call (2 executors × 2 workers), none started per call.
    assert len({r["pid"] for r in seen}) <= 4
    assert seen[-1]["pid"] in {r["pid"] for r in seen[:-1]}
    # No Mesos task per call: the framework still has just its two pool tasks.
    framework = cluster.control.state()["frameworks"][0]
    assert live_tasks(framework) == set(containers)


def test_bundle_is_fetched_over_http_into_a_clean_environment(
    gateway_on_mesos: GatewayProcess, cluster: StandIn, probe: Probe
) -> None:
    result = whereabouts(probe, 1)[0]
    sandbox = Path(result["sandbox"])
    assert result["virtual_env"] is None and result["pythonpath"] is None  # nothing from the test runner
    assert result["path"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert result["isolated"] == 1 and result["no_site"] == 1  # python -I -S: no system site-packages either
    assert "/tmp/mesosgw" not in result["executable"] and ".venv" not in result["executable"]
    # The functions, the gateway package and the dependencies all come from the fetched bundle.
    for name in ("module", "gateway", "pydantic"):
        assert Path(result[name]).is_relative_to(sandbox / "roost"), (name, result[name])
    assert all(Path(entry).is_relative_to(sandbox) or "python3" in entry for entry in result["sys_path"] if entry)
    archives = list(sandbox.glob("roost-bundle-*.tar.gz"))
    assert len(archives) == 1
    fetch_log = (sandbox / "stderr").read_text()
    assert "Fetching URI 'http://127.0.0.1:" in fetch_log and archives[0].name in fetch_log


CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("devices/d1/add", {"a": 2, "b": 40}),
    ("devices/d1/add", {"a": 2, "b": "forty"}),  # invalid_arguments
    ("devices/d1/echo", {"value": b"\x00bytes"}),
    ("devices/d1/fail", {"reason": "sensor unplugged"}),  # function_error
    ("devices/d1/no-such-function", {}),  # not_found
    ("devices/d1/hang", {}),  # timeout after 1 s: the agent's worker is killed
    ("devices/d1/opaque", None),  # bad_result
    ("devices/d1/big", {"size": 1 << 20}),  # bad_result: over the limit
    ("devices/d1/crash", {"code": 3}),  # the worker dies: function_error
    ("devices/d1/wait", {"seconds": 0.01}),  # async function
    ("devices/d1/unpicklable", {"value": "x"}),  # internal: it cannot be sent to any worker (never retried)
]


@pytest.mark.slow
def test_replies_are_identical_to_the_local_executors(
    gateway_on_mesos: GatewayProcess, gateway_on_local: GatewayProcess, cluster: StandIn, probe: Probe
) -> None:
    on_mesos = [probe.request(topic, args) for topic, args in CASES]
    assert gateway_on_mesos.stop() == 0  # both gateways share the namespace: one at a time
    # A clean stop kills the pool tasks: no executor is left behind.
    wait_for(lambda: not cluster.control.containers(), 15, "executors to exit")
    gateway_on_local.start()
    on_local = [probe.request(topic, args) for topic, args in CASES]
    assert on_mesos == on_local
    codes = [reply.get("error", {}).get("code") for reply in on_mesos]
    assert codes == [
        None, "invalid_arguments", None, "function_error", "not_found", "timeout", "bad_result", "bad_result",
        "function_error", None, "internal",
    ]  # fmt: skip
    assert on_mesos[0] == {"result": 42}
