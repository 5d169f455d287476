"""Nothing is lost across a gateway restart: QoS 1 requests queued at the broker are answered."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from gateway.cli.devbroker import LocalBroker
from tests.integration.test_operations import metrics_env
from tests.support.gateway_process import GatewayProcess
from tests.support.ops import scrape, value, wait_for
from tests.support.probe import Probe, reply_topic_for


def test_requests_queued_while_the_gateway_is_down_are_answered(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    client_id = f"roost-restart-{uuid.uuid4().hex[:6]}"
    gateway = start_gateway("--executor", "inline", client_id=client_id)
    assert probe.request("devices/d1/add", {"a": 0, "b": 0}) == {"result": 0}
    assert gateway.stop() == 0

    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    for n in range(200):
        probe.publish(
            "devices/d1/add",
            msgpack.packb({"a": n, "b": 1}),
            1,
            response_topic=reply_topic,
            correlation_data=str(n).encode(),
        )

    gateway.start()
    seen: dict[int, object] = {}
    for _ in range(200):
        message = probe.wait_for(reply_topic, timeout=20)
        assert message.correlation_data is not None
        seen[int(message.correlation_data)] = message.decoded()
    assert seen == {n: {"result": n + 1} for n in range(200)}


@pytest.mark.slow
def test_sigkill_loses_nothing_that_was_not_acknowledged(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    """Requests sent while the gateway is dead are delivered to its next run."""
    client_id = f"roost-kill-{uuid.uuid4().hex[:6]}"
    gateway = start_gateway(client_id=client_id)
    assert probe.request("devices/d1/add", {"a": 0, "b": 0}) == {"result": 0}
    gateway.kill()
    reply_topic = reply_topic_for("d1")
    probe.subscribe(reply_topic)
    for n in range(50):
        probe.publish(
            "devices/d1/add",
            msgpack.packb({"a": n, "b": n}),
            1,
            response_topic=reply_topic,
            correlation_data=str(n).encode(),
        )
    gateway.start()
    seen = {}
    for _ in range(50):
        message = probe.wait_for(reply_topic, timeout=20)
        assert message.correlation_data is not None
        seen[int(message.correlation_data)] = message.decoded()
    assert seen == {n: {"result": 2 * n} for n in range(50)}


def test_gateway_reconnects_after_a_broker_restart(logs: Path, transport: str, free_port: int) -> None:
    """The broker goes away and comes back on the same port: the gateway reconnects and serves."""
    own = LocalBroker()
    own.start()
    flags = ("--executor", "inline", "--transport", transport)
    gateway = GatewayProcess(own.address, logs, *flags, env=metrics_env(free_port)).start()
    try:
        device = Probe(own.port)
        assert device.request("devices/d1/add", {"a": 1, "b": 1}) == {"result": 2}
        device.close()
        own.stop()
        own.start()

        def reconnected() -> bool:
            samples = scrape(free_port)
            return (
                value(samples, "roost_broker_reconnects_total") >= 1 and value(samples, "roost_broker_connected") == 1
            )

        wait_for(reconnected, 30, "the gateway to reconnect")
        device = Probe(own.port)
        assert device.request("devices/d1/add", {"a": 2, "b": 2}) == {"result": 4}
        device.close()
    finally:
        assert gateway.stop() == 0
        own.cleanup()
