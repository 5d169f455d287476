"""The dispatcher with the in-memory transport and the inline executor: routing and every reply path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from gateway.dispatch import Dispatcher, DispatchOptions
from gateway.executors.base import Call, Executor
from gateway.executors.inline import InlineExecutor
from gateway.registry import Registry, Router
from gateway.topics import TopicTemplate
from gateway.transport.base import InboundMessage
from gateway.transport.memory import MemoryTransport
from tests.support.timeouts import scaled

router = Router()


@router.function("devices/{device_id}/add")
def add(a: int, b: int) -> int:
    return a + b


@router.function("devices/{device_id}/boom")
def boom() -> None:
    raise ValueError("bad sensor")


@router.function("devices/{device_id}/opaque")
def opaque() -> object:
    return object()


@router.function("devices/{device_id}/temp", publish="alerts/{device_id}")
def temp(device_id: str, c: float) -> dict[str, Any] | None:
    return {"device_id": device_id, "c": c} if c > 30 else None


@router.function("devices/{device_id}/deep/{rest:path}", publish="x/y/z/echo/{device_id}/{rest}")
def deep(rest: str) -> str:
    """An event whose result goes to a topic as deep as the request's own."""
    return rest


@router.function("devices/{device_id}/nap")
async def nap(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "rested"


@router.function("devices/{name}/status")
def status(name: str) -> str:
    """Names no {device_id}, but lives in the devices' namespace."""
    return f"{name} ok"


@router.function("sites/{site}/ping")
def ping(site: str) -> str:
    """Outside every device-scoped filter."""
    return site


class BrokenExecutor(InlineExecutor):
    """An executor with a bug: its future fails with a plain exception."""

    def submit(self, call: Call) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.set_exception(KeyError("bug"))
        return future


def make(executor: Executor | None = None, **options: Any) -> tuple[Dispatcher, MemoryTransport]:
    transport = MemoryTransport()
    namespace = (TopicTemplate.parse("devices/{device_id}/{function:path}"),)
    dispatcher = Dispatcher(
        Registry.from_specs(router.specs),
        {"inline": executor or InlineExecutor(10, 1000)},
        "inline",
        transport,
        DispatchOptions(namespace=namespace, max_payload_bytes=1000, call_timeout=1.0, **options),
        ["devices/+/#"],
    )
    return dispatcher, transport


def msg(
    topic: str,
    args: Any = None,
    *,
    raw: bytes | None = None,
    rt: str | None = "r/1",
    qos: int = 1,
    expiry: int | None = None,
    received_at: float | None = None,
) -> InboundMessage:
    payload = raw if raw is not None else msgpack.packb(args or {}, use_bin_type=True)
    return InboundMessage(topic, payload, qos, received_at or time.monotonic(), rt, b"c" if rt else None, expiry)


def run(
    dispatcher: Dispatcher,
    transport: MemoryTransport,
    *messages: InboundMessage,
    until: Callable[[], bool] | None = None,
) -> list[Any]:
    async def go() -> None:
        for message in messages:
            dispatcher.handle(message)
        limit = scaled(10)  # a poll on the loop: the replies come after a few turns, or a call's own timeout
        deadline = time.monotonic() + limit
        while not (until() if until else len(transport.published) >= len(messages)):
            assert time.monotonic() < deadline, f"no reply within {limit:g} s"
            await asyncio.sleep(0.001)

    asyncio.run(go())
    return [msgpack.unpackb(m.payload) for m in transport.published]


def test_result_reply_goes_to_response_topic_with_correlation() -> None:
    dispatcher, transport = make()
    assert run(dispatcher, transport, msg("devices/d1/add", {"a": 2, "b": 3})) == [{"result": 5}]
    out = transport.published[0]
    assert (out.topic, out.qos, out.correlation_data) == ("r/1", 1, b"c")
    assert len(transport.acked) == 1


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [
        (msg("devices/d1/add", raw=b"\xc1"), "bad_payload", "not valid msgpack"),
        (msg("devices/d1/add", raw=b"\x00" * 1001), "bad_payload", "over the limit of 1000"),
        (msg("devices/d1/add", {"a": 1}), "invalid_arguments", "b: Field required"),
        (msg("devices/d1/nothing"), "not_found", "no function is registered at 'devices/d1/nothing'"),
        (msg("devices/d1/boom"), "function_error", "ValueError: bad sensor"),
        (msg("devices/d1/opaque"), "bad_result", "cannot encode object of type object"),
        (msg("devices/d1/add", {"a": 1, "b": 1}, expiry=1, received_at=time.monotonic() - 5), "timeout", "expired"),
        (msg("devices/d1/nap", {"seconds": 5}), "timeout", "did not finish within 1 s"),
    ],
)
def test_error_codes(message: InboundMessage, code: str, text: str) -> None:
    dispatcher, transport = make()
    [reply] = run(dispatcher, transport, message)
    assert reply["error"]["code"] == code
    assert text in reply["error"]["message"]


