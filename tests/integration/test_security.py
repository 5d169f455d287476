"""Security on the real broker: TLS (verified by default) with a client certificate and a password,
and the broker configuration of ``roost acl --format dynsec`` keeping device A out of device B's topics
and out of the gateways' share group.

mosquitto runs deploy/mosquitto.conf with a test CA generated here, ``allow_anonymous false``, a
password file (users ``roost``, ``A``, ``B``) and the generated dynamic-security file. The gateway
connects over TLS; devices use the plain listener with their passwords.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.cli.devbroker import LocalBroker, lease_port
from tests.integration.test_operations import metrics_env
from tests.support.gateway_process import EXAMPLES, ROOT, GatewayProcess
from tests.support.ops import scrape, value
from tests.support.probe import Probe
from tests.support.timeouts import scaled, scaled_text, wait_for
from tests.support.tls import Pki, make_pki

# A1-A3: the hostile soak's attackers (test_hostile_soak.py).
USERS = {"roost": "gateway-secret", "A": "a-secret", "B": "b-secret", **{f"A{n}": f"a{n}-secret" for n in (1, 2, 3)}}


class SecureBroker:
    """The broker, its TLS port and the PKI."""

    def __init__(self, broker: LocalBroker, tls_port: int, pki: Pki) -> None:
        self.broker = broker
        self.tls_port = tls_port
        self.pki = pki


def dynsec_plugin() -> Path:
    """This machine's dynamic-security plugin (Debian's mosquitto package installs it)."""
    found = [*Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"), Path("/usr/lib/mosquitto_dynamic_security.so")]
    plugin = next((path for path in found if path.exists()), None)
    assert plugin is not None, "mosquitto_dynamic_security.so is not installed (apt-get install mosquitto)"
    return plugin


def shipped_broker_config(passwords: Path, dynsec: Path, tls_port: int, pki: Pki) -> str:
    """deploy/mosquitto.conf with this test's files, its TLS listener on, and no plain listener on 1883.

    The plain listener comes from LocalBroker (a free port on 127.0.0.1): the same users and ACLs apply.
    """
    text = (ROOT / "deploy" / "mosquitto.conf").read_text()
    replacements = {
        "/etc/mosquitto/roost.passwd": str(passwords),
        "/etc/mosquitto/roost-dynsec.json": str(dynsec),
        "plugin /usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so": f"plugin {dynsec_plugin()}",
        "\nlistener 1883\n": "\n",
        "#listener 8883": f"listener {tls_port} 127.0.0.1",
        "#cafile /etc/mosquitto/certs/ca.crt": f"cafile {pki.ca}",
        "#certfile /etc/mosquitto/certs/server.crt": f"certfile {pki.server_cert}",
        "#keyfile /etc/mosquitto/certs/server.key": f"keyfile {pki.server_key}",
        "#require_certificate false": "require_certificate true",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/mosquitto.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def secure_broker() -> Iterator[SecureBroker]:
    """mosquitto on deploy/mosquitto.conf, its users (``USERS``) and the ``roost acl --format dynsec`` file."""
    # Not under pytest's tmp_path: mosquitto drops to its own user, which cannot enter that (0700) tree.
    files = Path(tempfile.mkdtemp(prefix="roost-security-"))
    files.chmod(0o755)
    pki = make_pki(files / "pki")
    passwords = files / "passwd"
    for n, (user, password) in enumerate(USERS.items()):
        subprocess.run(
            ["mosquitto_passwd", *(["-c"] if n == 0 else []), "-b", str(passwords), user, password], check=True
        )
    dynsec = files / "dynsec.json"
    generated = subprocess.run(
        [sys.executable, "-m", "gateway", "acl", "--functions", "functions.examples", "--format", "dynsec",
         "--devices-from", str(passwords)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),  # the default reply spaces
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    dynsec.write_text(generated.stdout)
    for path in (passwords, dynsec):
        path.chmod(0o644)
    tls = lease_port()
    broker = LocalBroker(base=shipped_broker_config(passwords, dynsec, tls.port, pki)).start()
    try:
        yield SecureBroker(broker, tls.port, pki)
    finally:
        broker.cleanup()
        tls.release()
        shutil.rmtree(files, ignore_errors=True)


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    with secure_broker() as running:
        yield running


def tls_env(
    secure: SecureBroker, ca: Path | None = None, password: str = USERS["roost"], connect_timeout: float = 10.0
) -> dict[str, str]:
    pki = secure.pki
    return {
        "ROOST_TLS__CA_FILE": str(ca or pki.ca),
        "ROOST_TLS__CERT_FILE": str(pki.client_cert),
        "ROOST_TLS__KEY_FILE": str(pki.client_key),
        "ROOST_USERNAME": "roost",
        "ROOST_PASSWORD": password,
        "ROOST_CONNECT_TIMEOUT": scaled_text(connect_timeout),
    }


@pytest.fixture
def secure_gateway(secure: SecureBroker, logs: Path, transport: str, free_port: int) -> Iterator[GatewayProcess]:
    address = f"127.0.0.1:{secure.tls_port}"
    env = {**tls_env(secure), **metrics_env(free_port)}
    gateway = GatewayProcess(address, logs, "--transport", transport, "--executor", "inline", env=env).start()
    yield gateway
    assert gateway.stop() == 0


@contextlib.contextmanager
def devices() -> Iterator[Callable[..., Probe]]:
    """Open device connections with ``open(port, name, client_id=None)``; all are closed at the end."""
    opened: list[Probe] = []

    def open_device(secure_port: int, name: str, client_id: str | None = None) -> Probe:
        probe = Probe(secure_port, client_id=client_id or f"device-{name}", username=name, password=USERS[name])
        opened.append(probe)
        return probe

    try:
        yield open_device
    finally:
        for probe in opened:
            probe.close()


@pytest.fixture
def device() -> Iterator[Callable[..., Probe]]:
    with devices() as open_device:
        yield open_device


def call(probe: Probe, device_id: str, reply_to: str, a: int) -> None:
    probe.publish(f"devices/{device_id}/add", msgpack.packb({"a": a, "b": 1}), 1, response_topic=reply_to,
                  correlation_data=str(a).encode())  # fmt: skip


def refused(probe: Probe, topic: str) -> bool:
    """Subscribe ``probe`` to ``topic``: whether the broker's SUBACK refused it."""
    codes: list[ReasonCode] = []
    handler: Any = probe.client.on_subscribe  # the probe's own, which the SUBACK wait needs

    def keep(client: Any, userdata: Any, mid: int, reason_codes: list[ReasonCode], props: Any) -> None:
        codes.extend(reason_codes)
        handler(client, userdata, mid, reason_codes, props)

    probe.client.on_subscribe = keep
    try:
        probe.subscribe(topic)
    finally:
        probe.client.on_subscribe = handler
    return all(code.is_failure for code in codes)


