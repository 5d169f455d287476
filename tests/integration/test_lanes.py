"""Devices stay in their lane: reply spaces, per-device rate limits, per-function concurrency (real broker)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgpack

from gateway.devbroker import LocalBroker
from tests.integration.test_execution import collect, send
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe

FUNCS = ("--functions", "functions.examples", "--functions", "tests.integration.funcs")


def test_a_forged_response_topic_into_another_devices_space_is_refused(
    start_gateway: Callable[..., GatewayProcess], probe: Probe, broker: LocalBroker
) -> None:
    gateway = start_gateway(*FUNCS, env={"ROOST_REPLY_SPACES": "roost/replies/{device_id}"})
    probe.subscribe("roost/replies/B/inbox")
    probe.publish(
        "devices/A/add",
        msgpack.packb({"a": 1, "b": 1}),
        1,
        response_topic="roost/replies/B/inbox",
        correlation_data=b"x",
    )
    probe.subscribe("roost/replies/A/inbox")
    probe.publish(
        "devices/A/add",
        msgpack.packb({"a": 2, "b": 2}),
        1,
        response_topic="roost/replies/A/inbox",
        correlation_data=b"y",
    )
    assert probe.wait_for("roost/replies/A/inbox").decoded() == {"result": 4}
    probe.expect_nothing(0.3)  # nothing arrived in B's space
    assert "outside device 'A''s reply space" in gateway.log()
    # The 3.1.1 convention's default reply topic is inside the space.
    device = Probe(broker.port, version=4)
    try:
        device.subscribe("roost/replies/A")
        device.publish("devices/A/add", msgpack.packb({"a": 3, "b": 3, "$cid": "c"}))
        assert device.wait_for("roost/replies/A").decoded() == {"result": 6, "$cid": "c"}
    finally:
        device.close()


def test_a_device_over_its_rate_is_answered_rate_limited_and_others_are_not(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway("--executor", "inline", env={"ROOST_LIMITS__DEVICE_RATE": "1", "ROOST_LIMITS__DEVICE_BURST": "5"})
    reply_topic = f"test/r/{uuid.uuid4().hex}"
    probe.subscribe(reply_topic)
    for n in range(8):
        send(probe, reply_topic, "devices/noisy/add", {"a": n, "b": 0}, b"n%d" % n)
    replies = collect(probe, reply_topic, 8)
    codes = sorted(reply.get("error", {}).get("code", "ok") for reply in replies.values())
    assert codes == ["ok"] * 5 + ["rate_limited"] * 3
    assert probe.request("devices/quiet/add", {"a": 1, "b": 2}) == {"result": 3}


def test_a_function_past_its_concurrency_is_answered_overloaded(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    start_gateway("--workers", "3", *FUNCS)
    reply_topic = f"test/r/{uuid.uuid4().hex}"
    probe.subscribe(reply_topic)
    for n in range(3):
        send(probe, reply_topic, "devices/d1/single", {"seconds": 0.5}, b"s%d" % n)
    replies = collect(probe, reply_topic, 3)
    codes = sorted(reply.get("error", {}).get("code", "ok") for reply in replies.values())
    assert codes == ["ok", "overloaded", "overloaded"]
