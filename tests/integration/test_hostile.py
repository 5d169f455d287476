"""Hostile devices: nothing one device sends can take the gateway offline for the others (issue 15).

Device A has valid credentials and sends what mosquitto itself refuses as a topic, as the
reply topic of its requests; it also publishes retained requests. Device B must be answered
throughout, and across a restart of the gateway.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli.devbroker import LocalBroker, base_config
from gateway.transport import ConnectOptions, OutboundMessage, create_transport
from gateway.transport.base import MAX_STRIKES
from tests.integration.test_operations import metrics_env
from tests.support.gateway_process import GatewayProcess, queue_bytes
from tests.support.ops import scrape, value
from tests.support.probe import Probe
from tests.support.stream import reply_properties
from tests.support.timeouts import scaled, until

FUNCS = ("--functions", "functions.examples", "--functions", "tests.integration.funcs")

POISON = {
    "a C0 control": "roost/replies/A/\x01",
    "a C1 control": "roost/replies/A/\x85",
    "a non-character": "roost/replies/A/\uffff",
    "300 levels": "roost/replies/A/" + "/".join(["x"] * 300),
}
"""Reply topics in A's own reply space that mosquitto refuses: a PUBLISH there costs the publisher its connection."""
AS_PROPERTY = {"300 levels"}
"""Of those, the ones mosquitto passes on as a Response Topic (it checks the others' UTF-8 there too)."""


def publish_once(broker: LocalBroker, topic: str, response_topic: str | None = None) -> bool:
    """Publish once at QoS 1 on a connection of its own; whether mosquitto acknowledged it (else it disconnected us)."""
    outcome: list[str] = []
    settled = threading.Event()

    def settle(what: str) -> None:
        outcome.append(what)
        settled.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"poison-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.on_disconnect = lambda *args: settle("disconnected")
    client.on_publish = lambda *args: settle("acknowledged")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        properties = reply_properties(response_topic, 0) if response_topic is not None else None
        client.publish(topic, b"x", qos=1, properties=properties)
        assert settled.wait(scaled(10)), "neither a PUBACK nor a disconnection"
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0] == "acknowledged"


@pytest.mark.parametrize("name", sorted(POISON))
def test_the_broker_itself_refuses_each_poison_topic(broker: LocalBroker, name: str) -> None:
    """The premise: publishing there gets a client disconnected, so the gateway must never do it; and which of
    them mosquitto lets a device hand over as a Response Topic."""
    assert not publish_once(broker, POISON[name]), f"mosquitto took a publish to a topic with {name}"
    assert publish_once(broker, "hostile/premise", response_topic=POISON[name]) == (name in AS_PROPERTY)


@pytest.fixture
def devices(broker: LocalBroker) -> Iterator[tuple[Probe, Probe]]:
    """Devices A (the attacker, listening on its reply space and dead letters) and B."""
    a, b = Probe(broker.port), Probe(broker.port)
    a.subscribe("roost/replies/A/#")
    a.subscribe("roost/dead/A")
    yield a, b
    a.close()
    b.close()


def hostile_gateway(broker: LocalBroker, logs: Path, transport: str, mqtt_version: str, port: int) -> GatewayProcess:
    flags = ("--transport", transport, "--mqtt-version", mqtt_version, "--executor", "inline", *FUNCS)
    return GatewayProcess(broker.address, logs, *flags, client_id=f"hostile-{uuid.uuid4().hex[:8]}",
                          env=metrics_env(port))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["fast", "paho"])