def test_the_broker_refuses_oversized_packets_and_bounds_each_clients_queue(
    secure: SecureBroker, device: Callable[..., Probe]
) -> None:
    # A gateway's session, away: the broker queues what arrives for it, up to max_queued_bytes of payload.
    port = secure.broker.port

    def holder(session_expiry: int) -> Probe:
        return Probe(port, client_id="queue-holder", username="roost", password=USERS["roost"], clean=False,
                     session_expiry=session_expiry)  # fmt: skip

    away = holder(3600)
    away.subscribe("devices/+/#")
    away.close()
    # A device that ignores the Maximum Packet Size of the CONNACK: the broker drops it at the packet's header.
    oversized = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="oversized", protocol=mqtt.MQTTv5)
    oversized.username_pw_set("A", USERS["A"])
    oversized.connect("127.0.0.1", port)
    try:
        oversized.publish("devices/A/echo", b"x" * 600_000, qos=0)  # over max_packet_size (512 KiB): not queued
        wait_for(lambda: oversized.loop(0.01) != mqtt.MQTT_ERR_SUCCESS, 10, "the broker to drop the connection")
    finally:
        oversized.disconnect()
    size, sent = 400_000, 100  # 40 MB, over the 32 MiB max_queued_bytes
    b = device(port, "B")
    for n in range(sent):
        b.publish("devices/B/echo", n.to_bytes(4, "big") + b"x" * (size - 4), 1)
    back = holder(0)  # the session ends with this connection
    try:
        wait_for(back.client.is_connected, 10, "the session to be back")
        b.publish("devices/B/marker", b"", 1)  # after everything queued: it comes last
        queued = []
        while (message := back.received.get(timeout=scaled(10))).topic != "devices/B/marker":
            queued.append(message)
        assert all(message.topic == "devices/B/echo" and len(message.payload) == size for message in queued)
        assert [int.from_bytes(m.payload[:4], "big") for m in queued] == list(range(len(queued)))  # the first ones
        limit = 32 * 1024 * 1024
        assert limit // size <= len(queued) <= limit // size + 1 < sent  # 84 of 100: the rest were dropped
    finally:
        back.close()


