"""Devices stay in their lane: reply spaces, per-device rate limits, per-function concurrency (real broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack

from gateway.cli.devbroker import LocalBroker
from tests.integration.test_execution import collect, send
from tests.integration.test_operations import metrics_env
from tests.support.gateway_process import GatewayProcess
from tests.support.ops import scrape, value
from tests.support.probe import Probe, reply_topic_for

FUNCS = ("--functions", "functions.examples", "--functions", "tests.integration.funcs")


def test_a_forged_response_topic_into_another_devices_space_is_refused(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, broker: LocalBroker, free_port: int
) -> None:
    # The default settings: replies only inside roost/replies/{device_id}. Inline: requests are answered in order.
    start_gateway("--executor", "inline", *FUNCS, env=metrics_env(free_port))
    probe.subscribe("roost/dead/A")
    for victim in ("roost/replies/B/inbox", "roost/replies/AB", "alerts/B/temperature"):
        probe.subscribe(victim)
        probe.publish("devices/A/add", msgpack.packb({"a": 1, "b": 1}), 1, response_topic=victim, correlation_data=b"x")
        letter = msgpack.unpackb(probe.wait_for("roost/dead/A").payload)
        assert letter["topic"] == "devices/A/add"
        assert letter["error"] == {
            "code": "bad_payload",
            "message": f"reply topic {victim!r} is outside device 'A''s reply space",
        }
    probe.subscribe("roost/replies/A/inbox")
    probe.publish("devices/A/add", msgpack.packb({"a": 2, "b": 2}), 1, response_topic="roost/replies/A/inbox")
    assert probe.wait_for("roost/replies/A/inbox").decoded() == {"result": 4}
    probe.nothing_else()  # a reply in B's space would have come before A's: nothing did
    assert value(scrape(free_port), "roost_requests_dropped_total", reason="reply_space") == 3
    # The 3.1.1 convention's default reply topic is inside the space; a forged $rt is not.
    device = Probe(broker.port, version=4)
    try:
        device.subscribe("roost/replies/A")
        device.publish("devices/A/add", msgpack.packb({"a": 3, "b": 3, "$cid": "c"}))
        assert device.wait_for("roost/replies/A").decoded() == {"result": 6, "$cid": "c"}
        device.publish("devices/A/add", msgpack.packb({"a": 3, "b": 3, "$cid": "d", "$rt": "roost/replies/B"}))
        assert msgpack.unpackb(probe.wait_for("roost/dead/A").payload)["error"]["code"] == "bad_payload"
        assert value(scrape(free_port), "roost_requests_dropped_total", reason="reply_space") == 4
    finally:
        device.close()


def test_reply_spaces_hash_lets_replies_go_anywhere(start_gateway: Callable[..., GatewayProcess], probe: Probe) -> None:
    start_gateway(*FUNCS, env={"ROOST_REPLY_SPACES": "#"})
    probe.subscribe("anywhere/inbox")
    probe.publish("devices/A/add", msgpack.packb({"a": 1, "b": 1}), 1, response_topic="anywhere/inbox")
    assert probe.wait_for("anywhere/inbox").decoded() == {"result": 2}


def test_a_function_without_device_id_is_not_held_to_a_reply_space(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    # No device to scope the reply to; the broker ACL decides who may publish there at all.
    start_gateway(*FUNCS)
    probe.subscribe("ops/inbox")
    probe.publish("sites/s1/ping", b"\x80", 1, response_topic="ops/inbox")
    assert probe.wait_for("ops/inbox").decoded() == {"result": "pong from s1"}


def test_a_device_over_its_rate_is_answered_rate_limited_and_others_are_not(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    # A refill every 1,000 s: however slowly the eight arrive, no token comes back meanwhile.
    start_gateway("--executor", "inline", env={"ROOST_LIMITS__DEVICE_RATE": "0.001", "ROOST_LIMITS__DEVICE_BURST": "5"})
    reply_topic = reply_topic_for("noisy")
    probe.subscribe(reply_topic)
    for n in range(8):
        send(probe, reply_topic, "devices/noisy/add", {"a": n, "b": 0}, b"n%d" % n)
    replies = collect(probe, reply_topic, 8)
    codes = sorted(reply.get("error", {}).get("code", "ok") for reply in replies.values())
    assert codes == ["ok"] * 5 + ["rate_limited"] * 3
    assert probe.request("devices/quiet/add", {"a": 1, "b": 2}) == {"result": 3}


def test_a_function_past_its_concurrency_is_answered_overloaded(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, tmp_path: Path
) -> None:
    start_gateway("--workers", "3", *FUNCS)
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    release = tmp_path / "release"
    for n in range(3):  # free workers for all three, but the first call is held until the test lets go
        send(probe, reply_topic, "devices/d1/single", {"path": str(release)}, b"s%d" % n)
    refused = collect(probe, reply_topic, 2)  # answered at once, while the first is held
    assert {name: r["error"]["code"] for name, r in refused.items()} == {b"s1": "overloaded", b"s2": "overloaded"}
    release.touch()
    assert collect(probe, reply_topic, 1) == {b"s0": {"result": "released"}}
