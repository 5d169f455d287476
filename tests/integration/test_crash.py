"""Crash tests on the real broker: kill -9 the gateway twice during a stream of QoS 1 requests.

The second kill hits the gateway while it works off the backlog the broker
queued during the first outage. A variant restarts the broker (persistence on)
as well. Every request must get a reply, no reply may be wrong, and the
non-idempotent function (``mark``, which appends to a file) may run at most
once per request. Duplicate replies (expected: only those in flight at a
crash) are counted and printed. One more run commits with an fsync each
(``durable.synchronous = "full"``: commits on the commit thread), on the fast
transport only: the durable queue is the same on both.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.devbroker import LocalBroker
from tests.support.gateway_process import GatewayProcess
from tests.support.stream import StreamingDevice
from tests.support.timeouts import scaled

pytestmark = pytest.mark.slow  # gateways and brokers killed and restarted mid-stream

FUNCS = ("--functions", "tests.integration.funcs")
TOTAL = 2000
RATE = 500.0


def check_replies(device: StreamingDevice, runs_file: Path) -> dict[str, int]:
    """Every request answered, nothing wrong, ``mark`` at most once; the counts of each outcome."""
    runs = collections.Counter(runs_file.read_text().split()) if runs_file.exists() else collections.Counter()
    assert max(runs.values(), default=0) <= 1, [token for token, count in runs.items() if count > 1][:10]
    missing = [n for n in range(TOTAL) if n not in device.replies]
    assert not missing, f"{len(missing)} requests got no reply, first {missing[:10]}"
    outcome = collections.Counter[str]()
    for n in range(TOTAL):
        replies = device.replies[n]
        assert all(reply == replies[0] for reply in replies), (n, replies)  # duplicates say the same
        reply: Any = replies[0]
        if n % 2 == 0:
            assert reply == {"result": 2 * n}, (n, reply)
            outcome["idempotent result"] += 1
        elif "result" in reply:
            assert reply == {"result": str(n)}, (n, reply)
            assert runs[str(n)] == 1, n
            outcome["mark result"] += 1
        else:
            # Interrupted by a crash: it may have run before it (once at most), it did not run again.
            assert reply["error"]["code"] == "unavailable", (n, reply)
            outcome["mark unavailable"] += 1
    outcome["duplicate replies"] = device.reply_count - TOTAL
    return dict(outcome)


def run_stream_with_crashes(
    broker: LocalBroker,
    logs: Path,
    transport: str,
    tmp_path: Path,
    restart_broker: bool,
    env: dict[str, str] | None = None,
) -> dict[str, int]:
    runs_file = tmp_path / "mark-runs.txt"

    def make(n: int) -> tuple[str, dict[str, Any]]:
        if n % 2 == 0:
            return f"devices/d{n % 7}/double", {"n": n}
        return f"devices/d{n % 7}/mark", {"path": str(runs_file), "token": str(n)}

    client_id = f"roost-crash-{uuid.uuid4().hex[:6]}"
    gateway = GatewayProcess(broker.address, logs, "--transport", transport, *FUNCS, client_id=client_id, env=env)
    gateway.start()
    device = StreamingDevice(broker.port)
    try:
        device.start(TOTAL, RATE, make)
        device.wait(lambda: device.answered >= 300, 30, "300 replies")
        gateway.kill()  # 1: during the stream
        killed_at = device.sent
        device.wait(lambda: device.sent >= killed_at + 400, 30, "a backlog of 400 requests at the broker")
        answered = device.answered
        gateway.start()
        device.wait(lambda: device.answered > answered, 30, "the first reply from the backlog")
        gateway.kill()  # 2: while the backlog is worked off
        gateway.start()
        if restart_broker:
            device.wait(lambda: device.sent >= TOTAL * 3 // 4, 30, "three quarters sent")
            broker.stop()
            broker.start()
        device.wait(lambda: device.sent == TOTAL, 60, "the whole stream sent")
        try:
            device.wait(lambda: device.answered == TOTAL, 60, "every request answered")
        except AssertionError:
            missing = [n for n in range(TOTAL) if n not in device.replies]
            raise AssertionError(f"no reply to {missing[:20]}; gateway log {gateway.log_path}") from None
        outcome = check_replies(device, runs_file)
    finally:
        device.close()
        gateway.kill()
    print(f"\n{transport}, broker restart {restart_broker}, env {env or {}}: {outcome}")
    return outcome


def test_two_gateway_crashes_lose_nothing_and_run_nothing_twice(
    broker: LocalBroker, logs: Path, transport: str, tmp_path: Path
) -> None:
    outcome = run_stream_with_crashes(broker, logs, transport, tmp_path, restart_broker=False)
    assert outcome["idempotent result"] == TOTAL // 2


def test_two_gateway_crashes_lose_nothing_with_an_fsync_per_commit(
    broker: LocalBroker, logs: Path, tmp_path: Path
) -> None:
    full = {"ROOST_DURABLE__SYNCHRONOUS": "full"}
    outcome = run_stream_with_crashes(broker, logs, "fast", tmp_path, restart_broker=False, env=full)
    assert outcome["idempotent result"] == TOTAL // 2


@pytest.fixture
def own_broker() -> Iterator[Callable[[], LocalBroker]]:
    started: list[LocalBroker] = []

    def start() -> LocalBroker:
        running = LocalBroker().start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
        running.cleanup()


def test_crashes_and_a_broker_restart_lose_nothing(
    own_broker: Callable[[], LocalBroker], logs: Path, transport: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    outcome = run_stream_with_crashes(own_broker(), logs, transport, tmp_path, restart_broker=True)
    assert outcome["idempotent result"] == TOTAL // 2
    # No stall in the recovery (a reconnect backoff grown to minutes, say): a generous bound, ~25x an idle run.
    assert time.monotonic() - started < scaled(120)
