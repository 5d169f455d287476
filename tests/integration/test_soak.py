"""A bounded soak: many devices, thousands of QoS 1 requests per second, a broker restart in the middle.

Every request must be answered (duplicates allowed, none missing): with its
correct result, or ``overloaded`` when the gateway could not keep up (counted
and printed, not a failure: it is the answer the protocol promises then). No
reply may be wrong, and the gateway's memory must stay flat across the restart: it is
measured just before the broker stops, once the bounded structures are full (the
durable queue's dedup index, here ``max_results`` = 5,000 entries, is full after a
tenth of the stream), and again when every request is answered.

Both transports are streamed at the same rate: the paho transport, once half the rate
(its network thread shared the GIL with the event loop), is now driven from the loop
and keeps up with 2,000/s on an idle machine. On a busy one each device holds back once
``WINDOW`` of its requests are unanswered, so the stream slows down rather than the
gateway's reply backlog (and memory) growing with the machine's load. About 25 s per
transport, nearly all of it the stream's own pacing (every wait below ends as soon as its
condition holds); marked ``slow`` (in ``make test``, not in ``make quick``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from gateway.cli.devbroker import LocalBroker
from tests.support.gateway_process import GatewayProcess
from tests.support.stream import StreamingDevice

DEVICES = 20
RATES = {"fast": 100.0, "paho": 100.0}  # per device: 2,000 requests per second in all
SECONDS = 25.0
MAX_RESULTS = 5_000
# Requests a device may have unanswered before it waits for answers. An idle machine never gets near
# it; a machine too busy to answer 2,000/s slows the stream down instead of piling replies up in the
# gateway, whose memory is checked below (the paho transport keeps every reply it cannot send yet).
WINDOW = 100


@pytest.fixture
def soak_broker() -> Iterator[LocalBroker]:
    running = LocalBroker().start()
    yield running
    running.cleanup()


@pytest.mark.slow
def test_soak_with_a_broker_restart_accounts_for_every_request(
    soak_broker: LocalBroker, logs: Path, transport: str
) -> None:
    # A smaller dedup index than the default 20,000, so it is full well before the restart.
    env = {"ROOST_DURABLE__MAX_RESULTS": str(MAX_RESULTS)}
    gateway = GatewayProcess(
        soak_broker.address, logs, "--transport", transport, "--executor", "inline", env=env
    ).start()
    assert gateway.process is not None
    memory = psutil.Process(gateway.process.pid)
    devices = [StreamingDevice(soak_broker.port) for _ in range(DEVICES)]
    rate = RATES[transport]
    per_device = int(rate * SECONDS)
    try:
        for k, device in enumerate(devices):

            def make(n: int, k: int = k, device: StreamingDevice = device) -> tuple[str, dict[str, Any]]:
                device.wait(functools.partial(_answered_up_to, device, n - WINDOW), 60, "answers within the window")
                return f"devices/soak{k}/add", {"a": n, "b": k}

            device.start(per_device, rate, make)
        lead = devices[0]
        lead.wait(lambda: lead.sent >= per_device // 2, 60, "half of the stream")
        warm = memory.memory_info().rss  # caches, arenas and the bounded dedup index are full
        soak_broker.stop()
        soak_broker.start()
        for device in devices:
            device.wait(functools.partial(_all_sent, device, per_device), SECONDS + 120, "the whole stream sent")
        for device in devices:
            device.wait(functools.partial(_all_answered, device, per_device), 60, "every request answered")
        end = memory.memory_info().rss
    finally:
        for device in devices:
            device.close()
        gateway.stop()
    duplicates = overloaded = 0
    for k, device in enumerate(devices):
        for n in range(per_device):
            replies = device.replies[n]
            assert replies, (k, n)
            for reply in replies:
                if reply != {"result": n + k}:
                    assert reply["error"]["code"] == "overloaded", (k, n, replies)
                    overloaded += 1
            duplicates += len(replies) - 1
    total = DEVICES * per_device
    print(
        f"\n{transport}: {total} requests, {overloaded} answered overloaded, {duplicates} duplicate replies,"
        f" RSS {warm / 1e6:.1f} → {end / 1e6:.1f} MB"
    )
    grown = end - warm
    assert grown < 16 * 1024 * 1024, f"gateway RSS grew {grown / 1e6:.1f} MB"


def _all_sent(device: StreamingDevice, count: int) -> bool:
    return device.sent == count


def _all_answered(device: StreamingDevice, count: int) -> bool:
    return device.answered == count


def _answered_up_to(device: StreamingDevice, count: int) -> bool:
    return device.answered >= count
