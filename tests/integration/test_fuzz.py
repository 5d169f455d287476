"""Hostile input on the real broker: random payloads and topics never take the gateway down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli.devbroker import LocalBroker
from tests.conftest import TRANSPORTS
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe, reply_topic_for
from tests.support.stream import reply_properties

FUNCTIONS = ["add", "echo", "fail", "nothing", "readings/temperature", "a/b/c"]
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
payloads = st.one_of(
    st.binary(max_size=64),
    msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.dictionaries(
        st.sampled_from(["a", "b", "value", "$cid", "$rt", "celsius", "x"]), msgpack_values, max_size=4
    ).map(lambda v: msgpack.packb(v, use_bin_type=True)),
)
# mosquitto disconnects a client that publishes control or private-use characters in a topic.
device_ids = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Co", "Cn"], blacklist_characters="/+#\x00"),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module", params=TRANSPORTS)
def fuzz_gateway(request: pytest.FixtureRequest, broker: LocalBroker, logs: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(broker.address, logs, "--executor", "inline", "--transport", request.param).start()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def fuzz_probe(broker: LocalBroker) -> Iterator[Probe]:
    client = Probe(broker.port)
    yield client
    client.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, device_id=device_ids, function=st.sampled_from(FUNCTIONS))
@pytest.mark.slow
def test_random_requests_always_get_a_well_formed_reply(
    fuzz_gateway: GatewayProcess, fuzz_probe: Probe, payload: bytes, device_id: str, function: str
) -> None:
    reply = fuzz_probe.request(f"devices/{device_id}/{function}", raw=payload, timeout=10)
    assert isinstance(reply, dict)
    assert set(reply) <= {"result", "error", "$cid"}
    if "error" in reply:
        assert reply["error"]["code"] in {
            "bad_payload",
            "invalid_arguments",
            "not_found",
            "function_error",
            "bad_result",
        }
        assert isinstance(reply["error"]["message"], str)
    assert fuzz_gateway.process is not None and fuzz_gateway.process.poll() is None


def test_gateway_still_answers_after_the_fuzzing(fuzz_gateway: GatewayProcess, fuzz_probe: Probe) -> None:
    assert fuzz_probe.request("devices/d1/add", {"a": 20, "b": 22}) == {"result": 42}
    assert "Traceback" not in fuzz_gateway.log()


def test_3_1_1_garbage_without_reply_address_is_logged(fuzz_gateway: GatewayProcess, broker: LocalBroker) -> None:
    device = Probe(broker.port, version=4)
    try:
        marker = uuid.uuid4().hex
        device.publish(f"devices/{marker}/add", b"\xc1\xc1")
        device.publish("devices/d1/add", msgpack.packb({"a": 1, "b": 1, "$cid": "k", "$rt": "roost/replies/d1/fz"}))
        device.subscribe("roost/replies/d1/fz")
        device.publish("devices/d1/add", msgpack.packb({"a": 1, "b": 1, "$cid": "k", "$rt": "roost/replies/d1/fz"}))
        assert device.wait_for("roost/replies/d1/fz").decoded() == {"result": 2, "$cid": "k"}
        assert f"dropped a request on 'devices/{marker}/add' with no reply address" in fuzz_gateway.log()
    finally:
        device.close()


hostile_payloads = st.one_of(
    st.integers(1, 5000).map(lambda depth: b"\x91" * depth + b"\x01"),  # deep nesting
    st.integers(1, 5000).map(lambda count: msgpack.packb({"value": list(range(count))})),  # big containers
    st.integers(0, 100).map(lambda count: msgpack.packb({f"k{n}": n for n in range(count)})),  # many arguments
    st.binary(min_size=1, max_size=16).map(lambda head: b"\xdd\xff\xff\xff\xff" + head),  # lying length
)
hostile_topics = st.one_of(
    st.integers(1, 60).map(lambda levels: "devices/d1/" + "/".join(["x"] * levels)),
    st.integers(1, 3000).map(lambda size: f"devices/{'d' * size}/add"),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=hostile_payloads, topic=hostile_topics | st.just("devices/d1/echo"))
def test_hostile_payloads_and_topics_get_a_clear_error(
    fuzz_gateway: GatewayProcess, fuzz_probe: Probe, payload: bytes, topic: str
) -> None:
    reply = fuzz_probe.request(topic, raw=payload, timeout=10)
    assert set(reply) <= {"result", "error"}
    if "error" in reply:
        assert reply["error"]["code"] in {"bad_payload", "invalid_arguments", "not_found"}, reply
    assert fuzz_gateway.process is not None and fuzz_gateway.process.poll() is None


@pytest.mark.slow
def test_memory_stays_flat_under_hostile_input(fuzz_gateway: GatewayProcess, broker: LocalBroker) -> None:
    """Thousands of hostile requests: the gateway's resident memory grows by no more than a few MB."""
    import psutil

    assert fuzz_gateway.process is not None
    process = psutil.Process(fuzz_gateway.process.pid)
    device = Probe(broker.port)
    reply_topic = reply_topic_for("d1")
    device.subscribe(reply_topic)
    bodies = [
        b"\x91" * 3000 + b"\x01",
        msgpack.packb({"value": list(range(3000))}),
        b"\xdd\xff\xff\xff\xff\x00",
        msgpack.packb({"a": 1, "b": 2}),
    ]

    def burst(count: int) -> None:
        for n in range(count):
            device.client.publish(
                "devices/d1/add" if n % 5 else "devices/d1/" + "x/" * 40 + "add",
                bodies[n % len(bodies)],
                qos=1,
                properties=reply_properties(reply_topic, n),
            )
        for _ in range(count):
            device.wait_for(reply_topic, timeout=20)

    try:
        burst(2000)  # warm up: caches, allocator arenas
        before = process.memory_info().rss
        for _ in range(4):
            burst(2000)
            print("RSS", process.memory_info().rss / 1e6)
        after = process.memory_info().rss
    finally:
        device.close()
    print(f"RSS {before / 1e6:.1f} MB → {after / 1e6:.1f} MB")
    assert after - before < 8 * 1024 * 1024, f"RSS grew by {(after - before) / 1e6:.1f} MB"