def test_poison_reply_topics_are_refused_and_b_is_answered_throughout_and_after_a_restart(
    broker: LocalBroker, logs: Path, devices: tuple[Probe, Probe], transport: str, free_port: int
) -> None:
    a, b = devices
    gateway = hostile_gateway(broker, logs, transport, "5", free_port).start()
    try:
        for name, topic in POISON.items():
            # In $rt (the 3.1.1 convention): bad_payload, on A's default reply topic, with its $cid.
            a.publish("devices/A/add", msgpack.packb({"a": 1, "b": 2, "$cid": name, "$rt": topic}))
            reply = a.wait_for("roost/replies/A").decoded()
            assert reply["$cid"] == name and reply["error"]["code"] == "bad_payload", reply
            assert reply["error"]["message"].startswith("$rt is not a topic the broker accepts: it "), reply
            if name in AS_PROPERTY:  # as the MQTT 5 Response Topic: nowhere to answer, so a dead letter says why
                a.publish("devices/A/add", msgpack.packb({"a": 1, "b": 2}), response_topic=topic, correlation_data=b"c")
                letter = a.wait_for("roost/dead/A").decoded()
                assert letter["topic"] == "devices/A/add" and letter["error"]["code"] == "bad_payload", letter
                why = "is not a topic the broker accepts: it has 303 levels, over the limit of 32"
                assert why in letter["error"]["message"], letter
            assert b.request("devices/B/add", {"a": 1, "b": 1}) == {"result": 2}
        assert value(scrape(free_port), "roost_broker_reconnects_total") == 0  # never thrown off the broker
        assert gateway.stop() == 0
        gateway.start()  # the same identity and durable queue: nothing stored is poison
        assert b.request("devices/B/add", {"a": 2, "b": 2}) == {"result": 4}
        assert value(scrape(free_port), "roost_broker_reconnects_total") == 0
    finally:
        gateway.kill()
    a.nothing_else()


@pytest.mark.slow
@pytest.mark.parametrize(("transport", "mqtt_version"), [("fast", "5"), ("paho", "5"), ("paho", "3.1.1")])
def test_a_retained_request_is_refused_and_never_run_again(
    broker: LocalBroker,
    logs: Path,
    devices: tuple[Probe, Probe],
    transport: str,
    mqtt_version: str,
    free_port: int,
    tmp_path: Path,
) -> None:
    a, b = devices
    ran = tmp_path / "ran"
    gateway = hostile_gateway(broker, logs, transport, mqtt_version, free_port).start()
    try:
        a.publish("devices/A/mark", msgpack.packb({"path": str(ran), "token": "x", "$cid": "r"}), retain=True)
        if mqtt_version == "5":  # the subscription keeps the retain flag of a live message: refused at once
            letter = a.wait_for("roost/dead/A").decoded()
            refused = {"code": "bad_payload", "message": "requests must not be retained: it was not run"}
            assert letter["error"] == refused
            assert value(scrape(free_port), "roost_requests_dropped_total", reason="retained") == 1
        else:  # MQTT 3.1.1 clears the flag on a live message: that one delivery cannot be told apart, and runs
            assert a.wait_for("roost/replies/A").decoded() == {"result": "x", "$cid": "r"}
        assert gateway.stop() == 0
        gateway.start()  # mosquitto still holds the retained request
        # B's request is taken after anything handed over on subscribing, and handled in order.
        b.subscribe("roost/replies/B")
        b.publish("devices/B/add", msgpack.packb({"a": 1, "b": 1, "$cid": "m"}))  # understood on 3.1.1 too
        assert b.wait_for("roost/replies/B").decoded() == {"result": 2, "$cid": "m"}
        # MQTT 5 asks the broker not to hand retained messages over; on 3.1.1 it comes, flagged, and is refused.
        expected = 0 if mqtt_version == "5" else 1
        assert value(scrape(free_port), "roost_requests_dropped_total", reason="retained") == expected
        runs = ran.read_text().splitlines() if ran.exists() else []
        assert runs == ([] if mqtt_version == "5" else ["x"])  # and never again, whatever the version
    finally:
        a.publish("devices/A/mark", b"", retain=True)  # clear it: the session broker is shared
        gateway.kill()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fast", "paho"])
