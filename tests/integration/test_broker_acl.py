"""What the production broker's ``roost acl --format dynsec`` file stops, with two gateways in a share group.

mosquitto's acl_file never checks a subscription, so a device used to be able to join the gateways' share
group (``$share/<group>/devices/+/#``): the broker's round robin handed it a share of other devices' requests,
the read ACL dropped them, and they were lost (device B got 10 of 40 replies with three such clients). The
dynamic-security plugin refuses those subscriptions. The same file lets a device read its own dead letters.

The broker is deploy/mosquitto.conf as in test_security.py, a module of its own here: the two gateways of
the share group answer every request on it, so they must not meet the other modules' gateways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from gateway.config import derived_share_group
from tests.integration.test_security import USERS, SecureBroker, call, devices, refused, secure_broker, tls_env
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe

pytestmark = pytest.mark.slow  # two gateways on a broker of their own


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    """The production broker, for this module alone: its gateways are in a share group."""
    with secure_broker() as running:
        yield running


@pytest.fixture
def device() -> Iterator[Callable[..., Probe]]:
    with devices() as open_device:
        yield open_device


@pytest.fixture(scope="module")
def share_group(secure: SecureBroker, logs: Path) -> Iterator[str]:
    """Two gateways in the share group ``auto`` (over TLS, logged in as ``roost``); the group's name."""
    env = {**tls_env(secure), "ROOST_DURABLE__ENABLED": "false"}
    flags = ("--executor", "inline", "--share-group", "auto")
    gateways = [GatewayProcess(f"127.0.0.1:{secure.tls_port}", logs, *flags, env=env) for _ in range(2)]
    try:
        for gateway in gateways:
            gateway.start()
        yield derived_share_group(USERS["roost"])  # what both derived from the password
    finally:
        for gateway in gateways:
            gateway.stop()


def test_devices_cannot_join_the_gateways_share_group(
    secure: SecureBroker, share_group: str, device: Callable[..., Probe]
) -> None:
    # Device A knows the group's name (assume it leaked): three of its connections try to take a share
    # of the requests, and to read them directly. Each subscription is refused.
    attackers = [device(secure.broker.port, "A", f"attacker-{n}") for n in range(3)]
    for attacker in attackers:
        for topic in (f"$share/{share_group}/devices/+/#", f"$share/{share_group}/devices/B/add", "devices/+/#",
                      "devices/B/add", f"$share/{share_group}/#", "#"):  # fmt: skip
            assert refused(attacker, topic), topic
    b = device(secure.broker.port, "B")
    b.subscribe("roost/replies/B/share")
    for n in range(40):
        call(b, "B", "roost/replies/B/share", n)
    replies = {}
    for _ in range(40):  # with the attackers in the group, a share of these never came (10 of 40 with three)
        reply = b.wait_for("roost/replies/B/share")
        replies[reply.correlation_data] = reply.decoded()
    assert replies == {str(n).encode(): {"result": n + 1} for n in range(40)}
    for attacker in attackers:
        attacker.nothing_else()  # all 40 were delivered to the gateways, none to the attackers


def test_a_device_reads_its_own_dead_letters_and_no_others(
    secure: SecureBroker, share_group: str, device: Callable[..., Probe]
) -> None:
    a = device(secure.broker.port, "A")
    b = device(secure.broker.port, "B")
    assert not refused(a, "roost/dead/A")
    assert refused(b, "roost/dead/A")
    a.subscribe("roost/replies/A/dead")
    b.subscribe("roost/replies/B/dead")
    a.publish("devices/A/fail", msgpack.packb({"reason": "unplugged"}), 1, response_topic="roost/replies/A/dead")
    letter = a.wait_for("roost/dead/A").decoded()  # published before the error reply
    assert (letter["topic"], letter["error"]["code"]) == ("devices/A/fail", "function_error")
    assert a.wait_for("roost/replies/A/dead").decoded()["error"]["code"] == "function_error"
    call(b, "B", "roost/replies/B/dead", 1)  # fanned out after A's dead letter: B would have had that first
    assert b.wait_for("roost/replies/B/dead").decoded() == {"result": 2}
    a.nothing_else()
    b.nothing_else()