def test_overloaded_when_the_queue_is_full() -> None:
    dispatcher, transport = make(InlineExecutor(max_queue=2, max_result_bytes=1000))
    naps = [msg("devices/d1/nap", {"seconds": 0.05}) for _ in range(3)]
    replies = run(dispatcher, transport, *naps)
    codes = sorted(r.get("error", {}).get("code", "ok") for r in replies)
    assert codes == ["ok", "ok", "overloaded"]


def test_executor_bug_is_answered_internal() -> None:
    dispatcher, transport = make(BrokenExecutor(10, 1000))
    [reply] = run(dispatcher, transport, msg("devices/d1/add", {"a": 1, "b": 2}))
    assert reply == {"error": {"code": "internal", "message": "internal gateway error"}}


class RaisingPool(InlineExecutor):
    """An executor with workers to share whose submit has a bug: it raises a plain exception."""

    name = "local"

    def submit(self, call: Call) -> asyncio.Future[bytes]:
        raise RuntimeError("bug in submit")


def test_a_bug_in_submit_is_answered_internal_and_frees_the_device_s_share() -> None:
    # A share of one call: had the first call kept its place, the second would wait for ever (or be refused).
    dispatcher, transport = make(RaisingPool(10, 1000), device_concurrency=1)
    replies = run(dispatcher, transport, *(msg("devices/d1/add", {"a": 1, "b": n}) for n in range(3)))
    assert replies == [{"error": {"code": "internal", "message": "internal gateway error"}}] * 3


def test_reply_loop_and_wildcard_reply_topics_are_dropped() -> None:
    dispatcher, transport = make()
    looped = msg("devices/d1/add", {"a": 1, "b": 2}, rt="devices/d1/add")
    wildcard = msg("devices/d1/add", {"a": 1, "b": 2}, rt="replies/+")
    ok = msg("devices/d1/add", {"a": 1, "b": 2})
    assert run(dispatcher, transport, looped, wildcard, ok, until=lambda: len(transport.published) >= 1) == [
        {"result": 3}
    ]
    assert dispatcher.stats.dropped == {"reply_topic_refused": 2}


def test_event_publishes_result_to_publish_template_and_none_publishes_nothing() -> None:
    dispatcher, transport = make()
    hot = msg("devices/d7/temp", {"c": 35.0}, rt=None)
    cold = msg("devices/d7/temp", {"c": 20.0}, rt=None)
    run(dispatcher, transport, cold, hot, until=lambda: len(transport.published) >= 1)
    [alert] = transport.published
    assert alert.topic == "alerts/d7"
    assert msgpack.unpackb(alert.payload) == {"device_id": "d7", "c": 35.0}


def test_311_not_found_replies_on_the_device_reply_topic() -> None:
    dispatcher, transport = make()
    message = msg("devices/d3/missing", {"$cid": "k"}, rt=None)
    [reply] = run(dispatcher, transport, message)
    assert reply == {
        "error": {"code": "not_found", "message": "no function is registered at 'devices/d3/missing'"},
        "$cid": "k",
    }
    assert transport.published[0].topic == "roost/replies/d3"


def make_with_reply_spaces(**options: Any) -> tuple[Dispatcher, MemoryTransport]:
    """The default reply space (roost/replies/{device_id}) and dead letters on dead/{device_id}."""
    spaces = (TopicTemplate.parse("roost/replies/{device_id}"),)
    return make(reply_spaces=spaces, dead_letter=TopicTemplate.parse("dead/{device_id}"), **options)


