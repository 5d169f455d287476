"""Operations pieces without a broker: stats, readiness, the endpoint, log lines, shared-subscription settings."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.cli import main
from gateway.cli.exits import Exit
from gateway.config import derived_share_group, load_settings
from gateway.errors import ConfigError
from gateway.ops.http import AcceptErrors, OperationsEndpoint
from gateway.ops.logs import JsonFormatter, TextFormatter
from gateway.ops.reload import FunctionReloader
from gateway.ops.stats import LATENCY_BOUNDS, DispatchStats
from gateway.ops.view import readiness_problems
from gateway.registry import Registry
from gateway.topics import shared_filter
from gateway.transport.base import InboundMessage
from gateway.transport.memory import MemoryTransport
from tests.support.timeouts import scaled, until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def test_latencies_land_in_their_bucket_and_outcomes_are_counted() -> None:
    stats = DispatchStats(["a/{x}"])
    function = stats.function("a/{x}")
    function.answered(time.monotonic() - 0.003)  # 3 ms: the 0.005 bucket
    function.ran(time.monotonic() - 100)  # beyond the last bound: +Inf
    stats.failed("a/{x}", "timeout")
    stats.failed("", "not_found")
    stats.drop("no_reply_address")
    assert function.results == 1 and function.outcomes == {"timeout": 1}
    assert function.buckets[LATENCY_BOUNDS.index(0.005)] == 1 and function.buckets[-1] == 1
    assert 100 < function.seconds < 101
    assert stats.function("").outcomes == {"not_found": 1}
    assert stats.dropped == {"no_reply_address": 1}


def test_shared_filters_and_their_settings() -> None:
    assert shared_filter("devices/+/add", "g1") == "$share/g1/devices/+/add"
    assert shared_filter("devices/+/add", None) == "devices/+/add"
    assert load_settings(share_group="g1").session_expiry == 0  # a dead member's session must not keep its share
    assert load_settings(share_group="g1", session_expiry=60).session_expiry == 60
    assert load_settings().session_expiry == 3600
    with pytest.raises(ConfigError, match="share_group"):
        load_settings(share_group="a/b")


def test_share_group_auto_is_named_after_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ROOST_PASSWORD", "ROOST_SHARE_GROUP"):
        monkeypatch.delenv(name, raising=False)
    named = load_settings(share_group="auto", password="secret").share_group
    assert named == derived_share_group("secret") and named is not None and len(named) == len("roost-") + 32
    assert load_settings(share_group="auto", password="secret").session_expiry == 0  # as for any group
    assert load_settings(share_group="auto", password="other").share_group != named
    assert load_settings(share_group="auto").share_group == "auto"  # roost acl, call, status need no password
    assert main(["check", "--share-group", "auto"]) == Exit.CONFIG  # but run and check do
    assert capsys.readouterr().err == (
        "roost: invalid setting 'share_group': \"auto\" names the group after the gateway's password: set"
        " password (ROOST_PASSWORD), or choose a random name\n"
    )


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("gateway.test", logging.ERROR, __file__, 1, message, None, exc_info)


def test_log_lines_are_one_line_each_as_text_and_as_json() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError as exc:
        error = exc
    text = TextFormatter().format(_record("two\nlines", error))
    assert "\n" not in text and "ValueError: bad | value" in text and " ERROR gateway.test: two | lines" in text
    line = JsonFormatter().format(_record("two\nlines", error))
    assert "\n" not in line
    event = json.loads(line)
    assert (event["level"], event["logger"], event["message"]) == ("ERROR", "gateway.test", "two\nlines")
    assert "ValueError: bad" in event["exception"] and event["time"].endswith("+00:00")


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


async def _metrics(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, sorted labels) → value."""
    status, text = await _get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_endpoint_reports_readiness_and_metrics_of_a_gateway() -> None:
    asyncio.run(asyncio.wait_for(_endpoint_scenario(), scaled(30)))


