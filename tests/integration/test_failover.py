"""Two gateways in one share group: the broker splits the requests, and one takes over when the other dies."""

from __future__ import annotations

import queue
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import msgpack

from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe, reply_topic_for

WHERE = "devices/d1/where"  # answers the pid of the process that ran it: with the inline executor, the gateway's


class Replies:
    """Every reply on one topic, by correlation data, duplicates kept."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.topic = reply_topic_for("d1")
        self.by_request: dict[bytes, list[int]] = defaultdict(list)
        probe.subscribe(self.topic)

    def send(self, names: list[bytes]) -> None:
        """Publish one ``where`` request per name (QoS 1)."""
        for name in names:
            self.probe.publish(WHERE, msgpack.packb({}), 1, response_topic=self.topic, correlation_data=name)

    def collect(self, names: list[bytes], timeout: float) -> set[bytes]:
        """Take replies until each of ``names`` has one or ``timeout`` passes; the names answered."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while not wanted.issubset(self.by_request) and (left := deadline - time.monotonic()) > 0:
            try:
                message = self.probe.received.get(timeout=left)
            except queue.Empty:
                break
            if message.topic == self.topic and message.correlation_data is not None:
                self.by_request[message.correlation_data].append(message.decoded()["result"])
        return wanted & set(self.by_request)

    def duplicates(self) -> dict[bytes, list[int]]:
        """Requests answered more than once."""
        return {name: pids for name, pids in self.by_request.items() if len(pids) > 1}


def test_two_gateways_share_the_load_and_one_takes_over_when_the_other_is_killed(
    start_gateway: Callable[..., GatewayProcess], probe: Probe
) -> None:
    group = f"roost-{uuid.uuid4().hex[:6]}"
    flags = ("--share-group", group, "--executor", "inline", "--functions", "tests.integration.funcs")
    first = start_gateway(*flags)
    second = start_gateway(*flags)
    assert first.process is not None and second.process is not None
    first_pid, second_pid = first.process.pid, second.process.pid
    replies = Replies(probe)

    # Normal operation: every request is answered exactly once, and both gateways take a share.
    for batch in range(10):
        names = [f"n{batch}-{i}".encode() for i in range(20)]
        replies.send(names)
        assert replies.collect(names, 10) == set(names)
    probe.expect_nothing(0.5)  # a second answer to any of them would arrive about now
    assert replies.duplicates() == {}
    pids = [pid for answered in replies.by_request.values() for pid in answered]
    assert set(pids) == {first_pid, second_pid}
    assert min(pids.count(first_pid), pids.count(second_pid)) >= 50  # the broker alternates

    # Mid-stream, the first gateway is killed (no DISCONNECT, no chance to hand anything back).
    batches = 40
    killed_after = 5
    complete: list[bool] = []
    for batch in range(batches):
        names = [f"s{batch}-{i}".encode() for i in range(10)]
        replies.send(names)
        if batch == killed_after:
            first.kill()
        complete.append(replies.collect(names, 2.0 if batch >= killed_after else 10.0) == set(names))
    assert all(complete[:killed_after]), complete
    # The takeover: from some batch on, every request is answered. It must come right after the kill
    # (the broker drops the dead member at once), not whenever a stale session happens to expire.
    takeover = max([killed_after + 1, *(i + 1 for i, ok in enumerate(complete) if not ok)])
    assert takeover <= killed_after + 2, complete
    after = [f"s{batch}-{i}".encode() for batch in range(takeover, batches) for i in range(10)]
    assert len(after) >= 300
    probe.expect_nothing(0.5)
    assert replies.duplicates() == {}
    assert {pid for name in after for pid in replies.by_request[name]} == {second_pid}
    assert second.stop() == 0
