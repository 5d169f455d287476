"""A hostile-device soak (issue 15, item 9): three devices run every attack at once while B calls ``add``.

The production set-up: mosquitto on deploy/mosquitto.conf with the ``roost acl --format dynsec`` file
(test_security.py), one gateway on deploy/roost.toml in the share group ``auto``, logged in as ``roost``,
serving the example functions (deploy/roost.toml lists none: an operator lists theirs).
Two settings differ: ``limits.device_rate`` is 60 a second instead of 5, so that B's own 50 calls a second
are within its rate (the attackers send far more than either), and the shutdown grace is 1 s, not 10 (the
restart need not wait for an attacker's 25-second call).

For ``SECONDS``, devices A1, A2 and A3 each send, in turn, everything tests/integration/test_hostile.py
and the other hostile tests send one at a time: reply topics mosquitto refuses (in ``$rt`` and as the
Response Topic), retained requests, Correlation Data over the cap and fresh 1 KiB ids (the duplicate
index), a reused id with other arguments, payloads over the gateway's limit and over the packet size it
announces, calls of the 30-second ``slow`` function, unknown functions, bad msgpack and reply topics in
B's space; and they try to subscribe to the gateways' share group and to the request topics. Meanwhile 64
idle connections sit on the operations endpoint (twice its cap).

B calls ``add`` at ``RATE`` a second throughout. Every one of its calls must be answered correctly within
``IN_TIME`` (scaled); the gateway's RSS may grow by at most ``RSS_BOUND`` over its warm baseline, and the
durable queue's file (database and write-ahead log) stay under ``QUEUE_BOUND``; the broker never ends
the gateway's connection; every subscription of an attacker is refused; and after a restart of the
gateway on the same durable file B is answered at once. About 40 s: marked ``slow``.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import psutil
import pytest

from gateway.config import derived_share_group
from tests.integration.test_hostile import AS_PROPERTY, POISON
from tests.integration.test_operations import metrics_env
from tests.integration.test_security import USERS, SecureBroker, refused, secure_broker
from tests.support.gateway_process import EXAMPLES, ROOT, GatewayProcess, queue_bytes
from tests.support.ops import scrape, value
from tests.support.probe import Probe
from tests.support.stream import StreamingDevice
from tests.support.timeouts import scaled

pytestmark = pytest.mark.slow

SECONDS = 30.0
RATE = 50.0  # B's calls a second
ATTACKERS = ("A1", "A2", "A3")
ATTACK_INTERVAL = 0.01  # each attacker sends at most 100 messages a second (it waits for each PUBACK)
IN_TIME = 2.0  # base seconds from B's request to its reply
RSS_BOUND = 48 << 20
QUEUE_BOUND = 32 << 20
IDLE_CONNECTIONS = 64


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    """The production broker, for this module alone (its gateway is in a share group)."""
    with secure_broker() as running:
        yield running


@dataclass
class Attacker:
    """One hostile device: a connection, what it sent, and the subscriptions the broker granted it."""

    name: str
    probe: Probe
    sent: int = 0
    granted: list[str] = field(default_factory=list)
    failure: BaseException | None = None


Attack = tuple[str, bytes, dict[str, object]]
"""(topic, payload, publish options); a topic of "" is a subscription."""


def attacks(name: str, group: str) -> list[Attack]:
    """Every attack of one device."""
    own = f"devices/{name}"
    out: list[Attack] = []
    for kind, topic in POISON.items():  # reply topics that would cost the gateway its connection
        out.append((f"{own}/add", msgpack.packb({"a": 1, "b": 2, "$rt": topic, "$cid": kind}), {}))
        if kind in AS_PROPERTY:  # the others cost the *device* its connection, at the broker
            out.append((f"{own}/add", msgpack.packb({"a": 1, "b": 2}), {"response_topic": topic}))
    reply_to: dict[str, object] = {"response_topic": f"roost/replies/{name}/x"}
    out += [
        (f"{own}/fail", msgpack.packb({"reason": "retained"}), {"retain": True, **reply_to}),
        (f"{own}/add", msgpack.packb({"a": 1, "b": 1}), {"correlation_data": b"c" * 60 * 1024, **reply_to}),
        (f"{own}/add", msgpack.packb({"a": 1, "b": 1}), {"correlation_data": b"fresh", **reply_to}),  # made unique
        (f"{own}/echo", msgpack.packb({"value": "reused"}), {"correlation_data": b"1", **reply_to}),
        (f"{own}/echo", msgpack.packb({"value": b"x" * (300 << 10)}), reply_to),  # over max_payload_bytes
        (f"{own}/echo", msgpack.packb({"value": b"x" * (400 << 10)}), reply_to),  # over the announced packet size
        (f"{own}/slow", msgpack.packb({"seconds": 25}), reply_to),
        (f"{own}/nothing", msgpack.packb({}), reply_to),
        (f"{own}/add", b"\xc1", reply_to),
        (f"{own}/add", msgpack.packb({"a": 1, "b": 1}), {"response_topic": "roost/replies/B/x"}),
        ("", b"", {"subscribe": f"$share/{group}/devices/+/#"}),
        ("", b"", {"subscribe": "devices/+/#"}),
    ]
    return out


def attack(attacker: Attacker, group: str, until: float, stop: threading.Event) -> None:
    """Send every attack in turn until ``until`` (bounded in count too), pacing by ``ATTACK_INTERVAL``."""
    plan = attacks(attacker.name, group)
    started = time.monotonic()
    try:
        for n in range(int(SECONDS / ATTACK_INTERVAL)):
            if stop.is_set() or time.monotonic() >= until:
                return
            topic, payload, options = plan[n % len(plan)]
            if "subscribe" in options:
                subscription = str(options["subscribe"])
                if not refused(attacker.probe, subscription):
                    attacker.granted.append(subscription)
            else:
                correlation = options.get("correlation_data")
                if correlation == b"fresh":
                    correlation = uuid.uuid4().bytes * 64  # 1 KiB, the cap: a new entry in the duplicate index
                attacker.probe.publish(
                    topic,
                    payload,
                    response_topic=options.get("response_topic"),  # type: ignore[arg-type]
                    correlation_data=correlation,  # type: ignore[arg-type]
                    retain=bool(options.get("retain", False)),
                )
            attacker.sent = n + 1
            # Pacing (not synchronisation): message n leaves at its slot on the schedule.
            delay = started + (n + 1) * ATTACK_INTERVAL - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    except BaseException as exc:  # reported by the test, not lost in the thread
        attacker.failure = exc


@dataclass
class Peak:
    """The gateway's largest RSS and queue file seen while sampling."""

    rss: int = 0
    queue: int = 0


