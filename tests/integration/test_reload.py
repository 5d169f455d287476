"""Function reload: a changed module is picked up while a call of the old code finishes normally."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import msgpack

from gateway.devbroker import LocalBroker
from tests.support.gateway_process import ROOT, GatewayProcess
from tests.support.ops import wait_for
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


@router.function("devices/{{device_id}}/linger")
def linger(marker: str, seconds: float) -> int:
    """Say it started (the marker file), take a while, answer with this file's version."""
    Path(marker).write_text("started")
    time.sleep(seconds)
    return {version}
'''


def write_module(directory: Path, name: str, version: int) -> None:
    """(Re)write the function module; the padding changes its size too, whatever the clock's resolution."""
    (directory / f"{name}.py").write_text(MODULE.format(version=version) + "#" * version + "\n")


def gateway_with(directory: Path, logs: Path, broker: LocalBroker, name: str, *extra: str) -> GatewayProcess:
    """A gateway serving the module ``name`` from ``directory``."""
    gateway = GatewayProcess(broker.address, logs, "--functions", name, *extra)
    gateway.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(directory)])
    return gateway.start()


def version_becomes(probe: Probe, wanted: int) -> bool:
    """Whether the gateway now answers ``version`` with ``wanted``."""
    return bool(probe.request("devices/d1/version", {}, timeout=5)["result"] == wanted)


def test_reload_picks_up_a_changed_module_while_an_in_flight_call_completes(
    tmp_path: Path, logs: Path, broker: LocalBroker, probe: Probe
) -> None:
    name = f"reload_funcs_{uuid.uuid4().hex[:6]}"
    write_module(tmp_path, name, 1)
    gateway = gateway_with(tmp_path, logs, broker, name, "--reload")  # the local executor: worker processes
    try:
        assert probe.request("devices/d1/version", {}) == {"result": 1}
        marker = tmp_path / "started"
        reply_topic = reply_topic_for("d1")
        probe.subscribe(reply_topic)
        args = {"marker": str(marker), "seconds": 2.0}
        probe.publish("devices/d1/linger", msgpack.packb(args), 1, response_topic=reply_topic, correlation_data=b"old")
        wait_for(marker.exists, 10, "the long call to start")

        write_module(tmp_path, name, 2)
        wait_for(lambda: version_becomes(probe, 2), 20, "the new version to answer")
        in_flight = probe.wait_for(reply_topic, 10)
        assert (in_flight.correlation_data, in_flight.decoded()) == (b"old", {"result": 1})
        assert "reloaded: 2 functions" in gateway.log()
    finally:
        assert gateway.stop() == 0


def test_sighup_reloads_and_a_broken_module_keeps_the_old_code_serving(
    tmp_path: Path, logs: Path, broker: LocalBroker, probe: Probe
) -> None:
    name = f"reload_funcs_{uuid.uuid4().hex[:6]}"
    write_module(tmp_path, name, 1)
    gateway = gateway_with(tmp_path, logs, broker, name, "--executor", "inline")
    assert gateway.process is not None
    try:
        assert probe.request("devices/d1/version", {}) == {"result": 1}
        (tmp_path / f"{name}.py").write_text("this is not python\n")
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed, still serving the previous functions" in gateway.log(), 10, "the failure")
        assert probe.request("devices/d1/version", {}) == {"result": 1}

        write_module(tmp_path, name, 3)
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: version_becomes(probe, 3), 20, "the new version to answer")
    finally:
        assert gateway.stop() == 0
