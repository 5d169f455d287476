"""End to end on a real mosquitto: the happy path, every error code, events, expiry, reply loops."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from gateway.cli.devbroker import LocalBroker, lease_port
from tests.conftest import TRANSPORTS
from tests.integration.test_operations import metrics_env
from tests.support.gateway_process import GatewayProcess
from tests.support.ops import scrape, value, wait_for
from tests.support.probe import Probe, reply_topic_for
from tests.support.timeouts import scaled, scaled_text

FUNCS = (
    "--functions",
    "functions.examples",
    "--functions",
    "functions.sensors",
    "--functions",
    "tests.integration.funcs",
)


@pytest.fixture(scope="module", params=[f"{e}/{t}" for t in TRANSPORTS for e in ("local", "inline")])
def gateway(request: pytest.FixtureRequest, broker: LocalBroker, logs: Path) -> Iterator[GatewayProcess]:
    """One gateway per executor and transport, shared by the tests of this module."""
    executor, transport = request.param.split("/")
    flags = ("--executor", executor, "--transport", transport, *FUNCS)
    with lease_port() as lease:
        env = {"ROOST_LIMITS__MAX_RESULT_BYTES": "1000", **metrics_env(lease.port)}
        process = GatewayProcess(broker.address, logs, *flags, env=env)
        process.start()
        yield process
        assert process.stop() == 0


def metrics_port(gateway: GatewayProcess) -> int:
    """The port of the gateway's operations endpoint."""
    return int(gateway.env["ROOST_METRICS__PORT"])


def error(reply: dict[str, object]) -> tuple[object, object]:
    body = reply["error"]
    assert isinstance(body, dict)
    return body["code"], body["message"]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_add_replies_at_the_request_qos(gateway: GatewayProcess, probe: Probe, qos: int) -> None:
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic, qos=2)
    probe.publish(
        "devices/d1/add", msgpack.packb({"a": 1, "b": 2}), qos, response_topic=reply_topic, correlation_data=b"corr-1"
    )
    message = probe.wait_for(reply_topic)
    assert message.decoded() == {"result": 3}
    assert message.correlation_data == b"corr-1"
    # The gateway subscribes at QoS 1, so the broker delivers a QoS 2 request at QoS 1.
    assert message.qos == min(qos, 1)
    assert not message.retain


def test_correlation_data_is_optional(gateway: GatewayProcess, probe: Probe) -> None:
    probe.subscribe("roost/replies/d1/nocorr")
    probe.publish("devices/d1/add", msgpack.packb({"a": 2, "b": 2}), 1, response_topic="roost/replies/d1/nocorr")
    message = probe.wait_for("roost/replies/d1/nocorr")
    assert message.decoded() == {"result": 4}
    assert message.correlation_data is None


def test_mosquitto_rr_gets_a_result(gateway: GatewayProcess, broker: LocalBroker) -> None:
    # mosquitto_rr 2.0.11 sends an empty payload with -f, so the bytes go in -m (they hold no NUL).
    request = msgpack.packb({"a": 1, "b": 2})
    out = subprocess.run(
        [
            "mosquitto_rr",
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-t",
            "devices/d1/add",
            "-e",
            reply_topic_for("d1"),
            "-m",
            request,
            "-W",
            str(round(scaled(10))),
            "-N",
        ],
        capture_output=True,
        timeout=scaled(20),
        check=True,
    )
    assert msgpack.unpackb(out.stdout) == {"result": 3}


def test_mqtt311_device_uses_cid_and_default_reply_topic(gateway: GatewayProcess, broker: LocalBroker) -> None:
    device = Probe(broker.port, version=4)
    try:
        device.subscribe("roost/replies/old-1")
        device.publish("devices/old-1/add", msgpack.packb({"a": 5, "b": 6, "$cid": b"\x00\x01"}))
        assert device.wait_for("roost/replies/old-1").decoded() == {"result": 11, "$cid": b"\x00\x01"}
        device.subscribe("roost/replies/old-1/inbox")
        device.publish("devices/old-1/nope", msgpack.packb({"$cid": "x", "$rt": "roost/replies/old-1/inbox"}))
        reply = device.wait_for("roost/replies/old-1/inbox").decoded()
        assert reply["$cid"] == "x" and error(reply)[0] == "not_found"
    finally:
        device.close()


@pytest.mark.parametrize(
    ("topic", "payload", "code", "message"),
    [
        ("devices/d1/add", b"\xc1", "bad_payload", "payload is not valid msgpack"),
        ("devices/d1/add", b"\x92\x01\x02", "bad_payload", "payload must be a msgpack map, got array"),
        (
            "devices/d1/add",
            msgpack.packb({"a": 1, "b": "2"}),
            "invalid_arguments",
            "invalid arguments: b: Input should be a valid integer",
        ),
        ("devices/d1/nothing-here", b"", "not_found", "no function is registered at 'devices/d1/nothing-here'"),
        (
            "devices/d1/fail",
            msgpack.packb({"reason": "sensor unplugged"}),
            "function_error",
            "RuntimeError: sensor unplugged",
        ),
        ("devices/d1/opaque", b"", "bad_result", "result cannot be encoded as msgpack"),
        ("devices/d1/big", msgpack.packb({"size": 5000}), "bad_result", "over the limit of 1000"),
    ],
)
def test_error_codes(
    gateway: GatewayProcess, probe: Probe, topic: str, payload: bytes, code: str, message: str
) -> None:
    reply = probe.request(topic, raw=payload)
    assert error(reply)[0] == code
    assert message in str(error(reply)[1])
    assert "Traceback" not in str(reply) and "/" + "work" not in str(reply)


