"""Function reload: a changed module is picked up while a call of the old code finishes normally."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import msgpack
import pytest

from gateway.cli.devbroker import LocalBroker
from tests.integration.test_operations import metrics_env
from tests.support.gateway_process import ROOT, GatewayProcess
from tests.support.ops import scrape, value, wait_for
from tests.support.probe import Probe, reply_topic_for

MODULE = '''
import time
from pathlib import Path

from gateway.registry import Router

router = Router()


@router.function("devices/{{device_id}}/version")
def version() -> int:
    """Which version of this file is running."""
    return {version}


@router.function("devices/{{device_id}}/linger", timeout=60.0)
def linger(marker: str, release: str) -> int:
    """Say it started (the marker file), run until the release file exists, answer with this file's version."""
    Path(marker).write_text("started")
    while not Path(release).exists():
        time.sleep(0.01)
    return {version}
'''


def write_module(directory: Path, name: str, version: int) -> None:
    """(Re)write the function module; the padding changes its size too, whatever the clock's resolution."""
    (directory / f"{name}.py").write_text(MODULE.format(version=version) + "#" * version + "\n")


def gateway_with(directory: Path, logs: Path, broker: LocalBroker, name: str, port: int, *extra: str) -> GatewayProcess:
    """A gateway serving the module ``name`` from ``directory``, its operations endpoint on ``port``."""
    gateway = GatewayProcess(broker.address, logs, "--functions", name, *extra, env=metrics_env(port))
    gateway.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(directory)])
    return gateway.start()


def version_becomes(probe: Probe, wanted: int) -> bool:
    """Whether the gateway now answers ``version`` with ``wanted``."""
    return bool(probe.request("devices/d1/version", {}, timeout=5)["result"] == wanted)


def reloads(port: int, outcome: str) -> float:
    """How many reloads ended with ``outcome``."""
    return value(scrape(port), "roost_reloads_total", outcome=outcome)


@pytest.mark.slow
def test_reload_picks_up_a_changed_module_while_an_in_flight_call_completes(
    tmp_path: Path, logs: Path, broker: LocalBroker, probe: Probe, free_port: int
) -> None:
    name = f"reload_funcs_{uuid.uuid4().hex[:6]}"
    write_module(tmp_path, name, 1)
    gateway = gateway_with(tmp_path, logs, broker, name, free_port, "--reload")  # local executor: workers
    try:
        assert probe.request("devices/d1/version", {}) == {"result": 1}
        marker, release = tmp_path / "started", tmp_path / "release"
        reply_topic = reply_topic_for("d1")
        probe.subscribe(reply_topic)
        args = {"marker": str(marker), "release": str(release)}
        probe.publish("devices/d1/linger", msgpack.packb(args), 1, response_topic=reply_topic, correlation_data=b"old")
        wait_for(marker.exists, 10, "the long call to start")

        write_module(tmp_path, name, 2)
        wait_for(lambda: version_becomes(probe, 2), 20, "the new version to answer")
        samples = scrape(free_port)
        assert value(samples, "roost_reloads_total", outcome="reloaded") == 1
        assert value(samples, "roost_functions") == 2
        probe.nothing_else()  # the old call is still running, on the old code
        release.touch()
        in_flight = probe.wait_for(reply_topic, 10)
        assert (in_flight.correlation_data, in_flight.decoded()) == (b"old", {"result": 1})
    finally:
        assert gateway.stop() == 0


def test_sighup_reloads_and_a_broken_module_keeps_the_old_code_serving(
    tmp_path: Path, logs: Path, broker: LocalBroker, probe: Probe, free_port: int
) -> None:
    name = f"reload_funcs_{uuid.uuid4().hex[:6]}"
    write_module(tmp_path, name, 1)
    gateway = gateway_with(tmp_path, logs, broker, name, free_port, "--executor", "inline")
    assert gateway.process is not None
    try:
        assert probe.request("devices/d1/version", {}) == {"result": 1}
        (tmp_path / f"{name}.py").write_text("this is not python\n")
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads(free_port, "failed") == 1, 10, "the reload to fail")
        assert "reload failed, still serving the previous functions" in gateway.log()  # the operator's message
        assert probe.request("devices/d1/version", {}) == {"result": 1}

        write_module(tmp_path, name, 3)
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: version_becomes(probe, 3), 20, "the new version to answer")
        assert (reloads(free_port, "reloaded"), reloads(free_port, "failed")) == (1, 1)
    finally:
        assert gateway.stop() == 0
