"""Two gateways in one share group: the broker splits the requests, and one takes over when the other dies.

Absence is proven by order, not by waiting a while: an inline gateway answers its requests in the order
it got them, one connection carries its replies in that order, and the broker hands them on in that
order. So once a gateway has answered a marker request sent after some requests, it has answered every
one of them it was given; one it was not given went to the other gateway.
"""

from __future__ import annotations

import functools
import queue
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable

import msgpack
import pytest

from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe, reply_topic_for
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.slow  # two gateways in a share group, one killed

WHERE = "devices/d1/where"  # answers the pid of the process that ran it: with the inline executor, the gateway's


class Replies:
    """Every reply on one topic, by correlation data, duplicates kept."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.topic = reply_topic_for("d1")
        self.by_request: dict[bytes, list[int]] = defaultdict(list)
        self._markers = 0
        self.last_markers: list[bytes] = []
        probe.subscribe(self.topic)

    def send(self, names: Iterable[bytes]) -> None:
        """Publish one ``where`` request per name (QoS 1)."""
        for name in names:
            self.probe.publish(WHERE, msgpack.packb({}), 1, response_topic=self.topic, correlation_data=name)

    def take_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """File replies until ``done()`` holds; fail after ``timeout`` base seconds."""
        limit = scaled(timeout)
        deadline = time.monotonic() + limit
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out after {limit:g} s waiting for {what}"
            try:
                message = self.probe.received.get(timeout=left)
            except queue.Empty:
                continue
            assert message.topic == self.topic and message.correlation_data is not None, message
            self.by_request[message.correlation_data].append(message.decoded()["result"])

    def answered(self, names: list[bytes]) -> bool:
        """Whether each of ``names`` has a reply."""
        return set(names) <= self.by_request.keys()

    def all_answered(self, names: list[bytes]) -> None:
        """Wait until each of ``names`` has a reply (nothing is lost while both gateways live)."""
        self.take_until(functools.partial(self.answered, names), 10, f"replies to {names[0]!r}…")

    def markers(self, count: int) -> list[bytes]:
        """Send ``count`` marker requests; their names."""
        names = [b"marker-%d" % (self._markers + n) for n in range(count)]
        self._markers += count
        self.last_markers = names
        self.send(names)
        return names

    def settle(self, pids: set[int]) -> None:
        """Send markers until each gateway in ``pids`` has answered one: all their earlier replies are in then."""
        seen: set[int] = set()
        for _ in range(20):  # the broker alternates: two markers reach both gateways
            [marker] = self.markers(1)
            self.take_until(functools.partial(self.answered, [marker]), 10, f"the reply to {marker!r}")
            seen.update(self.by_request[marker])
            if seen >= pids:
                return
        raise AssertionError(f"markers reached only {seen} of {pids}")

    def answered_in_full(self, names: list[bytes]) -> bool:
        """Send ``names`` and two markers; once either marker is answered, whether every name was.

        Only the survivor answers now. While the broker still counts the dead gateway in the group, it
        hands it every other request: one of the two markers reaches the survivor all the same.
        """
        self.send(names)
        markers = self.markers(2)
        self.take_until(lambda: any(m in self.by_request for m in markers), 10, f"a reply to {markers}")
        return self.answered(names)

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
    shared = [f"n{batch}-{i}".encode() for batch in range(10) for i in range(20)]
    for batch in range(10):
        names = shared[batch * 20 : (batch + 1) * 20]
        replies.send(names)
        replies.all_answered(names)
    replies.settle({first_pid, second_pid})  # a second answer to any of them would be in by now
    probe.nothing_else()
    assert replies.duplicates() == {}
    pids = [pid for name in shared for pid in replies.by_request[name]]
    assert set(pids) == {first_pid, second_pid}
    assert min(pids.count(first_pid), pids.count(second_pid)) >= 50  # the broker alternates

    # Mid-stream, the first gateway is killed (no DISCONNECT, no chance to hand anything back).
    killed_after = 5
    for batch in range(killed_after):
        names = [f"s{batch}-{i}".encode() for i in range(10)]
        replies.send(names)
        replies.all_answered(names)
    replies.send(f"s{killed_after}-{i}".encode() for i in range(10))  # some of these die with the first
    first.kill()
    # The takeover: requests sent before the broker has seen the dead connection may go to the dead
    # gateway and are lost. It must come right after the kill (the broker drops the dead member at once),
    # not whenever a stale session happens to expire (an hour by default): the bound is generous.
    batch = killed_after

    def next_batch_answered_in_full() -> bool:
        nonlocal batch
        batch += 1
        return replies.answered_in_full([f"s{batch}-{i}".encode() for i in range(10)])

    wait_for(next_batch_answered_in_full, 15, "a batch answered in full: the takeover")
    takeover = batch
    lost = [f"s{b}-{i}".encode() for b in range(killed_after, takeover) for i in range(10)]
    print(f"\ntakeover at batch {takeover}; {len(set(lost) - replies.by_request.keys())} requests lost to the kill")
    after: list[bytes] = []
    for batch in range(takeover, takeover + 30):
        names = [f"s{batch}-{i}".encode() for i in range(10)]
        if batch > takeover:
            assert replies.answered_in_full(names), f"batch {batch} (takeover at {takeover}) lost requests"
        after += names
    last = replies.last_markers  # only the survivor is left: both of the last two markers get answered
    replies.take_until(functools.partial(replies.answered, last), 10, "the last markers")
    probe.nothing_else()  # anything the survivor sent before them is in
    assert replies.duplicates() == {}
    assert {pid for name in after for pid in replies.by_request[name]} == {second_pid}
    assert second.stop() == 0