@pytest.mark.slow
def test_the_gateway_serves_over_tls_with_a_client_certificate_and_a_password(
    secure: SecureBroker, secure_gateway: GatewayProcess, device: Callable[..., Probe]
) -> None:
    a = device(secure.broker.port, "A")
    a.subscribe("roost/replies/A")
    call(a, "A", "roost/replies/A", 41)
    assert a.wait_for("roost/replies/A").decoded() == {"result": 42}


def test_device_a_can_neither_call_as_b_nor_read_b_replies(
    secure: SecureBroker, secure_gateway: GatewayProcess, device: Callable[..., Probe]
) -> None:
    a = device(secure.broker.port, "A")
    b = device(secure.broker.port, "B")
    assert refused(a, "roost/replies/B") and refused(a, "roost/replies/#")  # the SUBACKs say so
    a.subscribe("roost/replies/A")
    b.subscribe("roost/replies/B")
    call(a, "B", "roost/replies/A", 1)  # calling as B: the broker drops it
    call(b, "B", "roost/replies/B", 2)
    assert b.wait_for("roost/replies/B").decoded() == {"result": 3}
    call(a, "A", "roost/replies/B", 3)  # a forged reply topic in B's space: the gateway refuses it
    call(a, "A", "roost/replies/A", 4)
    assert a.wait_for("roost/replies/A").decoded() == {"result": 5}
    call(b, "B", "roost/replies/B", 6)  # the inline gateway answers in order: B's reply to this comes last
    assert b.wait_for("roost/replies/B").decoded() == {"result": 7}
    a.nothing_else()  # no reply to the call as B, nothing of B's
    b.nothing_else()  # nothing from A's forged reply topic
    port = int(secure_gateway.env["ROOST_METRICS__PORT"])
    assert value(scrape(port), "roost_requests_dropped_total", reason="reply_space") == 1  # A's forged reply topic


@pytest.mark.slow
def test_roost_call_logs_in_as_a_device_over_tls_with_the_gateways_settings(
    secure: SecureBroker, secure_gateway: GatewayProcess, tmp_path: Path
) -> None:
    pki = secure.pki
    config = tmp_path / "roost.toml"
    config.write_text(
        f'broker = "127.0.0.1:{secure.tls_port}"\n[tls]\nca_file = "{pki.ca}"\n'
        f'cert_file = "{pki.client_cert}"\nkey_file = "{pki.client_key}"\n'
    )

    def roost_call(*args: str, password: str) -> subprocess.CompletedProcess[str]:
        # A generous reply timeout; the call that tests the timeout gives its own, later on the line (it wins).
        command = ["call", "--config", str(config), "--username", "A", "--timeout", scaled_text(10), *args]
        return subprocess.run(
            [sys.executable, "-m", "gateway", *command],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT), ROOST_CALL_PASSWORD=password),
            capture_output=True,
            text=True,
            timeout=scaled(30),
        )

    ok = roost_call("devices/A/add", "a=40", "b=2", password=USERS["A"])
    assert (ok.returncode, ok.stdout.strip()) == (0, "42"), ok.stderr
    refused = roost_call("devices/A/add", "a=1", "b=1", password="wrong")
    assert refused.returncode == 1 and "refused the connection" in refused.stderr
    as_b = roost_call("devices/B/add", "a=1", "b=1", password=USERS["A"])  # the reply would go to B's space
    assert as_b.returncode == 1 and "refused the subscription to 'roost/replies/B/" in as_b.stderr, as_b.stderr


def run_once(secure: SecureBroker, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = ["run", "--broker", f"127.0.0.1:{secure.tls_port}", "--executor", "inline", *EXAMPLES]
    return subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), ROOST_DURABLE__ENABLED="false", **env),
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )


@pytest.mark.slow
def test_server_verification_is_on_by_default(secure: SecureBroker) -> None:
    # Each attempt fails at the handshake; the gateway retries until its connect timeout, then exits 69.
    result = run_once(secure, tls_env(secure, ca=secure.pki.other_ca, connect_timeout=1.0))
    assert result.returncode == 69, result.stderr
    assert "certificate verify failed" in result.stderr


def test_a_wrong_password_is_refused(secure: SecureBroker) -> None:
    result = run_once(secure, tls_env(secure, password="wrong"))
    assert result.returncode == 69, result.stderr
    assert "refused" in result.stderr