def test_reply_spaces_hold_error_replies_too_and_dead_letter_the_refusal() -> None:
    dispatcher, transport = make_with_reply_spaces()
    forged = "roost/replies/B/inbox"
    run(
        dispatcher,
        transport,
        msg("devices/A/add", raw=b"\xc1", rt=forged),  # undecodable: the error reply is held to the space too
        msg("devices/A/add", {"a": 1, "b": 1}, rt=forged),
        msg("devices/A/add", {"a": 2, "b": 2}, rt="roost/replies/A/x"),
    )
    assert [m.topic for m in transport.published] == ["dead/A", "dead/A", "roost/replies/A/x"]
    letters = [msgpack.unpackb(m.payload) for m in transport.published[:2]]
    message = "reply topic 'roost/replies/B/inbox' is outside device 'A''s reply space"
    assert [letter["error"] for letter in letters] == [{"code": "bad_payload", "message": message}] * 2
    assert dispatcher.stats.dropped == {"reply_space": 2}
    assert len(transport.acked) == 3  # refused requests are acknowledged too: nothing is left at the broker


def test_requests_that_name_no_device_in_the_devices_topics_are_refused_and_others_are_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, transport = make_with_reply_spaces()
    forged = "roost/replies/B/inbox"
    run(
        dispatcher,
        transport,
        msg("devices/A/status", rt=forged),  # the namespace says whose topic it is: A's
        msg("devices/A/", rt=forged),  # no device level to check against: refused, not waved through
        msg("devices//add", {"a": 1, "b": 1}, rt=forged),
        msg("devices/A", rt=forged),
        msg("devices/A/status", rt="roost/replies/A/x"),
        msg("sites/s1/ping", rt="ops/inbox"),  # not a device's topic: the broker ACL decides who sends here
        until=lambda: len(transport.published) >= 3,
    )
    letter, *replies = [(m.topic, msgpack.unpackb(m.payload)) for m in transport.published]
    assert letter[0] == "dead/A" and letter[1]["topic"] == "devices/A/status"
    assert letter[1]["error"]["message"] == f"reply topic {forged!r} is outside device 'A''s reply space"
    assert replies == [("roost/replies/A/x", {"result": "A ok"}), ("ops/inbox", {"result": "s1"})]
    assert dispatcher.stats.dropped == {"reply_space": 4}
    assert (
        "refused a request on 'devices/A/': its reply topic 'roost/replies/B/inbox' cannot be checked:"
        " the request's topic names no device"
    ) in caplog.text


def test_the_rate_comes_first_and_a_flood_of_refusals_is_not_one_of_dead_letters() -> None:
    # Over its rate (a burst of 2, no refill to speak of), a request is not even parsed: counted, not refused.
    dispatcher, transport = make_with_reply_spaces(device_rate=0.001, device_burst=2)
    forged = [msg("devices/A/add", {"a": 1, "b": 1}, rt="roost/replies/B/inbox") for _ in range(5)]
    stats = dispatcher.stats
    run(dispatcher, transport, *forged, until=lambda: stats.functions["devices/{device_id}/add"].outcomes.get(
        "rate_limited") == 3)  # fmt: skip
    assert stats.dropped == {"reply_space": 2}
    assert [m.topic for m in transport.published] == ["dead/A", "dead/A"]  # nothing goes to B's inbox
    # Without a rate, refusals are still bounded: the device's allowance of log lines and dead letters.
    dispatcher, transport = make_with_reply_spaces()
    flood = [msg("devices/A/add", {"a": 1, "b": 1}, rt="roost/replies/B/inbox") for _ in range(50)]
    run(dispatcher, transport, *flood, until=lambda: dispatcher.stats.dropped.get("reply_space") == 50)
    assert [m.topic for m in transport.published] == ["dead/A"] * 5


def test_a_rendered_topic_the_broker_would_refuse_is_dropped_not_published() -> None:
    dispatcher, transport = make(max_topic_levels=8)
    # Both requests are within 8 levels; their results' topics gain 3: 6 levels, then 10.
    shallow, deepest = msg("devices/d1/deep/a", rt=None), msg("devices/d1/deep/a/b/c/d/e", rt=None)
    dropped = dispatcher.stats.dropped
    run(dispatcher, transport, shallow, deepest, until=lambda: dropped.get("unpublishable_topic") == 1)
    assert [m.topic for m in transport.published] == ["x/y/z/echo/d1/a"]  # the first came before the drop
