"""Hostile input on the real broker: random payloads and topics never take the gateway down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.devbroker import LocalBroker
from tests.conftest import TRANSPORTS
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe

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
        device.publish("devices/d1/add", msgpack.packb({"a": 1, "b": 1, "$cid": "k", "$rt": "fz/in"}))
        device.subscribe("fz/in")
        device.publish("devices/d1/add", msgpack.packb({"a": 1, "b": 1, "$cid": "k", "$rt": "fz/in"}))
        assert device.wait_for("fz/in").decoded() == {"result": 2, "$cid": "k"}
        assert f"dropped a request on 'devices/{marker}/add' with no reply address" in fuzz_gateway.log()
    finally:
        device.close()