@pytest.mark.parametrize("session_expiry", [60, 0])
def test_a_publish_the_broker_keeps_refusing_is_given_up_after_three_tries(
    broker: LocalBroker, probe: Probe, kind: str, session_expiry: int
) -> None:
    """The safety net under the validation: the transport itself, made to publish a poison topic, stops resending
    it after MAX_STRIKES connections the broker ended, and goes on serving; whether the broker kept the session
    (the publish is resent) or forgot it (session expiry 0, as with a share group: published again as new)."""
    probe.subscribe("hostile/after")
    given_up: list[tuple[str, str]] = []

    async def scenario() -> None:
        client_id = f"strikes-{uuid.uuid4().hex[:8]}"
        options = ConnectOptions("127.0.0.1", broker.port, client_id, session_expiry=session_expiry)
        transport = create_transport(kind, options)
        transport.on_given_up = lambda message, why: given_up.append((message.topic, why))
        await transport.connect(scaled(10))
        try:
            transport.publish(OutboundMessage(POISON["a C0 control"], b"poison", qos=1))
            await until(lambda: given_up, 30, "the poison publish to be given up")
            await until(lambda: transport.link.connected, 30, "the transport to be connected again")
            assert transport.link.connects == MAX_STRIKES + 1  # a connection per try, and one more to go on
            transport.publish(OutboundMessage("hostile/after", b"fine", qos=1))
            await transport.drain(scaled(10))
        finally:
            await transport.close()

    asyncio.run(asyncio.wait_for(scenario(), scaled(60)))
    why = f"the broker ended the connection {MAX_STRIKES} times while it was unacknowledged"
    assert given_up == [(POISON["a C0 control"], why)]
    assert probe.wait_for("hostile/after").payload == b"fine"


@pytest.fixture
def small_packet_broker() -> Iterator[LocalBroker]:
    """A broker that takes packets of at most 4 KiB (and says so in its CONNACK)."""
    running = LocalBroker(extra_config="max_packet_size 4096\n").start()
    yield running
    running.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["fast", "paho"])
def test_a_reply_too_large_for_the_broker_becomes_a_small_bad_result_and_a_dead_letter(
    small_packet_broker: LocalBroker, logs: Path, transport: str, free_port: int
) -> None:
    gateway = hostile_gateway(small_packet_broker, logs, transport, "5", free_port).start()
    a, b = Probe(small_packet_broker.port), Probe(small_packet_broker.port)
    try:
        a.subscribe("roost/dead/A")
        reply = a.request("devices/A/big", {"size": 10_000})
        size = len(msgpack.packb({"result": b"x" * 10_000}))
        message = f"the reply is {size} bytes, over the broker's limit of 4096 bytes a packet"
        assert reply == {"error": {"code": "bad_result", "message": message}}
        letter = a.wait_for("roost/dead/A").decoded()
        assert letter["topic"] == "devices/A/big" and letter["error"]["message"] == message, letter
        assert a.request("devices/A/big", {"size": 3_000}) == {"result": b"x" * 3_000}  # within the limit
        assert b.request("devices/B/add", {"a": 1, "b": 1}) == {"result": 2}
        assert value(scrape(free_port), "roost_broker_reconnects_total") == 0
    finally:
        a.close()
        b.close()
        gateway.kill()


@pytest.fixture
def unlimited_broker() -> Iterator[LocalBroker]:
    """A broker with no packet limit of its own, so a huge request reaches it (the gateway's limit must hold)."""
    base = "\n".join(line for line in base_config().splitlines() if not line.startswith("max_packet_size"))
    running = LocalBroker(base=base + "\n").start()
    yield running
    running.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["fast", "paho"])
def test_a_64_mb_request_is_never_sent_to_the_gateway_nor_stored(
    unlimited_broker: LocalBroker, logs: Path, transport: str, free_port: int
) -> None:
    gateway = hostile_gateway(unlimited_broker, logs, transport, "5", free_port).start()
    assert gateway.process is not None
    memory = psutil.Process(gateway.process.pid)
    queue = Path(gateway.env["ROOST_DURABLE__PATH"])
    a, b = Probe(unlimited_broker.port), Probe(unlimited_broker.port)
    try:
        assert b.request("devices/B/add", {"a": 1, "b": 1}) == {"result": 2}  # warm
        rss, stored = memory.memory_info().rss, queue_bytes(queue)
        a.publish("devices/A/echo", msgpack.packb({"value": b"x" * (64 << 20)}), response_topic="roost/replies/A/x")
        # The broker took it from A; B's later request is answered after anything sent before it, in order.
        assert b.request("devices/B/add", {"a": 2, "b": 2}) == {"result": 4}
        assert memory.memory_info().rss - rss < 8 << 20
        assert queue_bytes(queue) - stored < 1 << 20
        samples = scrape(free_port)
        assert value(samples, "roost_requests_total", function="devices/{device_id}/echo", outcome="bad_payload") == 0
    finally:
        a.close()
        b.close()
        gateway.kill()


