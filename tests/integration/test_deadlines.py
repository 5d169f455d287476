"""Deadlines, retries and dead letters on the real broker (both transports)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from tests.integration.test_execution import collect, send
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe, reply_topic_for
from tests.support.timeouts import scaled

FUNCS = ("--functions", "functions.examples", "--functions", "tests.integration.funcs")


def test_an_idempotent_call_is_retried_until_it_succeeds(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, tmp_path: Path
) -> None:
    start_gateway(*FUNCS)
    runs = tmp_path / "runs"
    assert probe.request("devices/d1/flaky", {"path": str(runs), "failures": 2}) == {"result": 3}
    assert runs.read_text() == "xxx"


@pytest.mark.slow
def test_a_call_that_keeps_failing_goes_to_the_dead_letter_topic(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, tmp_path: Path
) -> None:
    start_gateway(*FUNCS)
    probe.subscribe("roost/dead/d7")
    runs = tmp_path / "runs"
    reply = probe.request("devices/d7/flaky", {"path": str(runs), "failures": 10})
    assert reply == {"error": {"code": "function_error", "message": "RuntimeError: failure 4"}}
    assert runs.read_text() == "xxxx"  # the first run and three retries
    letter = probe.wait_for("roost/dead/d7", timeout=10).decoded()
    assert letter["topic"] == "devices/d7/flaky"
    assert letter["error"] == reply["error"]


@pytest.mark.slow
def test_a_request_older_than_max_age_is_answered_timeout_not_run(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway("--workers", "1", *FUNCS)
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    # Holds the only worker four times fresh's max_age: the margin for fresh to arrive while it runs.
    send(probe, reply_topic, "devices/d1/slow", {"seconds": scaled(2.0)}, b"slow")
    send(probe, reply_topic, "devices/d1/fresh", {}, b"fresh")
    replies = collect(probe, reply_topic, 2)
    assert replies[b"fresh"] == {"error": {"code": "timeout", "message": "the request expired before it could run"}}
    assert probe.request("devices/d1/fresh", {}) == {"result": "fresh"}


def test_events_that_fail_are_dead_lettered_not_lost(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway(*FUNCS)
    probe.subscribe("roost/dead/d3")
    probe.publish("devices/d3/fail", msgpack.packb({"reason": "sensor unplugged"}), 1)
    letter = probe.wait_for("roost/dead/d3", timeout=10).decoded()
    assert letter["error"]["message"] == "RuntimeError: sensor unplugged"