def sample(memory: psutil.Process, queue: Path, peak: Peak, stop: threading.Event) -> None:
    """Record peaks every 0.2 s until ``stop`` (bounded by the soak's length)."""
    for _ in range(int((SECONDS + 60) / 0.2)):
        peak.rss = max(peak.rss, memory.memory_info().rss)
        peak.queue = max(peak.queue, queue_bytes(queue))
        if stop.wait(0.2):
            return


def test_three_hostile_devices_at_once_and_b_is_answered_in_time_within_bounds(
    secure: SecureBroker, logs: Path, free_port: int
) -> None:
    port = secure.broker.port
    env = {
        **metrics_env(free_port),
        "ROOST_PASSWORD": USERS["roost"],
        "ROOST_LIMITS__DEVICE_RATE": "60",  # B's 50 a second are within it; deploy/roost.toml has 5
        "ROOST_SHUTDOWN_GRACE": "1",  # not 10: the stop need not wait for the attackers' slow calls
    }
    config = ("--config", str(ROOT / "deploy" / "roost.toml"), "--share-group", "auto", *EXAMPLES)
    gateway = GatewayProcess(f"127.0.0.1:{port}", logs, *config, env=env).start()
    try:
        attack_and_check(gateway, port, free_port)
    finally:
        gateway.kill()  # nothing left running when an assertion ended the test early (a no-op once stopped)
        for name in ATTACKERS:  # clear the retained requests
            cleaner = Probe(port, username=name, password=USERS[name])
            cleaner.publish(f"devices/{name}/fail", b"", retain=True)
            cleaner.close()