@pytest.mark.slow
def test_a_device_holds_at_most_its_share_of_the_workers(
    broker: LocalBroker, logs: Path, probe: Probe, tmp_path: Path, free_port: int
) -> None:
    """Four workers, a share of one half, a burst of two: of six slow calls from A two run, two wait their turn
    without a worker, two are refused; and B is answered while A's calls still run (B's reply comes first: the
    test lets A's calls finish only after it)."""
    env = {"ROOST_LIMITS__DEVICE_SHARE": "0.5", "ROOST_LIMITS__DEVICE_BURST": "2", **metrics_env(free_port)}
    flags = ("--transport", "fast", "--executor", "local", "--workers", "4", *FUNCS)
    gateway = GatewayProcess(broker.address, logs, *flags, env=env).start()
    gate = tmp_path / "gate"
    try:
        held = []
        for n in range(6):
            topic = f"roost/replies/A/hold-{n}"
            probe.subscribe(topic)
            probe.publish("devices/A/hold", msgpack.packb({"path": str(gate)}), response_topic=topic,
                          correlation_data=bytes([n]))  # fmt: skip
            held.append(topic)
        refused = [probe.wait_for(topic).decoded() for topic in held[4:]]
        message = "device 'A' has 2 calls under way and 2 waiting, its share of the workers; try again later"
        assert refused == [{"error": {"code": "overloaded", "message": message}}] * 2
        # Two workers are still free for the others: B twice at once, and neither waits for A.
        b_topics = [f"roost/replies/B/add-{n}" for n in range(2)]
        for n, topic in enumerate(b_topics):
            probe.subscribe(topic)
            probe.publish("devices/B/add", msgpack.packb({"a": n, "b": 1}), response_topic=topic)
        assert [probe.wait_for(topic).decoded() for topic in b_topics] == [{"result": 1}, {"result": 2}]
        gate.touch()  # A's two running calls finish, and its two waiting ones run after them
        assert [probe.wait_for(topic).decoded() for topic in held[:4]] == [{"result": "released"}] * 4
        assert probe.request("devices/A/add", {"a": 2, "b": 2}) == {"result": 4}  # its share is free again
    finally:
        gate.touch()
        assert gateway.stop() == 0


@pytest.mark.slow
def test_the_rate_is_taken_first_for_every_request_and_a_flood_logs_little(
    broker: LocalBroker, logs: Path, probe: Probe, free_port: int
) -> None:
    env = {"ROOST_LIMITS__DEVICE_RATE": "2", "ROOST_LIMITS__DEVICE_BURST": "5", **metrics_env(free_port)}
    gateway = hostile_gateway_with(broker, logs, env)
    flood = 300
    try:
        started = time.monotonic()
        for n in range(flood):  # unknown functions, bad payloads and forged reply topics, as fast as it can
            kind = n % 3
            if kind == 0:
                probe.publish("devices/A/nothing", msgpack.packb({}), response_topic="roost/replies/A/x")
            elif kind == 1:
                probe.publish("devices/A/add", b"\xc1", response_topic="roost/replies/A/x")
            else:
                probe.publish("devices/A/add", msgpack.packb({"a": 1, "b": 1}), response_topic="roost/replies/B/x")
        assert probe.request("devices/B/add", {"a": 1, "b": 1}) == {"result": 2}  # after the flood, in order
        seconds = time.monotonic() - started
        samples = scrape(free_port)
        limited = sum(v for (name, labels), v in samples.items()
                      if name == "roost_requests_total" and ("outcome", "rate_limited") in labels)  # fmt: skip
        let_in = flood - limited
        assert 5 <= let_in <= 5 + 2 * seconds + 1, (let_in, seconds)  # the burst, then the rate
        lines = [line for line in gateway.log().splitlines() if "'devices/A/" in line]
        assert len(lines) <= 5 + seconds + 1, (len(lines), seconds)  # five, then one a second
    finally:
        assert gateway.stop() == 0


def hostile_gateway_with(broker: LocalBroker, logs: Path, env: dict[str, str]) -> GatewayProcess:
    """A gateway (fast transport, inline executor) with extra settings."""
    flags = ("--transport", "fast", "--executor", "inline", *FUNCS)
    return GatewayProcess(broker.address, logs, *flags, env=env).start()
