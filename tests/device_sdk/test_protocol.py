"""Request and reply envelopes against the golden vectors; topics; correlation ids."""

from __future__ import annotations

from typing import Any

import pytest

from device_sdk import protocol
from device_sdk.errors import BadReply, InvalidArguments, NotFound, RemoteTimeout
from tests.support.golden import vectors

GOLDEN = vectors()


def test_requests_match_the_golden_vectors() -> None:
    assert protocol.request_payload({"a": 1, "b": 2}) == GOLDEN["request_add"][1]
    assert protocol.request_payload({"a": 1, "b": 2}, "c-1") == GOLDEN["request_311_str_cid"][1]
    assert protocol.request_payload({"a": 40, "b": 2}, b"\x01\x02\x03\x04", "pi/7/inbox") == (
        GOLDEN["request_311_bin_cid_rt"][1]
    )
    assert protocol.request_payload({}) == protocol.request_payload(None) == b""


@pytest.mark.parametrize("args", [{"$cid": "mine"}, {1: "x"}, [1, 2], "a=1"])
def test_arguments_must_be_a_map_of_plain_names(args: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        protocol.request_payload(args)


def test_replies_match_the_golden_vectors() -> None:
    assert protocol.parse_reply(GOLDEN["reply_result"][1]) == (None, (True, 3))
    assert protocol.parse_reply(GOLDEN["reply_result_311"][1]) == ("c-1", (True, 3))
    assert protocol.parse_reply(GOLDEN["reply_result_311_bin"][1]) == (b"\x01\x02\x03\x04", (True, 42))
    assert protocol.parse_reply(GOLDEN["reply_result_nil"][1]) == (None, (True, None))
    assert protocol.parse_reply(GOLDEN["reply_result_map"][1])[1] == (True, {"device_id": "d1", "value": b"\x00\xff"})

    _, (ok, error) = protocol.parse_reply(GOLDEN["reply_error_not_found"][1])
    assert not ok and isinstance(error, NotFound)
    assert error.message == "no function is registered at 'devices/d1/nope'" and error.details is None

    _, (ok, error) = protocol.parse_reply(GOLDEN["reply_error_invalid_arguments"][1])
    assert isinstance(error, InvalidArguments)
    assert error.details == [{"loc": ["b"], "msg": "Input should be a valid integer", "type": "int_type"}]

    cid, (ok, error) = protocol.parse_reply(GOLDEN["reply_error_311"][1])
    assert cid == "c-9" and isinstance(error, RemoteTimeout) and error.code == "timeout"
    with pytest.raises(RemoteTimeout):
        protocol.unwrap((ok, error))


@pytest.mark.parametrize("payload", [b"\xc1", b"", b"\x92\x01\x02", b"\x81\xa4$cid\x01"])
def test_unusable_replies_raise_bad_reply(payload: bytes) -> None:
    with pytest.raises(BadReply):
        protocol.parse_reply(payload)


@pytest.mark.parametrize(
    "body", [{}, {"result": 1, "error": {"code": "x"}}, {"error": "boom"}, {"error": {"message": "no code"}}]
)
def test_replies_without_exactly_one_outcome_fail_the_call(body: dict[str, Any]) -> None:
    ok, error = protocol.outcome(body)
    assert not ok and isinstance(error, BadReply)


@pytest.mark.parametrize(
    ("mqtt_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("+/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/b/c", "a/b", False),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
    ],
)
def test_filter_matching(mqtt_filter: str, topic: str, expected: bool) -> None:
    assert protocol.matches(mqtt_filter, topic) is expected


def test_topics_and_device_ids() -> None:
    assert protocol.expand("devices/{device_id}/add", "pi-1") == "devices/pi-1/add"
    for bad in ("", "a/b", "a+", "#", "x\x00"):
        with pytest.raises(ValueError):
            protocol.check_device_id(bad)
    assert protocol.client_id("pi-1").startswith("roost-pi-1-")


def test_correlation_ids_are_unique_per_device_object() -> None:
    first, second = protocol.CorrelationIds(), protocol.CorrelationIds()
    ids = [first.next() for _ in range(1000)] + [second.next() for _ in range(1000)]
    assert len(set(ids)) == 2000 and all(len(cid) == 8 for cid in ids)


def test_pending_hands_out_each_slot_once() -> None:
    pending = protocol.Pending(remember=2)
    pending.add(b"1", "slot")
    assert len(pending) == 1
    assert pending.take(b"1") == "slot"
    assert pending.take(b"1") is None
    assert "repeated or late" in pending.why_dropped(b"1")
    assert "unknown" in pending.why_dropped(b"2")
    assert "without a correlation id" in pending.why_dropped(None)
    for n in range(3):
        pending.add(bytes([n]), n + 1)
        pending.take(bytes([n]))
    assert "unknown" in pending.why_dropped(b"1")  # only the last two are remembered
    pending.add(b"x", "a")
    assert pending.clear() == ["a"] and len(pending) == 0
