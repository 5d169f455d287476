"""The paho transport's in-flight window, without a broker: paho keeps unsent publishes while disconnected."""
# Drives paho-mqtt 2.x internals (_on_publish, _out_messages) as loop_read() would: checked on 2.2.0.

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import pytest

from gateway.transport import paho as paho_transport
from gateway.transport.base import OutboundMessage
from gateway.transport.options import ConnectOptions
from gateway.transport.paho import PahoTransport
from tests.support.timeouts import scaled


def test_publishes_beyond_the_window_wait_outside_paho_and_go_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        transport = PahoTransport(ConnectOptions(host="127.0.0.1", port=1883, client_id="window-test", max_inflight=2))
        transport._loop = asyncio.get_running_loop()  # what connect() does first
        client = transport._client
        handed: list[tuple[str, int]] = []  # (topic, mid) of each publish paho was given
        publish = client.publish

        def recording(topic: str, payload: bytes, **kwargs: Any) -> Any:
            info = publish(topic, payload, **kwargs)
            handed.append((topic, info.mid))
            return info

        monkeypatch.setattr(client, "publish", recording)
        confirmed: list[int] = []
        for n in range(5):
            message = OutboundMessage(f"r/{n}", b"x", qos=1, correlation_data=b"%d" % n, response_topic="x/y")
            transport.publish(message, functools.partial(confirmed.append, n))
        assert [topic for topic, _ in handed] == ["r/0", "r/1"]
        assert len(client._out_messages) == 2  # not 5 MQTTMessage objects in paho

        async def puback(mid: int, wanted: int) -> None:
            transport._on_publish(client, None, mid, None, None)  # as loop_read() reports a PUBACK
            for _ in range(100):  # loop turns, not time: outside loop_read() it is handled at once
                if len(confirmed) >= wanted:
                    return
                await asyncio.sleep(0)
            raise AssertionError(f"confirmations: {confirmed}")

        await puback(handed[1][1], 1)  # out of order: the window frees a slot all the same
        assert confirmed == [1]
        assert [topic for topic, _ in handed] == ["r/0", "r/1", "r/2"]
        drained = asyncio.ensure_future(transport.drain(scaled(10.0)))
        for wanted, k in enumerate((0, 2, 3, 4), start=2):
            await puback(handed[k][1], wanted)
        assert confirmed == [1, 0, 2, 3, 4]
        assert [topic for topic, _ in handed] == ["r/0", "r/1", "r/2", "r/3", "r/4"]
        await asyncio.wait_for(drained, scaled(10.0))

    asyncio.run(scenario())


def test_qos0_and_refused_publishes_are_confirmed_at_once() -> None:
    async def scenario() -> None:
        transport = PahoTransport(ConnectOptions(host="127.0.0.1", port=1883, client_id="qos0-test", max_inflight=1))
        transport._loop = asyncio.get_running_loop()
        confirmed: list[str] = []
        transport.publish(OutboundMessage("r/a", b"x", qos=1), lambda: confirmed.append("a"))
        transport.publish(OutboundMessage("r/b", b"x", qos=0), lambda: confirmed.append("b"))  # not windowed
        assert confirmed == ["b"]
        with pytest.raises(ValueError):
            transport.publish(OutboundMessage("r/+", b"x", qos=0))  # paho refuses wildcards: the caller hears it
        await transport.drain(0.01)  # r/a is never acknowledged: drain gives up after its timeout

    asyncio.run(scenario())


def test_a_large_backlog_is_counted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(paho_transport, "BACKLOG_WARNING", 4)

    async def scenario() -> None:
        transport = PahoTransport(ConnectOptions(host="127.0.0.1", port=1883, client_id="backlog-test", max_inflight=2))
        transport._loop = asyncio.get_running_loop()
        for n in range(9):  # 2 in flight (paho keeps them until connected), 7 waiting
            transport.publish(OutboundMessage(f"r/{n}", b"x", qos=1))
        assert transport.outbound_backlog == 9

    with caplog.at_level(logging.WARNING, logger="gateway.transport.paho"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "paho cannot keep up" in r.getMessage()]
    assert warnings == ["4 replies wait to be sent: paho cannot keep up with this load (the fast transport, for MQTT 5,"
                        " can); they are kept, memory grows with them (roost_outbound_backlog)"]  # fmt: skip
