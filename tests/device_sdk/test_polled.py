"""PolledDevice's logic on CPython with a scripted transport: bad input never wedges the loop.

The same code runs under MicroPython in ``test_micropython.py``; here each
failure (a repeated reply, MemoryError, a dead socket) is made to happen exactly
when wanted. Tests of timers (keepalive, back-off) run on a :class:`FakeClock`
that moves only while the device waits, so they hold however busy the machine.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from device_sdk import clock
from device_sdk.errors import CallTimeout, ConnectError, FunctionError, NotConnected
from device_sdk.polled import PolledDevice

Message = tuple[bytes, bytes]


def reply(request: dict[str, Any], **body: Any) -> Message:
    """The reply the gateway would send to ``request``."""
    return request["$rt"].encode(), msgpack.packb({**body, "$cid": request["$cid"]})


class FakeClock:
    """The SDK's millisecond clock, moved only by waits (the device's sleeps, the fake socket's idle waits)."""

    def __init__(self) -> None:
        self.now = 0

    def ticks_ms(self) -> int:
        return self.now

    def sleep_ms(self, ms: int) -> None:
        self.now += max(ms, 0)


class FakeTransport:
    """Stands in for umqtt: scripted incoming packets (or exceptions), recorded outgoing ones."""

    def __init__(self) -> None:
        self.incoming: deque[Message | BaseException] = deque()
        self.published: list[tuple[bytes, bytes, int, bool]] = []
        self.subscribed: list[bytes] = []
        self.unsubscribed: list[bytes] = []
        self.closes: list[bool] = []
        self.refuse_open: list[BaseException] = []
        self.fail_publish: list[BaseException] = []
        self.respond: Callable[[dict[str, Any]], list[Message]] | None = None
        self.opens = 0
        self.pings = 0
        self.will: tuple[bytes, bytes, bool] | None = None
        self.clock: FakeClock | None = None  # when set, an idle wait moves it instead of sleeping
        self._deliver: Callable[[bytes, bytes], None] | None = None

    def open(self, on_message: Callable[[bytes, bytes], None], will: tuple[bytes, bytes, bool] | None) -> None:
        if self.refuse_open:
            raise self.refuse_open.pop(0)
        self.opens += 1
        self._deliver, self.will = on_message, will

    def wait(self, ms: int) -> bool:
        assert self._deliver is not None, "read from a closed connection"
        if not self.incoming:
            if self.clock is not None:
                self.clock.sleep_ms(ms)
            else:
                threading.Event().wait(ms / 1000)  # an idle socket
            return False
        item = self.incoming.popleft()
        if isinstance(item, BaseException):
            raise item
        self._deliver(*item)
        return True

    def publish(self, topic: bytes, payload: bytes, qos: int, retain: bool) -> None:
        if self.fail_publish:
            raise self.fail_publish.pop(0)
        self.published.append((topic, payload, qos, retain))
        if self.respond is not None and payload:
            self.incoming.extend(self.respond(msgpack.unpackb(payload)))

    def subscribe(self, topic: bytes, qos: int) -> None:
        self.subscribed.append(topic)

    def unsubscribe(self, topic: bytes) -> None:
        self.unsubscribed.append(topic)

    def ping(self) -> None:
        self.pings += 1

    def close(self, disconnect: bool) -> None:
        self.closes.append(disconnect)
        self._deliver = None


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def fake_clock(fake: FakeTransport, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Put the SDK and the fake transport on a :class:`FakeClock`."""
    fake.clock = FakeClock()
    monkeypatch.setattr(clock, "ticks_ms", fake.clock.ticks_ms)
    monkeypatch.setattr(clock, "sleep_ms", fake.clock.sleep_ms)
    return fake.clock


@pytest.fixture
def device(fake: FakeTransport) -> PolledDevice:
    return PolledDevice("broker.invalid", device_id="d1", transport=fake).connect()


def test_a_call_sends_the_envelope_and_returns_the_result(fake: FakeTransport, device: PolledDevice) -> None:
    fake.respond = lambda request: [reply(request, result=request["a"] + request["b"])]
    assert device.call("devices/{device_id}/add", {"a": 1, "b": 2}) == 3
    topic, payload, qos, retain = fake.published[0]
    request = msgpack.unpackb(payload)
    assert (topic, qos, retain) == (b"devices/d1/add", 1, False)
    assert request["$rt"] == "roost/replies/d1" and len(request["$cid"]) == 8
    assert fake.subscribed == [b"roost/replies/d1"]


def test_a_repeated_reply_is_delivered_once(fake: FakeTransport, device: PolledDevice,
                                            caplog: pytest.LogCaptureFixture) -> None:
    fake.respond = lambda request: [reply(request, result=request["n"])] * 2
    assert device.call("devices/d1/x", {"n": 1}) == 1
    assert device.call("devices/d1/x", {"n": 2}) == 2  # reads the first call's repeat on the way
    assert "repeated or late reply" in caplog.text


def test_bad_and_stray_replies_are_dropped(fake: FakeTransport, device: PolledDevice,
                                           caplog: pytest.LogCaptureFixture) -> None:
    fake.respond = lambda request: [
        (b"roost/replies/d1", b"\xc1"),
        (b"roost/replies/d1", msgpack.packb({"result": 0, "$cid": b"stranger"})),
        (b"roost/replies/d1", msgpack.packb({"result": 0})),
        reply(request, result="mine"),
    ]
    assert device.call("devices/d1/x") == "mine"
    assert "reply is not msgpack" in caplog.text
    assert "unknown correlation id" in caplog.text
    assert "without a correlation id" in caplog.text


def test_an_error_reply_raises_its_class(fake: FakeTransport, device: PolledDevice) -> None:
    fake.respond = lambda request: [reply(request, error={"code": "function_error", "message": "RuntimeError: x"})]
    with pytest.raises(FunctionError) as caught:
        device.call("devices/d1/fail")
    assert caught.value.message == "RuntimeError: x"


def test_no_reply_times_out_and_a_late_one_is_dropped(fake: FakeTransport, device: PolledDevice,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(CallTimeout):
        device.call("devices/d1/x", timeout=0.05)
    request = msgpack.unpackb(fake.published[0][1])
    fake.incoming.append(reply(request, result=1))
    assert device.poll(0) == 0
    assert "repeated or late reply" in caplog.text


def test_memory_error_reconnects_and_subscribes_again(fake: FakeTransport, device: PolledDevice,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    device.subscribe("cmd/{device_id}", lambda topic, value: None)
    fake.incoming.append(MemoryError())
    fake.respond = lambda request: [reply(request, result="ok")]
    assert device.call("devices/d1/x") == "ok"
    assert "did not fit in the heap" in caplog.text
    assert fake.opens == 2 and fake.closes == [False]
    assert fake.subscribed == [b"roost/replies/d1", b"cmd/d1", b"roost/replies/d1", b"cmd/d1"]


def test_a_failed_publish_reconnects_and_sends_once_more(fake: FakeTransport, device: PolledDevice) -> None:
    fake.fail_publish.append(OSError(104, "connection reset"))
    fake.respond = lambda request: [reply(request, result="ok")]
    assert device.call("devices/d1/x") == "ok"
    assert fake.opens == 2 and len(fake.published) == 1


def test_unreachable_broker_backs_off_then_recovers(fake: FakeTransport, fake_clock: FakeClock,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    device = PolledDevice("broker.invalid", device_id="d1", transport=fake).connect()
    fake.incoming.append(OSError(-1))  # the broker closed the connection
    fake.refuse_open.extend([OSError(111, "refused")] * 2)
    device.poll(0)
    assert not device.connected
    with pytest.raises(NotConnected):
        device.publish("devices/d1/event", {"x": 1})  # the first retry fails at once
    with pytest.raises(NotConnected):
        device.publish("devices/d1/event", {"x": 1})  # inside the back-off: no attempt
    assert len(fake.refuse_open) == 1 and "next try in 100 ms" in caplog.text
    device.poll(100)  # sleeps out the back-off
    assert len(fake.refuse_open) == 1
    device.poll(0)  # the second retry fails: the back-off doubles
    assert not fake.refuse_open and not device.connected and "next try in 200 ms" in caplog.text
    device.poll(199)
    device.poll(0)
    assert not device.connected and fake.opens == 1  # 1 ms to go
    device.poll(1)
    device.poll(0)  # the third succeeds
    assert device.connected and fake.opens == 2
    device.publish("devices/d1/event", {"x": 1})
    assert fake.published[-1][:2] == (b"devices/d1/event", b"\x81\xa1x\x01")


def test_handlers_run_in_poll_and_bad_input_never_stops_them(fake: FakeTransport, device: PolledDevice,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, Any]] = []

    def broken(topic: str, value: Any) -> None:
        raise ValueError("handler bug")

    device.subscribe("cmd/{device_id}/+", lambda topic, value: seen.append((topic, value)))
    device.subscribe("cmd/d1/led", broken)
    fake.incoming.extend([
        (b"cmd/d1/led", b"\xc1"),
        (b"cmd/d1/led", msgpack.packb(True)),
        (b"cmd/d1/rate", b""),
        (b"other/topic", msgpack.packb(1)),
    ])
    assert device.poll(100) == 3
    assert seen == [("cmd/d1/led", True), ("cmd/d1/rate", None)]
    assert "dropped a message on cmd/d1/led" in caplog.text
    assert "handler for cmd/d1/led raised ValueError('handler bug')" in caplog.text
    assert fake.subscribed[-2:] == [b"cmd/d1/+", b"cmd/d1/led"]
    device.unsubscribe("cmd/d1/led")
    assert fake.unsubscribed == [b"cmd/d1/led"]


def test_a_full_inbox_drops_messages_with_a_log_line(fake: FakeTransport, caplog: pytest.LogCaptureFixture) -> None:
    device = PolledDevice("broker.invalid", device_id="d1", transport=fake, max_inbox=2).connect()
    device.subscribe("cmd/#", lambda topic, value: None)
    fake.incoming.extend([(b"cmd/a", b"\x01")] * 3)
    assert device.poll(0) == 2
    assert "the inbox is full" in caplog.text


def test_idle_connection_is_kept_alive(fake: FakeTransport, fake_clock: FakeClock) -> None:
    device = PolledDevice("broker.invalid", device_id="d1", transport=fake, keepalive=1).connect()
    device.poll(499)
    assert fake.pings == 0
    device.poll(1)  # half a keepalive since the last packet sent: a ping
    assert fake.pings == 1
    device.poll(499)
    assert fake.pings == 1
    device.poll(1)
    assert fake.pings == 2


def test_connect_close_and_last_will(fake: FakeTransport) -> None:
    fake.refuse_open.append(OSError(111, "refused"))
    device = PolledDevice("broker.invalid", device_id="d1", transport=fake, last_will=("status/{device_id}", "gone"))
    with pytest.raises(ConnectError, match="cannot connect"):
        device.connect()
    with device:
        assert device.connected and fake.will == (b"status/d1", msgpack.packb("gone"), False)
    assert fake.closes == [False, True] and not device.connected
