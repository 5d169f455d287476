"""The CPython device (paho, MQTT 5 and 3.1.1) against a real mosquitto and a real gateway."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from device_sdk import (
    BadPayload,
    CallTimeout,
    ConnectError,
    Device,
    FunctionError,
    InvalidArguments,
    NotConnected,
    NotFound,
    RemoteError,
    RemoteTimeout,
)
from device_sdk.errors import BadResult
from tests.device_sdk.programs import ROOT
from tests.device_sdk.stack import Stack
from tests.support.probe import Probe
from tests.support.timeouts import scaled, wait_for

REPLY = scaled(10.0)  # how long a call waits for a reply that comes (call()'s default is 5 s)


@pytest.fixture
def device(stack: Stack, device_id: str) -> Iterator[Device]:
    with Device("127.0.0.1", stack.port, device_id=device_id) as dev:
        yield dev


def test_call_and_device_id_substitution(device: Device) -> None:
    assert device.call("devices/{device_id}/add", {"a": 1, "b": 2}, timeout=REPLY) == 3
    assert device.call("devices/{device_id}/echo", {"value": b"\x00"}, timeout=REPLY) == {
        "device_id": device.device_id,
        "value": b"\x00",
    }


def test_many_calls_in_flight(device: Device) -> None:
    # The gateway answers none of them before all twenty wait there together: one at a time would never end.
    futures = [device.call_async("devices/{device_id}/gather", {"size": 20}, timeout=REPLY) for _ in range(20)]
    assert [f.result(REPLY) for f in futures] == [20] * 20


@pytest.mark.parametrize(
    ("topic", "args", "error"),
    [
        ("devices/{device_id}/add", {"a": "x" * 300_000, "b": 1}, BadPayload),  # MQTT 5: answered
        ("devices/{device_id}/add", {"a": 1}, InvalidArguments),
        ("devices/{device_id}/nope", None, NotFound),
        ("devices/{device_id}/fail", None, FunctionError),
        ("devices/{device_id}/opaque", None, BadResult),
        ("devices/{device_id}/hang", None, RemoteTimeout),
    ],
)
def test_error_replies_raise_their_class(device: Device, topic: str, args: dict[str, Any] | None,
                                         error: type[RemoteError]) -> None:
    with pytest.raises(error) as caught:
        device.call(topic, args, timeout=REPLY)
    assert "Traceback" not in caught.value.message


def test_no_reply_is_a_call_timeout_for_call_and_call_async(device: Device) -> None:
    with pytest.raises(CallTimeout):
        device.call("nobody/{device_id}", timeout=0.2)
    future = device.call_async("nobody/{device_id}", timeout=0.2)
    assert isinstance(future.exception(REPLY), CallTimeout)


def test_subscriptions_events_and_poll(device: Device) -> None:
    alerts: list[tuple[str, Any]] = []
    on_handler_thread = threading.Event()

    def on_alert(topic: str, value: Any) -> None:
        alerts.append((topic, value))
        if threading.current_thread() is not threading.main_thread():
            on_handler_thread.set()

    device.subscribe("alerts/{device_id}/temperature", on_alert, timeout=REPLY)
    for celsius in (20.0, 35.5):  # the cold reading comes first: an alert of it would come first too
        device.publish("devices/{device_id}/readings/temperature", {"celsius": celsius}, timeout=REPLY)
    wait_for(lambda: device.poll(100) >= 0 and alerts, 10, "the alert")
    assert alerts == [
        (f"alerts/{device.device_id}/temperature", {"device_id": device.device_id, "celsius": 35.5, "limit": 30.0})
    ]
    assert on_handler_thread.is_set()


def test_mqtt_311_convention(stack: Stack, device_id: str) -> None:
    with Device("127.0.0.1", stack.port, device_id=device_id, mqtt_version="3.1.1") as dev:
        assert dev.call("devices/{device_id}/add", {"a": 2, "b": 2}, timeout=REPLY) == 4
        with pytest.raises(NotFound):
            dev.call("devices/{device_id}/nope", timeout=REPLY)


def test_a_repeated_reply_resolves_the_call_once(stack: Stack, device_id: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    responder = Probe(stack.port)
    try:
        responder.subscribe(f"fake/{device_id}/twice")
        with Device("127.0.0.1", stack.port, device_id=device_id) as dev:
            future = dev.call_async("fake/{device_id}/twice")
            request = responder.wait_for(f"fake/{device_id}/twice")
            assert request.correlation_data is not None
            for value in ("first", "second"):
                responder.publish(f"roost/replies/{device_id}", msgpack.packb({"result": value}),
                                  correlation_data=request.correlation_data)
            assert future.result(REPLY) == "first"
            # The SDK keeps no count of dropped replies: its log line is what a device's developer sees.
            wait_for(lambda: "repeated or late reply" in caplog.text, 10, "the second reply to be dropped")
    finally:
        responder.close()


def test_close_fails_waiting_calls(stack: Stack, device_id: str) -> None:
    dev = Device("127.0.0.1", stack.port, device_id=device_id).connect()
    future = dev.call_async("nobody/{device_id}", timeout=30)
    dev.close()
    assert isinstance(future.exception(REPLY), NotConnected)
    assert not dev.connected
    with pytest.raises(NotConnected, match="call connect"):
        dev.call_async("devices/{device_id}/add")


def test_connect_error_when_no_broker_listens(device_id: str, free_port: int) -> None:
    with pytest.raises(ConnectError):
        Device("127.0.0.1", free_port, device_id=device_id, connect_timeout=2).connect()


@pytest.mark.slow
def test_reconnects_and_subscribes_again_after_a_broker_restart(make_stack: Callable[..., Stack],
                                                                 device_id: str) -> None:
    own = make_stack()
    got: list[Any] = []
    with Device("127.0.0.1", own.port, device_id=device_id) as dev:
        dev.subscribe("cmd/{device_id}", lambda topic, value: got.append(value), timeout=REPLY)
        assert dev.call("devices/{device_id}/add", {"a": 1, "b": 1}, timeout=REPLY) == 2
        own.broker.stop()
        own.broker.start()
        # Calls fail (not connected, or no reply within 1 s) until the device is back.
        call = functools.partial(dev.call, "devices/{device_id}/add", {"a": 2, "b": 2}, timeout=1)
        result = wait_for(call, 30, "a call to succeed after the restart", ignore=(CallTimeout, NotConnected))
        assert result == 4 and dev.connected
        probe = Probe(own.port)
        try:
            probe.publish(f"cmd/{device_id}", msgpack.packb("after the restart"))
            wait_for(lambda: dev.poll(100) >= 0 and got, 10, "the message after the restart")
        finally:
            probe.close()
        assert got == ["after the restart"]


WILL_PROGRAM = """
import sys
from device_sdk import Device
dev = Device("127.0.0.1", int(sys.argv[1]), device_id=sys.argv[2], last_will=("status/{device_id}", "offline"))
dev.connect()
print("ready", flush=True)
sys.stdin.readline()
"""


def test_last_will_when_the_process_dies(stack: Stack, device_id: str) -> None:
    probe = Probe(stack.port)
    process = subprocess.Popen(
        [sys.executable, "-c", WILL_PROGRAM, str(stack.port), device_id],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        probe.subscribe(f"status/{device_id}")
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        process.kill()
        process.wait(scaled(5))
        assert msgpack.unpackb(probe.wait_for(f"status/{device_id}").payload) == "offline"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(scaled(5))
        probe.close()
