"""The operations endpoint on a real gateway: metrics while requests flow, health through broker outages, status."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from gateway.cli.devbroker import LocalBroker
from tests.integration.test_cli import roost
from tests.support.gateway_process import ROOT, GatewayProcess
from tests.support.ops import get, scrape, status_of, value, wait_for
from tests.support.probe import Probe, reply_topic_for
from tests.support.timeouts import scaled, scaled_text

ADD = "devices/{device_id}/add"


def metrics_env(port: int) -> dict[str, str]:
    """Settings that turn the endpoint on at ``port``."""
    return {"ROOST_METRICS__ENABLED": "true", "ROOST_METRICS__PORT": str(port)}


@pytest.mark.slow
def test_metrics_count_requests_by_function_and_outcome_while_they_flow(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, broker: LocalBroker, free_port: int, tmp_path: Path
) -> None:
    port = free_port
    start_gateway("--functions", "functions.examples", "--functions", "tests.integration.funcs", env=metrics_env(port))
    before = scrape(port)
    assert value(before, "roost_broker_connected") == 1
    assert value(before, "roost_ready") == 1
    assert value(before, "roost_executor_workers", executor="local") == 2
    wait_for(lambda: value(scrape(port), "roost_executor_alive", executor="local") == 2, 10, "two live workers")

    answered: list[object] = []
    sampled = threading.Event()  # set by the scraper after each sample

    def traffic() -> None:
        device = Probe(broker.port)
        try:
            for n in range(60):
                if n % 20 == 10:  # mid-flow, wait for a fresh sample: the scrapes below do overlap the traffic
                    sampled.clear()
                    assert sampled.wait(scaled(10)), "no scrape while the requests flow"
                answered.append(device.request("devices/d1/add", {"a": n, "b": 1}))
            for _ in range(4):
                answered.append(device.request("devices/d1/add", {"a": "x", "b": 1}))
            for _ in range(3):
                answered.append(device.request("devices/d1/nothing-here", {}))
            for _ in range(2):
                answered.append(device.request("devices/d1/fail", {"reason": "unplugged"}))
        finally:
            device.close()

    sender = threading.Thread(target=traffic)
    sender.start()
    seen = []
    while sender.is_alive():  # scrape while the requests flow: counters only go up
        seen.append(value(scrape(port), "roost_requests_total", function=ADD, outcome="result"))
        sampled.set()
    sender.join(scaled(30))
    assert len(answered) == 69
    assert seen == sorted(seen) and len(seen) >= 3  # one sample, at least, at each of the three pauses

    after = scrape(port)
    assert value(after, "roost_requests_total", function=ADD, outcome="result") == 60
    assert value(after, "roost_requests_total", function=ADD, outcome="invalid_arguments") == 4
    assert value(after, "roost_requests_total", function="(unmatched)", outcome="not_found") == 3
    assert value(after, "roost_request_duration_seconds_count", function=ADD) == 60
    fail = "devices/{device_id}/fail"
    assert value(after, "roost_requests_total", function=fail, outcome="function_error") == 2
    assert value(after, "roost_request_duration_seconds_count", function=fail) == 2  # errors are timed too
    assert ("roost_requests_dead_lettered_total", frozenset()) in after
    assert value(after, "roost_request_duration_seconds_bucket", function=ADD, le="+Inf") == 60
    assert 0 < value(after, "roost_request_duration_seconds_sum", function=ADD) < 60
    assert value(after, "roost_broker_reconnects_total") == 0
    assert value(after, "roost_executor_restarts_total", executor="local") == 0
    assert ("process_resident_memory_bytes", frozenset()) in after

    # A call that runs until the test lets it go shows up as in flight on a busy worker.
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    release = tmp_path / "release"
    payload = msgpack.packb({"path": str(release)})
    probe.publish("devices/d1/hold", payload, 1, response_topic=reply_topic, correlation_data=b"held")

    def busy() -> bool:
        samples = scrape(port)
        return (
            value(samples, "roost_in_flight", executor="local") == 1
            and value(samples, "roost_executor_busy", executor="local") == 1
        )

    wait_for(busy, 10, "the held call in flight")
    assert value(scrape(port), "roost_queue_depth", executor="local") == 0
    release.touch()
    assert probe.wait_for(reply_topic, 10).decoded() == {"result": "released"}
    wait_for(lambda: value(scrape(port), "roost_in_flight", executor="local") == 0, 10, "nothing in flight")


def _launch(gateway: GatewayProcess) -> None:
    """Start the process without waiting for it to serve (the broker is not there yet)."""
    with open(gateway.log_path, "ab") as log:
        gateway.process = subprocess.Popen(gateway.args, cwd=ROOT, env=gateway.env, stdout=log, stderr=log)


@pytest.mark.slow
def test_health_follows_the_broker_connection_and_status_reports_it(logs: Path, transport: str, free_port: int) -> None:
    port = free_port
    own = LocalBroker()  # its port is chosen, but nothing listens there yet
    gateway = GatewayProcess(own.address, logs, "--executor", "inline", "--transport", transport, env=metrics_env(port))
    url = f"http://127.0.0.1:{port}"
    try:
        _launch(gateway)
        wait_for(lambda: status_of(port, "/healthz") == 200, 20, "/healthz")
        code, body = get(port, "/readyz")
        assert code == 503 and "not connected to the broker" in body, body
        out = roost("status", "--url", url, "--timeout", scaled_text(10))
        assert out.returncode == 1, out
        assert out.stdout.splitlines() == ["live:  yes", f"ready: no ({'; '.join(body.splitlines())})"]

        own.start()
        wait_for(lambda: status_of(port, "/readyz") == 200, 30, "ready once the broker is up")
        out = roost("status", "--url", url, "--timeout", scaled_text(10))
        assert (out.returncode, out.stdout) == (0, "live:  yes\nready: yes\n")

        own.stop()
        wait_for(lambda: status_of(port, "/readyz") == 503, 20, "not ready without the broker")
        assert "not connected to the broker" in get(port, "/readyz")[1]
        assert value(scrape(port), "roost_broker_connected") == 0
        assert status_of(port, "/healthz") == 200

        own.start()
        wait_for(lambda: status_of(port, "/readyz") == 200, 40, "ready again after the reconnect")
        samples = scrape(port)
        assert value(samples, "roost_broker_connected") == 1
        assert value(samples, "roost_broker_reconnects_total") >= 1
        device = Probe(own.port)
        try:
            assert device.request("devices/d1/add", {"a": 2, "b": 3}) == {"result": 5}
        finally:
            device.close()
    finally:
        gateway.stop()
        own.cleanup()
    out = roost("status", "--url", url, "--timeout", "1")
    assert out.returncode == 69 and out.stdout.startswith("live:  no"), out


def test_status_without_an_endpoint_is_a_configuration_error() -> None:
    out = roost("status")
    assert out.returncode == 78
    assert "operations endpoint is off" in out.stderr


def test_json_logs_are_one_object_per_line(start_gateway: Callable[..., GatewayProcess], probe: Probe) -> None:
    gateway = start_gateway("--log-format", "json", "--log-level", "DEBUG")
    assert probe.request("devices/d1/add", {"a": 1, "b": 1}) == {"result": 2}
    assert probe.request("devices/d1/fail", {"reason": "two\nlines"})["error"]["code"] == "function_error"
    assert probe.request("devices/d1/nothing", {})["error"]["code"] == "not_found"
    assert gateway.stop() == 0
    lines = gateway.log().splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(event, dict) and {"time", "level", "logger", "message"} <= event.keys() for event in events)
    messages = [event["message"] for event in events]
    assert any(message.startswith("serving ") for message in messages)
    assert any("answered not_found" in message for message in messages)
    assert messages[-1] == "stopped"


def _descriptors(pid: int) -> int:
    """File descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _healthz_behind(port: int, while_waiting: Callable[[], object], timeout: float) -> bytes:
    """GET /healthz on a new connection (queued behind whatever holds the endpoint); the whole answer.

    ``while_waiting`` runs at each poll until the answer is in.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        client.setblocking(False)
        answer = bytearray()

        def complete() -> bool:
            while_waiting()
            try:
                chunk = client.recv(4096)
            except BlockingIOError:
                return False
            answer.extend(chunk)
            return not chunk  # the endpoint closes after its answer

        wait_for(complete, timeout, "the answer to /healthz")
    return bytes(answer)


def _endpoint_gateway(broker: LocalBroker, logs: Path, port: int, **metrics: str) -> GatewayProcess:
    env = metrics_env(port) | {f"ROOST_METRICS__{key.upper()}": text for key, text in metrics.items()}
    return GatewayProcess(broker.address, logs, "--executor", "inline", env=env)


@pytest.mark.slow
def test_idle_connections_to_the_endpoint_are_capped_and_time_out(
    broker: LocalBroker, logs: Path, free_port: int
) -> None:
    gateway = _endpoint_gateway(broker, logs, free_port, max_connections="4", idle_timeout=scaled_text(0.3)).start()
    try:
        assert gateway.process is not None
        pid = gateway.process.pid
        baseline = _descriptors(pid)  # the endpoint listens (it starts before the gateway serves)
        idle = [socket.create_connection(("127.0.0.1", free_port), timeout=scaled(5)) for _ in range(6)]
        try:
            wait_for(lambda: _descriptors(pid) >= baseline + 4, 10, "the endpoint to take four connections")
            seen: list[int] = []
            # Behind six idle clients: answered once the endpoint has closed the first four.
            answer = _healthz_behind(free_port, lambda: seen.append(_descriptors(pid)), 20)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok\n")
            assert max(seen) <= baseline + 4, seen  # idle clients never held more than the cap
            for client in idle:
                assert client.recv(1) == b""  # closed for idling, without an answer
        finally:
            for client in idle:
                client.close()
    finally:
        assert gateway.stop() == 0


@pytest.mark.slow
def test_running_out_of_descriptors_is_logged_once_per_interval_and_passes(
    broker: LocalBroker, logs: Path, free_port: int, probe: Probe
) -> None:
    # The gateway may open 40 files (it uses 13); the endpoint would take 200 connections: it runs out first.
    gateway = _endpoint_gateway(broker, logs, free_port, max_connections="200", idle_timeout=scaled_text(1.0))
    gateway.args = ["prlimit", "--nofile=40", "--", *gateway.args]
    gateway.start()
    try:
        assert gateway.process is not None
        idle = [socket.create_connection(("127.0.0.1", free_port), timeout=scaled(5)) for _ in range(40)]
        try:
            wait_for(lambda: "cannot accept connections" in gateway.log(), 10, "the failed accept logged")
            # The idle ones hold every descriptor for 1 s, an accept is retried every 0.5 s: two or more fail.
            answer = _healthz_behind(free_port, lambda: None, 30)
            assert answer.endswith(b"\r\n\r\nok\n")
        finally:
            for client in idle:
                client.close()
        assert probe.request("devices/d1/add", {"a": 1, "b": 2}) == {"result": 3}  # MQTT served throughout
        lines = [line for line in gateway.log().splitlines() if "cannot accept connections" in line]
        assert len(lines) == 1, lines  # the next one would come a minute later at the earliest
        assert "[Errno 24] Too many open files (1 failed accepts since the last such line" in lines[0]
    finally:
        assert gateway.stop() == 0
