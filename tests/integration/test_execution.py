"""The local executor end to end: timeouts, crashes, overload, expiry, in-flight calls at shutdown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe, reply_topic_for
from tests.support.timeouts import scaled, scaled_text

FUNCS = ("--functions", "functions.examples", "--functions", "tests.integration.funcs")


def send(
    probe: Probe, reply_topic: str, topic: str, args: dict[str, object], corr: bytes, expiry: int | None = None
) -> None:
    probe.publish(topic, msgpack.packb(args), 1, response_topic=reply_topic, correlation_data=corr, expiry=expiry)


def collect(probe: Probe, reply_topic: str, count: int, timeout: float = 20.0) -> dict[bytes, Any]:
    replies: dict[bytes, Any] = {}
    for _ in range(count):
        message = probe.wait_for(reply_topic, timeout=timeout)
        assert message.correlation_data is not None
        replies[message.correlation_data] = message.decoded()
    return replies


@pytest.mark.slow
def test_timeout_kills_the_worker_and_the_pool_keeps_serving(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway("--workers", "1", *FUNCS)
    first_pid = probe.request("devices/d1/where")["result"]
    reply = probe.request("devices/d1/hang")
    assert reply == {"error": {"code": "timeout", "message": "function did not finish within 1 s"}}
    second_pid = probe.request("devices/d1/where")["result"]
    assert second_pid != first_pid
    assert probe.request("devices/d1/add", {"a": 1, "b": 2}) == {"result": 3}


def test_worker_crash_is_answered_and_the_pool_heals(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway("--workers", "2", *FUNCS)
    for topic in ("devices/d1/crash", "devices/d1/segfault"):
        reply = probe.request(topic)
        assert reply["error"]["code"] == "function_error"
        assert "worker process died" in reply["error"]["message"]
    results = [probe.request("devices/d1/add", {"a": n, "b": 1})["result"] for n in range(10)]
    assert results == [n + 1 for n in range(10)]


def test_calls_behind_a_crash_still_get_their_results(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway("--workers", "1", *FUNCS)
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    send(probe, reply_topic, "devices/d1/crash", {}, b"crash")
    for n in range(20):
        send(probe, reply_topic, "devices/d1/add", {"a": n, "b": n}, b"add%d" % n)
    replies = collect(probe, reply_topic, 21)
    assert replies[b"crash"]["error"]["code"] == "function_error"
    assert all(replies[b"add%d" % n] == {"result": 2 * n} for n in range(20))


@pytest.mark.slow
def test_overloaded_when_the_queue_is_full(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, tmp_path: Path
) -> None:
    start_gateway("--workers", "1", *FUNCS, env={"ROOST_LIMITS__MAX_QUEUE": "3"})
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    release = tmp_path / "release"
    # The only worker is held until the test lets go: the first three fill the queue (running or waiting).
    for n in range(6):
        send(probe, reply_topic, "devices/d1/hold", {"path": str(release)}, b"s%d" % n)
    refused = collect(probe, reply_topic, 3)  # answered at once, while the first three are held
    assert sorted(refused) == [b"s3", b"s4", b"s5"]
    assert {r["error"]["code"] for r in refused.values()} == {"overloaded"}
    assert "the limit is 3" in str(refused[b"s3"])
    release.touch()
    assert collect(probe, reply_topic, 3) == {b"s%d" % n: {"result": "released"} for n in range(3)}


@pytest.mark.slow
def test_expired_request_is_answered_timeout_instead_of_run(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway("--workers", "1", *FUNCS)
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    # The 1-second expiry runs out while the call ahead holds the only worker: its whole margin.
    seconds = scaled(2.0)
    send(probe, reply_topic, "devices/d1/slow", {"seconds": seconds}, b"slow")
    send(probe, reply_topic, "devices/d1/add", {"a": 1, "b": 1}, b"expiring", expiry=1)
    replies = collect(probe, reply_topic, 2)
    assert replies[b"expiring"] == {"error": {"code": "timeout", "message": "the request expired before it could run"}}
    assert replies[b"slow"]["result"] >= seconds


@pytest.mark.slow
def test_sigterm_finishes_in_flight_calls_and_exits_0(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    gateway = start_gateway("--workers", "2", *FUNCS, env={"ROOST_SHUTDOWN_GRACE": scaled_text(5)})
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    send(probe, reply_topic, "devices/d1/slow", {"seconds": 0.5}, b"short")
    # Answered by the other worker: the gateway has received (and started) the slow call before it.
    assert probe.request("devices/d1/add", {"a": 0, "b": 0}) == {"result": 0}
    assert gateway.stop() == 0
    assert collect(probe, reply_topic, 1)[b"short"]["result"] >= 0.5


@pytest.mark.parametrize("synchronous", ["normal", "full"])
@pytest.mark.slow
def test_sigterm_publishes_what_finishes_in_the_grace_after_its_commit(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, synchronous: str
) -> None:
    # With "full" the reply's commit runs on the commit thread: the stop must wait for it, then drain.
    env = {"ROOST_SHUTDOWN_GRACE": scaled_text(5), "ROOST_DURABLE__SYNCHRONOUS": synchronous}
    gateway = start_gateway("--executor", "inline", *FUNCS, env=env)
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    send(probe, reply_topic, "devices/d1/wait", {"seconds": 0.5}, b"short")
    assert probe.request("devices/d1/add", {"a": 0, "b": 0}) == {"result": 0}
    assert gateway.stop() == 0
    assert collect(probe, reply_topic, 1)[b"short"] == {"result": "done"}


@pytest.mark.slow
def test_sigterm_answers_unavailable_past_the_grace(start_gateway: Callable[..., GatewayProcess], probe: Probe) -> None:
    gateway = start_gateway("--workers", "2", *FUNCS, env={"ROOST_SHUTDOWN_GRACE": "0.2"})
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    send(probe, reply_topic, "devices/d1/slow", {"seconds": 10}, b"long")
    assert probe.request("devices/d1/add", {"a": 0, "b": 0}) == {"result": 0}
    assert gateway.stop() == 0
    reply = collect(probe, reply_topic, 1)[b"long"]
    assert reply["error"]["code"] == "unavailable"
