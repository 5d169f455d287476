"""The fast transport against a real mosquitto.

Some tests put a recording TCP proxy between the transport and the broker: it
shows which packets the transport sent (DUP flags, ack order, PINGREQ) and can
cut the connection, mute the broker or inject bytes, deterministically and
without disturbing the shared broker. Tests that restart the broker start their
own :class:`LocalBroker`. Every wait polls a condition with a deadline on the suite's timeout scale, and
what happened to the connection is read from state (the transport's ``link``, the packets the proxy
saw each way), not from log lines; the warnings an operator reads are checked as such.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mqtt5
import pytest

from gateway.cli.devbroker import LocalBroker
from gateway.errors import BrokerUnreachable, SubscriptionRefused
from gateway.transport.base import InboundMessage, OutboundMessage
from gateway.transport.native.reader import PacketReader
from gateway.transport.native.transport import NativeTransport
from gateway.transport.options import ConnectOptions
from tests.support.probe import Probe
from tests.support.timeouts import scaled, until

P = TypeVar("P")
CONNECT = scaled(10.0)  # connect and drain timeouts of the transport, for steps that must not time out
DRAIN = scaled(10.0)
KEEPALIVE = max(1, round(scaled(1.0)))  # seconds, as MQTT counts them


def options(port: int, **overrides: object) -> ConnectOptions:
    """Options for a fresh client id on 127.0.0.1:``port``."""
    values: dict[str, object] = {"host": "127.0.0.1", "port": port, "client_id": f"fast-{uuid.uuid4().hex[:10]}"}
    values.update(overrides)
    return ConnectOptions(**values)  # type: ignore[arg-type]


async def receive(transport: NativeTransport, timeout: float = 10.0) -> InboundMessage:
    """The next inbound message (``timeout`` in base seconds)."""
    return await asyncio.wait_for(transport.messages.get(), scaled(timeout))


def run(scenario: Coroutine[Any, Any, None], timeout: float) -> None:
    """Run ``scenario`` on a fresh loop, bounded by ``timeout`` base seconds so a bug fails instead of hanging."""
    asyncio.run(asyncio.wait_for(scenario, scaled(timeout)))


def topic() -> str:
    """A topic no other test uses."""
    return f"test/fast/{uuid.uuid4().hex}"


class Proxy:
    """A TCP proxy to the broker that records what the client sends and can cut, mute or inject."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.sent: list[list[mqtt5.Packet]] = []  # per connection, client → broker
        self.received: list[list[mqtt5.Packet]] = []  # per connection, broker → client (what was let through)
        self.muted: set[int] = set()  # connections whose broker → client bytes are dropped
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Future[object]] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def packets(self, kind: type[P], connection: int | None = None) -> list[P]:
        """Client packets of one type, on one connection (0-based) or on all."""
        chosen = self.sent if connection is None else self.sent[connection : connection + 1]
        return [p for packets in chosen for p in packets if isinstance(p, kind)]

    def session_present(self, connection: int) -> bool:
        """The session-present flag of the CONNACK the broker sent on ``connection`` (0-based)."""
        [connack] = [p for p in self.received[connection] if isinstance(p, mqtt5.ConnAckPacket)]
        return bool(connack.session_present)

    def mute(self) -> None:
        """Drop the broker's bytes on the connections open now; later connections (reconnects) pass."""
        self.muted.update(range(len(self.sent)))

    def cut(self) -> None:
        """Drop every proxied connection."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def inject(self, data: bytes) -> None:
        """Send ``data`` to the client as if the broker had."""
        self._writers[-2].write(data)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers += [client_w, broker_w]
        record: list[mqtt5.Packet] = []
        index = len(self.sent)
        self.sent.append(record)
        delivered: list[mqtt5.Packet] = []
        self.received.append(delivered)
        reader, broker_reader = PacketReader(), PacketReader()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                record.extend(reader.feed(data))
                broker_w.write(data)

        async def downstream() -> None:
            while data := await broker_r.read(65536):
                if index not in self.muted:
                    delivered.extend(broker_reader.feed(data))
                    client_w.write(data)

        pumps: list[asyncio.Future[object]] = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        self._tasks += pumps
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for writer in (client_w, broker_w):
            writer.transport.abort()  # either side closing ends both


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    """A directory mosquitto can use even after dropping root privileges (it does when started as root)."""
    path = Path(tempfile.mkdtemp(prefix="roost-fast-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_broker(broker_dir: Path) -> Iterator[Callable[..., LocalBroker]]:
    """Start LocalBrokers with extra configuration; all are stopped after the test."""
    started: list[LocalBroker] = []

    def start(extra_config: str = "") -> LocalBroker:
        broker = LocalBroker(data_dir=broker_dir / f"broker{len(started)}", extra_config=extra_config)
        started.append(broker)
        broker.data_dir.mkdir()
        broker.data_dir.chmod(0o777)  # persistence is written as the mosquitto user
        return broker.start()

    yield start
    for broker in started:
        broker.cleanup()


# -- publish and receive --------------------------------------------------------------


def test_requests_and_replies_at_every_qos_with_properties(broker: LocalBroker, probe: Probe) -> None:
    base = topic()
    reply_topic = f"{base}/replies"
    probe.subscribe(reply_topic, qos=2)

    async def scenario() -> None:
        async with Proxy(broker.port) as proxy:
            transport = NativeTransport(options(proxy.port))
            await transport.connect(CONNECT)
            await transport.subscribe([f"{base}/req/+"], qos=2)
            for qos in (0, 1, 2):
                corr = f"c{qos}".encode()
                await asyncio.to_thread(
                    probe.publish,
                    f"{base}/req/{qos}",
                    b"ask",
                    qos,
                    response_topic=reply_topic,
                    correlation_data=corr,
                    expiry=60,
                )
                message = await receive(transport)
                assert (message.topic, message.payload, message.qos) == (f"{base}/req/{qos}", b"ask", qos)
                assert message.response_topic == reply_topic
                assert message.correlation_data == corr
                assert message.message_expiry is not None and 50 <= message.message_expiry <= 60
                assert not message.retain
                # The gateway decides when to ack: nothing is acknowledged before it does.
                assert len(proxy.packets(mqtt5.PubAckPacket)) == (qos == 2)
                assert not proxy.packets(mqtt5.PubRecPacket)
                if qos:
                    transport.ack(message)
                if qos == 1:
                    await until(lambda: proxy.packets(mqtt5.PubAckPacket), what="PUBACK")
                if qos == 2:
                    await until(lambda: proxy.packets(mqtt5.PubCompPacket), what="PUBREC, PUBREL, PUBCOMP")
                    assert len(proxy.packets(mqtt5.PubRecPacket)) == 1
                transport.publish(OutboundMessage(reply_topic, f"answer {qos}".encode(), qos, correlation_data=corr))
                reply = await asyncio.to_thread(probe.wait_for, reply_topic, 5.0)
                assert (reply.payload, reply.qos, reply.correlation_data) == (f"answer {qos}".encode(), qos, corr)
            await transport.drain(DRAIN)
            await transport.close()

    run(scenario(), 30)


@pytest.mark.slow
def test_the_broker_refusing_a_subscription_names_the_filter(
    private_broker: Callable[..., LocalBroker], broker_dir: Path
) -> None:
    # mosquitto's acl_file grants every subscription (it filters on delivery); its dynamic security plugin refuses.
    plugin = next(iter(sorted(Path("/usr/lib").glob("**/mosquitto_dynamic_security.so"))), None)
    if plugin is None:
        pytest.skip("mosquitto's dynamic security plugin is not installed")
    rules = broker_dir / "dynsec.json"
    rules.write_text(
        json.dumps(
            {
                "defaultACLAccess": {
                    "publishClientSend": True,
                    "publishClientReceive": True,
                    "subscribe": True,
                    "unsubscribe": True,
                },
                "roles": [
                    {
                        "rolename": "no-secrets",
                        "acls": [{"acltype": "subscribePattern", "topic": "secret/#", "priority": 0, "allow": False}],
                    }
                ],
                "groups": [{"groupname": "anonymous", "roles": [{"rolename": "no-secrets"}]}],
                "anonymousGroup": "anonymous",
                "clients": [],
            }
        )
    )
    rules.chmod(0o666)  # the plugin rewrites it as the mosquitto user
    broker = private_broker(f"plugin {plugin}\nplugin_opt_config_file {rules}\n")

    async def scenario() -> None:
        transport = NativeTransport(options(broker.port))
        await transport.connect(CONNECT)
        with pytest.raises(SubscriptionRefused, match=r"'secret/x'.*NOT_AUTHORIZED.*0x87"):
            await transport.subscribe(["open/a", "secret/x"], qos=1)
        transport.publish(OutboundMessage("open/a", b"still subscribed to the granted filter", qos=1))
        assert (await receive(transport)).topic == "open/a"
        await transport.close()

    run(scenario(), 20)


def test_a_publish_over_the_brokers_maximum_packet_size_is_refused_and_logged(
    private_broker: Callable[..., LocalBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = private_broker("max_packet_size 1000\n")
    name = topic()

    async def scenario() -> None:
        transport = NativeTransport(options(broker.port))
        await transport.connect(CONNECT)
        await transport.subscribe([name], qos=1)
        transport.publish(OutboundMessage(name, b"x" * 2000, qos=1))
        transport.publish(OutboundMessage(name, b"small", qos=1))
        message = await receive(transport)
        assert message.payload == b"small"  # the big one was never sent, and the connection is fine
        transport.ack(message)
        await transport.drain(DRAIN)
        assert transport.link.connected and transport.link.connects == 1  # never dropped
        await transport.close()

    with caplog.at_level(logging.WARNING):
        run(scenario(), 20)
    assert "exceed the broker's Maximum Packet Size of 1000" in caplog.text  # the operator's warning


def test_publishes_beyond_the_brokers_receive_maximum_wait_their_turn(
    private_broker: Callable[..., LocalBroker],
) -> None:
    broker = private_broker("max_inflight_messages 3\n")  # mosquitto announces it as Receive Maximum
    name = topic()

    async def scenario() -> None:
        async with Proxy(broker.port) as proxy:
            transport = NativeTransport(options(proxy.port))
            await transport.connect(CONNECT)
            await transport.subscribe([name], qos=1)
            proxy.mute()  # no PUBACK reaches the transport: the window stays full
            for n in range(10):
                transport.publish(OutboundMessage(name, str(n).encode(), qos=1))
            await until(lambda: len(proxy.packets(mqtt5.PublishPacket)) == 3, what="3 publishes")
            proxy.cut()  # reconnect, resend the 3 with DUP, then the 7 others as the window frees
            payloads: set[bytes] = set()
            while len(payloads) < 10:
                message = await receive(transport)
                transport.ack(message)
                payloads.add(message.payload)
            await transport.drain(DRAIN)
            assert len(proxy.packets(mqtt5.PublishPacket, 0)) == 3  # never more than Receive Maximum
            await transport.close()

    run(scenario(), 30)


# -- sessions, reconnects, retransmission ---------------------------------------------


def test_unacked_publishes_are_resent_with_dup_after_the_broker_restarts(
    private_broker: Callable[..., LocalBroker],
) -> None:
    broker = private_broker()
    name = topic()

    async def scenario() -> None:
        async with Proxy(broker.port) as proxy:
            transport = NativeTransport(options(proxy.port, session_expiry=600))
            await transport.connect(CONNECT)
            await transport.subscribe([name], qos=1)
            proxy.mute()  # the broker gets the publishes, its PUBACKs never arrive
            for n in range(3):
                transport.publish(OutboundMessage(name, str(n).encode(), qos=1))
            await until(lambda: len(proxy.packets(mqtt5.PublishPacket)) == 3, what="3 publishes")
            first_ids = [p.packet_id for p in proxy.packets(mqtt5.PublishPacket)]
            await asyncio.to_thread(broker.stop)  # SIGTERM: mosquitto saves the session
            await asyncio.to_thread(broker.start)
            await until(
                lambda: len(proxy.sent) >= 2 and proxy.packets(mqtt5.PublishPacket, len(proxy.sent) - 1),
                what="retransmission",
            )
            await transport.drain(DRAIN)
            again = proxy.packets(mqtt5.PublishPacket, len(proxy.sent) - 1)
            assert [p.packet_id for p in again] == first_ids
            assert all(p.duplicate for p in again)
            # The session (and its subscription) survived: no SUBSCRIBE was needed.
            assert not proxy.packets(mqtt5.SubscribePacket, len(proxy.sent) - 1)
            received: set[bytes] = set()
            while len(received) < 3:
                message = await receive(transport)
                transport.ack(message)
                received.add(message.payload)
            assert received == {b"0", b"1", b"2"}
            assert proxy.session_present(len(proxy.sent) - 1)
            await transport.close()

    run(scenario(), 40)


@pytest.mark.slow
def test_reconnects_with_backoff_and_renews_subscriptions_of_a_lost_session(
    private_broker: Callable[..., LocalBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = private_broker()
    name = topic()

    async def scenario() -> None:
        # Session expiry 0: the broker forgets the session at each disconnect.
        transport = NativeTransport(options(broker.port, session_expiry=0, max_reconnect_delay=1))
        await transport.connect(CONNECT)
        await transport.subscribe([name], qos=1)
        await asyncio.to_thread(broker.stop)
        # The warnings are the only record of the attempts; they say when the next one comes.
        await until(lambda: caplog.text.count("cannot reconnect") >= 4, what="4 failed attempts")
        await asyncio.to_thread(broker.start)
        await until(lambda: transport.link.connects == 2, what="the reconnect")
        transport.publish(OutboundMessage(name, b"after", qos=1))
        message = await receive(transport)
        assert message.payload == b"after"
        transport.ack(message)
        await transport.close()

    with caplog.at_level(logging.INFO):
        run(scenario(), 40)
    delays = [line.rsplit("retrying in ", 1)[1] for line in caplog.text.splitlines() if "cannot reconnect" in line]
    assert delays[:4] == ["0.2 s", "0.4 s", "0.8 s", "1.0 s"]  # doubling, capped at max_reconnect_delay


def test_acks_are_sent_in_order_of_arrival_and_an_unacked_message_is_redelivered(
    broker: LocalBroker, probe: Probe
) -> None:
    name = topic()
    client_id = f"fast-acks-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with Proxy(broker.port) as proxy:
            transport = NativeTransport(options(proxy.port, client_id=client_id, session_expiry=600))
            await transport.connect(CONNECT)
            await transport.subscribe([name], qos=1)
            for n in range(3):
                await asyncio.to_thread(probe.publish, name, str(n).encode(), 1)
            first, second, third = [await receive(transport) for _ in range(3)]
            transport.ack(third)
            transport.ack(second)
            # A barrier: anything written before this publish reaches the proxy before it.
            transport.publish(OutboundMessage(f"{name}/barrier", b"", 0))
            await until(lambda: proxy.packets(mqtt5.PublishPacket), what="the barrier")
            assert not proxy.packets(mqtt5.PubAckPacket)  # held behind the first
            # A reconnect while the gateway still holds all three: redelivered, but not handed over twice.
            proxy.cut()
            await until(lambda: len(proxy.sent) == 2 and proxy.sent[1], what="the reconnect")
            transport.ack(first)
            await until(lambda: len(proxy.packets(mqtt5.PubAckPacket)) == 3, what="3 PUBACKs")
            acked = [p.packet_id for p in proxy.packets(mqtt5.PubAckPacket)]
            assert acked == [getattr(m.ack_token, "packet_id", None) for m in (first, second, third)]
            assert transport.messages.empty()
            await transport.close()

        # Not acked at all: the next run of the same client gets it again.
        await asyncio.to_thread(probe.publish, name, b"unacked", 1)
        transport = NativeTransport(options(broker.port, client_id=client_id, session_expiry=600))
        await transport.connect(CONNECT)
        assert (await receive(transport)).payload == b"unacked"
        await transport.close()
        transport = NativeTransport(options(broker.port, client_id=client_id, session_expiry=600))
        await transport.connect(CONNECT)
        message = await receive(transport)
        assert message.payload == b"unacked"
        transport.ack(message)
        await transport.close()

    run(scenario(), 30)


# -- keepalive, dead connections, broken brokers ---------------------------------------


@pytest.mark.slow
def test_keepalive_pings_and_a_silent_broker_is_dropped(broker: LocalBroker, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with Proxy(broker.port) as proxy:
            transport = NativeTransport(options(proxy.port, keepalive=KEEPALIVE))
            await transport.connect(CONNECT)
            await until(lambda: len(proxy.packets(mqtt5.PingReqPacket)) >= 2, what="PINGREQs")
            assert len(proxy.sent) == 1  # PINGRESPs keep the connection alive
            proxy.mute()  # the broker looks dead on this connection: no PINGRESP, no bytes
            await until(lambda: transport.link.connects == 2, what="the drop and a new connection")
            assert len(proxy.sent) == 2 and transport.link.connected
            await transport.close()

    with caplog.at_level(logging.INFO):
        run(scenario(), 20)
    # The operator's warning: how long the broker was silent (never less than 1.5 keepalives) and the keepalive.
    warning = re.search(
        rf"no bytes from the broker for (\d+\.\d) s \(keepalive {KEEPALIVE} s\); dropping the connection", caplog.text
    )
    assert warning is not None and float(warning[1]) >= 1.5 * KEEPALIVE, caplog.text


@pytest.mark.parametrize(
    "bad", [b"\xf0\x00garbage", mqtt5.PingReqPacket().write()], ids=["garbage", "a-packet-only-clients-send"]
)
def test_a_malformed_packet_resets_the_connection_and_the_transport_goes_on(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture, bad: bytes
) -> None:
    name = topic()

    async def scenario() -> None:
        async with Proxy(broker.port) as proxy:
            transport = NativeTransport(options(proxy.port, session_expiry=60))
            await transport.connect(CONNECT)
            await transport.subscribe([name], qos=1)
            proxy.inject(bad)
            await until(lambda: transport.link.connects == 2, what="the reconnect")
            assert len(proxy.sent) == 2
            transport.publish(OutboundMessage(name, b"still works", qos=1))
            message = await receive(transport)
            assert message.payload == b"still works"
            transport.ack(message)
            await transport.close()

    with caplog.at_level(logging.INFO):
        run(scenario(), 20)
    assert "protocol error from the broker, resetting the connection" in caplog.text


def test_a_server_disconnect_is_logged_with_its_reason_code(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # mosquitto 2.0 closes without a DISCONNECT (takeover, shutdown), so the proxy plays the broker here.
    async def scenario() -> None:
        async with Proxy(broker.port) as proxy:
            transport = NativeTransport(options(proxy.port, session_expiry=60))
            await transport.connect(CONNECT)
            proxy.inject(
                mqtt5.DisconnectPacket(
                    reason_code=mqtt5.DisconnectReasonCode.SERVER_SHUTTING_DOWN, reason_str="maintenance"
                ).write()
            )
            await until(lambda: transport.link.connects == 2, what="the reconnect")
            assert len(proxy.sent) == 2 and proxy.session_present(1)  # resumed, as after any other drop
            await transport.close()

    with caplog.at_level(logging.INFO):
        run(scenario(), 20)
    assert "the broker disconnected us: SERVER_SHUTTING_DOWN (reason code 0x8b): maintenance" in caplog.text


# -- connecting ---------------------------------------------------------------------------


def test_connect_raises_broker_unreachable_when_nobody_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused

        async def scenario() -> None:
            transport = NativeTransport(options(port))
            with pytest.raises(BrokerUnreachable, match=f"cannot reach the broker at 127.0.0.1:{port}"):
                await transport.connect(0.5)

        run(scenario(), 10)


def test_tls_with_credentials(private_broker: Callable[..., LocalBroker], broker_dir: Path) -> None:
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("openssl or mosquitto_passwd is not installed")
    cert, key, passwords = broker_dir / "cert.pem", broker_dir / "key.pem", broker_dir / "passwd"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=scaled(60),
    )
    passwords.write_text("device:secret\n")
    subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, capture_output=True, timeout=scaled(60))
    for path in (cert, key, passwords):
        path.chmod(0o644)  # mosquitto may drop privileges before reading them
    broker = private_broker(f"certfile {cert}\nkeyfile {key}\npassword_file {passwords}\nallow_anonymous false\n")

    context = ssl.create_default_context(cafile=str(cert))
    name = topic()

    async def scenario() -> None:
        wrong = NativeTransport(options(broker.port, ssl_context=context, username="device", password="wrong"))
        with pytest.raises(BrokerUnreachable, match="refused the connection: NOT_AUTHORIZED"):
            await wrong.connect(CONNECT)
        transport = NativeTransport(options(broker.port, ssl_context=context, username="device", password="secret"))
        await transport.connect(CONNECT)
        await transport.subscribe([name], qos=1)
        transport.publish(OutboundMessage(name, b"over tls", qos=1))
        message = await receive(transport)
        assert message.payload == b"over tls"
        transport.ack(message)
        await transport.close()

    run(scenario(), 20)
