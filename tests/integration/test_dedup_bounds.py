"""Long correlation ids on the real broker: the gateway's memory and its queue file stay bounded (issue 15, item 3).

A device sends 1,000 QoS 1 requests, each with 60 KiB of MQTT 5 Correlation Data, to a real
gateway process (the fast transport, the default for MQTT 5; production defaults but
``durable.result_ttl`` = 1 s). Each is stored before it is parsed, then answered ``bad_payload``
(over ``limits.max_correlation_bytes``, 1 KiB) without the 60 KiB echoed back. The gateway's
resident memory may grow by less than 20 MB, and once the rows are pruned the queue file and
its WAL must shrink back to within 10 MB of the empty file. Before, the same 1,000 requests
cost +228 MB of memory and +324 MB of file that never shrank.

Not on the paho transport: there the queue file also shrinks (to 1 MB from 34-41 MB), but
the resident memory grew 2-30 MB over three runs, because paho hands over up to the broker's
in-flight window (1,000 requests of 60 KiB) at once, whatever their correlation data: a
matter of that transport's flow control, not of the duplicate index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest

from gateway.cli.devbroker import LocalBroker
from tests.support.gateway_process import GatewayProcess, queue_bytes
from tests.support.probe import Probe, reply_topic_for
from tests.support.stream import reply_properties
from tests.support.timeouts import wait_for

REQUESTS = 1000
MB = 1024 * 1024


@pytest.fixture
def device(broker: LocalBroker) -> Iterator[Probe]:
    client = Probe(broker.port)
    yield client
    client.close()


@pytest.mark.slow
def test_a_thousand_requests_with_60_kib_correlation_data_leave_memory_and_the_file_bounded(
    broker: LocalBroker, logs: Path, device: Probe
) -> None:
    env = {"ROOST_DURABLE__RESULT_TTL": "1"}
    gateway = GatewayProcess(broker.address, logs, "--executor", "inline", "--transport", "fast", env=env).start()
    queue = Path(gateway.env["ROOST_DURABLE__PATH"])
    try:
        assert gateway.process is not None
        memory = psutil.Process(gateway.process.pid)
        reply_topic = reply_topic_for("d1")
        device.subscribe(reply_topic)
        empty = queue_bytes(queue)

        def send(first: int, count: int) -> None:
            for n in range(first, first + count):
                props = reply_properties(reply_topic, n)
                props.CorrelationData = n.to_bytes(4, "big") * (15 * 1024)  # 60 KiB, one per request
                device.client.publish("devices/d1/add", msgpack.packb({"a": n, "b": 1}), qos=1, properties=props)
            for _ in range(count):
                reply = device.wait_for(reply_topic, timeout=30)
                assert reply.correlation_data is None  # not carried back
                error = reply.decoded()["error"]
                assert (error["code"], error["message"]) == (
                    "bad_payload",
                    "Correlation Data is 61440 bytes, over the limit of 1024",
                )

        send(0, 50)  # warm up: imports on first use, allocator arenas, sqlite's page cache
        before = memory.memory_info().rss
        send(50, REQUESTS)
        grown = queue_bytes(queue)
        after = memory.memory_info().rss
        wait_for(lambda: queue_bytes(queue) < empty + 10 * MB, 30, "the queue file to shrink after pruning")
        pruned = queue_bytes(queue)
        after = max(after, memory.memory_info().rss)
        print(
            f"RSS {before / MB:.1f} → {after / MB:.1f} MB; "
            f"queue {empty / MB:.2f} → {grown / MB:.1f} → {pruned / MB:.2f} MB"
        )
        assert after - before < 20 * MB, f"RSS grew by {(after - before) / MB:.1f} MB"
    finally:
        assert gateway.stop() == 0