def test_invalid_arguments_details(gateway: GatewayProcess, probe: Probe) -> None:
    reply = probe.request("devices/d1/add", {"a": "one", "c": {"nested": [1]}})
    details = reply["error"]["details"]
    assert {"loc": ["a"], "msg": "Input should be a valid integer", "type": "int_type"} in details
    assert {"loc": ["b"], "msg": "Field required", "type": "missing"} in details
    assert {"loc": ["c"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"} in details
    assert "one" not in str(details) and "nested" not in str(details)


def test_oversized_payload(gateway: GatewayProcess, probe: Probe) -> None:
    payload = msgpack.packb({"a": "x" * 300_000})
    reply = probe.request("devices/d1/add", raw=payload)
    assert error(reply) == ("bad_payload", f"payload is {len(payload)} bytes, over the limit of 262144")


def test_event_publishes_an_alert_only_when_hot(gateway: GatewayProcess, probe: Probe) -> None:
    port = metrics_port(gateway)
    readings = {"function": "devices/{device_id}/readings/temperature", "outcome": "result"}
    ran = value(scrape(port), "roost_requests_total", **readings)
    probe.subscribe("alerts/+/temperature")
    probe.publish("devices/s1/readings/temperature", msgpack.packb({"celsius": 20.0}))
    probe.publish("devices/s1/readings/temperature", msgpack.packb({"celsius": 41.5}))
    alert = probe.wait_for("alerts/s1/temperature")
    assert alert.decoded() == {"device_id": "s1", "celsius": 41.5, "limit": 30.0}
    # Both readings have run (workers may finish them in either order), so whatever they published is on
    # its way, ahead of the reply to a later request: once that is in, nothing else came.
    wait_for(lambda: value(scrape(port), "roost_requests_total", **readings) == ran + 2, 10, "both readings run")
    assert probe.request("devices/d1/add", {"a": 1, "b": 1}) == {"result": 2}
    probe.nothing_else()


def test_reply_loop_is_dropped_and_the_gateway_keeps_serving(gateway: GatewayProcess, probe: Probe) -> None:
    port = metrics_port(gateway)
    refused = value(scrape(port), "roost_requests_dropped_total", reason="reply_topic_refused")
    probe.subscribe("devices/loop/add")
    probe.publish("devices/loop/add", msgpack.packb({"a": 1, "b": 1}), 1, response_topic="devices/loop/add")
    probe.wait_for("devices/loop/add")  # our own request
    assert probe.request("devices/d1/add", {"a": 1, "b": 1}) == {"result": 2}
    # Refused on arrival, before the later request was taken: never run, so no reply to it can follow.
    assert value(scrape(port), "roost_requests_dropped_total", reason="reply_topic_refused") == refused + 1
    probe.nothing_else()


def test_function_runs_where_the_executor_says(gateway: GatewayProcess, probe: Probe) -> None:
    pid = probe.request("devices/d1/where")["result"]
    gateway_pid = gateway.process.pid if gateway.process else -1
    if "local" in gateway.args:
        assert pid != gateway_pid
    else:
        assert pid == gateway_pid


@pytest.mark.slow
def test_cli_call_exit_codes(gateway: GatewayProcess, broker: LocalBroker) -> None:
    def call(*args: str) -> subprocess.CompletedProcess[str]:
        # A generous reply timeout; a call that tests the timeout gives its own, later on the line (it wins).
        return subprocess.run(
            [sys.executable, "-m", "gateway", "call", "--broker", broker.address, "--timeout", scaled_text(10), *args],
            capture_output=True,
            text=True,
            timeout=scaled(30),
            env=gateway.env,
            cwd=os.getcwd(),
        )

    def refusals() -> float:
        return value(scrape(metrics_port(gateway)), "roost_requests_dropped_total", reason="reply_space")

    refused = refusals()
    ok = call("devices/d1/add", "a=1", "b=2")
    assert (ok.returncode, ok.stdout.strip()) == (0, "3")
    err = call("devices/d1/add", "a=1", "b=two")
    assert err.returncode == 1 and "error invalid_arguments" in err.stdout
    echo = call("devices/d1/echo", "value=hello world")
    assert echo.returncode == 0 and "'hello world'" in echo.stdout
    slow = call("--timeout", "0.5", "devices/d1/slow", "seconds=1")  # its reply comes 1 s after the request, at best
    assert slow.returncode == 2 and "timeout" in slow.stderr
    v311 = call("--mqtt-version", "3.1.1", "devices/d1/add", "a=2", "b=2")
    assert (v311.returncode, v311.stdout.strip()) == (0, "4")
    # Calling as another device puts the reply topic in d2's space: refused, so no reply comes.
    as_d2 = call("--timeout", "1", "--device", "d2", "devices/d1/add", "a=1", "b=1")
    assert as_d2.returncode == 2 and "timeout" in as_d2.stderr
    wait_for(lambda: refusals() == refused + 1, 10, "the refusal of the reply topic in d2's space")


def test_gateway_speaking_mqtt311(broker: LocalBroker, logs: Path, free_port: int) -> None:
    """With mqtt_version 3.1.1 the gateway uses paho and serves the $cid convention."""
    flags = ("--mqtt-version", "3.1.1", "--executor", "inline")
    gateway = GatewayProcess(broker.address, logs, *flags, env=metrics_env(free_port)).start()
    device = Probe(broker.port, version=4)
    try:
        info = {"executor": "inline", "transport": "paho", "mqtt_version": "3.1.1"}
        assert value(scrape(free_port), "roost_gateway_info", **info) == 1
        device.subscribe("roost/replies/v3")
        device.publish("devices/v3/add", msgpack.packb({"a": 2, "b": 3, "$cid": "q"}))
        assert device.wait_for("roost/replies/v3").decoded() == {"result": 5, "$cid": "q"}
    finally:
        device.close()
        assert gateway.stop() == 0