def attack_and_check(gateway: GatewayProcess, port: int, free_port: int) -> None:
    """The soak against the started ``gateway``, its checks, and a restart of it (the module docstring)."""
    assert gateway.process is not None
    memory = psutil.Process(gateway.process.pid)
    queue = Path(gateway.env["ROOST_DURABLE__PATH"])
    group = derived_share_group(USERS["roost"])
    b = StreamingDevice(port, username="B", password=USERS["B"])
    attackers = [Attacker(name, Probe(port, username=name, password=USERS[name])) for name in ATTACKERS]
    idle = [socket.create_connection(("127.0.0.1", free_port), timeout=scaled(5)) for _ in range(IDLE_CONNECTIONS)]
    stop = threading.Event()
    peak = Peak()
    threads: list[threading.Thread] = []
    count = int(SECONDS * RATE)
    try:
        # Warm: every code path of B's calls has run, and the baseline is taken after it.
        b.start(20, RATE, lambda n: ("devices/B/add", {"a": n, "b": 1}))
        b.wait(lambda: b.answered == 20, 30, "B's warm-up calls")
        baseline_rss, baseline_queue = memory.memory_info().rss, queue_bytes(queue)
        b.close()
        b = StreamingDevice(port, username="B", password=USERS["B"])
        until = time.monotonic() + SECONDS
        threads = [threading.Thread(target=attack, args=(a, group, until, stop), daemon=True) for a in attackers]
        threads.append(threading.Thread(target=sample, args=(memory, queue, peak, stop), daemon=True))
        for thread in threads:
            thread.start()
        b.start(count, RATE, lambda n: ("devices/B/add", {"a": n, "b": 1}))
        b.wait(lambda: b.sent == count, SECONDS + 60, "B's calls sent")
        b.wait(lambda: b.answered == count, 30, "B's calls answered")
        stop.set()
        for thread in threads:
            thread.join(scaled(30))
        samples = scrape(free_port)
    finally:
        stop.set()
        for sock in idle:
            sock.close()
        for attacker in attackers:
            attacker.probe.close()
        b.close()

    late = {n: b.first_reply_at[n] - b.sent_at[n] for n in range(count)}
    wrong = {n: replies for n, replies in b.replies.items() if replies[0] != {"result": n + 1}}
    slowest = max(late.values())
    ordered = sorted(late.values())
    print(
        f"\nhostile soak: B {count} calls, median {ordered[count // 2] * 1e3:.1f} ms, p99"
        f" {ordered[int(count * 0.99)] * 1e3:.1f} ms, max {slowest * 1e3:.1f} ms; attackers sent"
        f" {[a.sent for a in attackers]}; gateway RSS {baseline_rss / 1e6:.1f} → peak {peak.rss / 1e6:.1f} MB,"
        f" queue file {baseline_queue / 1e6:.2f} → peak {peak.queue / 1e6:.2f} MB"
    )
    for attacker in attackers:
        assert attacker.failure is None, f"{attacker.name}: {attacker.failure!r}"
        assert attacker.granted == [], f"{attacker.name} was granted {attacker.granted}"
        assert attacker.sent >= SECONDS / ATTACK_INTERVAL / 10, f"{attacker.name} sent only {attacker.sent}"
    assert wrong == {}
    assert slowest <= scaled(IN_TIME), f"B's slowest call took {slowest:.2f} s"
    assert peak.rss - baseline_rss <= RSS_BOUND, f"RSS grew {(peak.rss - baseline_rss) / 1e6:.1f} MB"
    assert peak.queue <= QUEUE_BOUND, f"the queue file reached {peak.queue / 1e6:.1f} MB"
    # The attacks reached the gateway and were refused there (not only by the broker).
    assert value(samples, "roost_requests_dropped_total", reason="retained") > 0
    limited = sum(v for (name, labels), v in samples.items()
                  if name == "roost_requests_total" and ("outcome", "rate_limited") in labels)  # fmt: skip
    assert limited > 0
    assert value(samples, "roost_broker_reconnects_total") == 0  # never thrown off the broker

    # Nothing the attackers left in the durable file, or retained at the broker, is poison for the next start.
    assert gateway.stop() == 0
    gateway.start()
    try:
        after = Probe(port, username="B", password=USERS["B"])
        try:
            assert after.request("devices/B/add", {"a": 2, "b": 2}) == {"result": 4}
        finally:
            after.close()
        assert value(scrape(free_port), "roost_broker_reconnects_total") == 0
        assert value(scrape(free_port), "roost_requests_dropped_total", reason="retained") == 0  # none handed over
    finally:
        assert gateway.stop() == 0