async def _endpoint_scenario() -> None:
    settings = load_settings(executor="inline", functions=["functions.examples"], durable={"enabled": False})
    transport = MemoryTransport()
    gateway = Gateway(settings, Registry.from_modules(settings.functions), transport)
    assert readiness_problems(gateway) == ["not serving: starting up or shutting down", "not connected to the broker"]
    endpoint = OperationsEndpoint(gateway, "127.0.0.1", 0)
    await endpoint.start()
    running = asyncio.create_task(gateway.run())
    try:
        assert await _get(endpoint.port, "/healthz") == (200, "ok\n")
        await asyncio.wait_for(gateway.ready.wait(), scaled(5))
        assert await _get(endpoint.port, "/readyz") == (200, "ready\n")
        request = InboundMessage(
            "devices/d1/add", msgpack.packb({"a": 1, "b": 2}), 0, time.monotonic(), "roost/replies/d1/r", b"c"
        )
        transport.deliver(request)
        await until(lambda: transport.published, what="the reply")  # counted before it is published
        samples = await _metrics(endpoint.port)
        key = (("function", "devices/{device_id}/add"), ("outcome", "result"))
        assert samples[("roost_requests_total", key)] == 1
        assert samples[("roost_in_flight", (("executor", "inline"),))] == 0
        assert samples[("roost_ready", ())] == 1
        assert samples[("roost_outbound_backlog", ())] == 0
        info = (("executor", "inline"), ("mqtt_version", "5"), ("transport", "fast"))  # as the settings say
        assert samples[("roost_gateway_info", info)] == 1
        functions = len(gateway.registry.specs)
        assert samples[("roost_functions", ())] == functions > 0
        assert not any(name == "roost_reloads_total" for name, _ in samples)  # none yet
        assert await FunctionReloader(gateway).reload()
        samples = await _metrics(endpoint.port)
        assert samples[("roost_reloads_total", (("outcome", "reloaded"),))] == 1
        assert samples[("roost_functions", ())] == functions
        transport.link.connected = False  # what a transport does when the broker goes away
        assert await _get(endpoint.port, "/readyz") == (503, "not connected to the broker\n")
        assert (await _get(endpoint.port, "/nope"))[0] == 404
    finally:
        gateway.request_stop()
        await asyncio.wait_for(running, scaled(10))
        await endpoint.close()


def test_failed_accepts_are_logged_once_per_interval_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    now = 0.0
    errors = AcceptErrors(interval=60.0, clock=lambda: now)
    with caplog.at_level(logging.ERROR, logger="gateway.ops.http"):
        for step in range(150):  # one every half second for 75 s
            now = step / 2
            errors.note(OSError(24, "Too many open files"))
    lines = [record.getMessage() for record in caplog.records]
    assert errors.total == 150 and len(lines) == 2  # at 0 s and at 60 s
    assert "[Errno 24] Too many open files (1 failed accepts since the last such line" in lines[0]
    assert "(120 failed accepts since the last such line; retrying every 0.5 s, logged at most every 60 s)" in lines[1]


def test_the_endpoint_caps_its_connections_and_closes_idle_ones() -> None:
    asyncio.run(asyncio.wait_for(_capped_endpoint(), scaled(30)))


async def _capped_endpoint() -> None:
    metrics = {"max_connections": 2, "idle_timeout": scaled(0.2)}
    settings = load_settings(executor="inline", functions=["functions.examples"], durable={"enabled": False},
                             metrics=metrics)  # fmt: skip
    gateway = Gateway(settings, Registry.from_modules(settings.functions), MemoryTransport())
    endpoint = OperationsEndpoint(gateway, "127.0.0.1", 0)
    await endpoint.start()
    idle = [await asyncio.open_connection("127.0.0.1", endpoint.port) for _ in range(3)]
    try:
        await until(lambda: endpoint.connections == 2, what="the endpoint to take two connections")
        answer = asyncio.create_task(_get(endpoint.port, "/healthz"))  # waits in the backlog behind the idle ones
        peak = 0

        def answered() -> bool:
            nonlocal peak
            peak = max(peak, endpoint.connections)
            return answer.done()

        await until(answered, 10, "the answer to /healthz")
        assert answer.result() == (200, "ok\n") and peak == 2
        for reader, _ in idle:
            assert await reader.read() == b""  # closed for idling, without an answer
        await until(lambda: endpoint.connections == 0, what="every connection closed")
    finally:
        for _, writer in idle:
            writer.close()
        await endpoint.close()


def test_a_share_group_prefixes_the_subscriptions_but_not_the_reply_loop_guard() -> None:
    async def scenario() -> None:
        settings = load_settings(
            executor="inline", functions=["functions.examples"], share_group="g1", durable={"enabled": False}
        )
        transport = MemoryTransport()
        gateway = Gateway(settings, Registry.from_modules(settings.functions), transport)
        running = asyncio.create_task(gateway.run())
        try:
            await asyncio.wait_for(gateway.ready.wait(), scaled(5))
            assert transport.filters == [f"$share/g1/{f}" for f in gateway.filters]
            # A reply topic one of the real filters matches would loop back: refused, though the broker
            # only knows the filter with its $share prefix.
            payload = msgpack.packb({"a": 1, "b": 2})
            looping = InboundMessage("devices/d1/add", payload, 0, time.monotonic(), "devices/x/y")
            transport.deliver(looping)
            assert transport.published == []
            assert gateway.dispatcher.stats.dropped == {"reply_topic_refused": 1}
        finally:
            gateway.request_stop()
            await asyncio.wait_for(running, scaled(10))

    asyncio.run(scenario())


def test_a_crash_is_one_log_line_and_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import gateway.app
    from gateway.cli import _run

    async def crash(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(gateway.app, "serve", crash)
    with caplog.at_level(logging.ERROR):
        assert _run(load_settings(durable={"enabled": False}), None) == Exit.ERROR
    assert [record.getMessage() for record in caplog.records] == ["the gateway crashed"]
    assert "RuntimeError: boom" in TextFormatter().format(caplog.records[0])
