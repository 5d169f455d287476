"""Device programs run under the real MicroPython by ``tests/device_sdk/test_micropython.py``.

usage: micropython scenarios.py PORT DEVICE_ID SCENARIO [ARG...]

Each result is one JSON line on stdout (bin as ``{"$bin": hex}``); the SDK's
log lines go to stderr. Lines with ``"ready"`` tell the test to act.

The program's own waits (for replies, for messages) are scaled by the test
suite's ``ROOST_TEST_TIMEOUT_SCALE``; timeouts that a scenario expects to fire
are not.
"""

import json
import os
import sys

from device_sdk import CallTimeout, Device, NotConnected, RemoteError
from device_sdk.clock import ticks_diff, ticks_ms

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SCALE = float(os.getenv("ROOST_TEST_TIMEOUT_SCALE") or "1")
WAIT = 10 * SCALE  # seconds a call may wait for a reply that is expected to come


def plain(value: "Any") -> "Any":
    """A JSON-friendly copy of ``value``."""
    if isinstance(value, (bytes, bytearray)):
        return {"$bin": "".join(f"{b:02x}" for b in value)}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(value[key]) for key in value}
    return value


def out(**fields: "Any") -> None:
    """Report one result."""
    print(json.dumps(plain(fields)))


def outcome(dev: "Any", topic: str, args: "Any" = None, timeout: float = WAIT) -> "dict[str, Any]":
    """The result of a call, or the error it raised, as a dict."""
    try:
        return {"result": dev.call(topic, args, timeout)}
    except (RemoteError, CallTimeout, NotConnected) as exc:
        fields: dict[str, Any] = {"error": type(exc).__name__}
        if isinstance(exc, RemoteError):
            fields["code"] = exc.code
            fields["message"] = exc.message
            fields["details"] = exc.details
        return fields


def poll_until(dev: "Any", done: "Any", ms: int = 10000) -> None:
    """Poll until ``done()`` or ``ms`` milliseconds (scaled) have passed."""
    start = ticks_ms()
    while not done() and ticks_diff(ticks_ms(), start) < ms * SCALE:
        dev.poll(100)


def calls(dev: "Any", args: "list[str]") -> None:
    out(step="add", **outcome(dev, "devices/{device_id}/add", {"a": 40, "b": 2}))
    for value in (b"\x00\xff", None, 2.5, -7, "h\u00e9llo", True, 2**40):
        out(step="echo", **outcome(dev, "devices/{device_id}/echo", {"value": value}))


def errors(dev: "Any", args: "list[str]") -> None:
    cases = [
        ("devices/{device_id}/add", {"a": 1, "b": "x"}),
        ("devices/{device_id}/nope", None),
        ("devices/{device_id}/fail", {"reason": "sensor unplugged"}),
        ("devices/{device_id}/opaque", None),
        ("devices/{device_id}/hang", None),
    ]
    for topic, call_args in cases:
        out(topic=topic, **outcome(dev, topic, call_args))
    # Over the gateway's payload limit: an MQTT 3.1.1 request carries its reply
    # address inside the payload it cannot read, so it can only log and drop it.
    out(topic="oversized", **outcome(dev, "devices/{device_id}/add", {"a": 1, "b": 2, "pad": "x" * 300000}, 1))


def call_timeout(dev: "Any", args: "list[str]") -> None:
    start = ticks_ms()
    result = outcome(dev, "nobody/{device_id}/home", None, 0.3)
    out(elapsed_ms=ticks_diff(ticks_ms(), start), **result)


def events(dev: "Any", args: "list[str]") -> None:
    alerts: list[Any] = []
    dev.subscribe("alerts/{device_id}/temperature", lambda topic, value: alerts.append([topic, value]))
    for celsius in (20.0, 35.5, 25.0, 31.0):
        dev.publish("devices/{device_id}/readings/temperature", {"celsius": celsius})
    poll_until(dev, lambda: len(alerts) >= 2)
    out(alerts=alerts)


def subscribe(dev: "Any", args: "list[str]") -> None:
    got: list[Any] = []
    dev.subscribe("cmd/{device_id}/+", lambda topic, value: got.append([topic, value]))
    out(ready=True)
    poll_until(dev, lambda: len(got) >= 2)
    dev.unsubscribe("cmd/{device_id}/+")
    out(got=got)


def busy(dev: "Any", args: "list[str]") -> None:
    # The event fills the gateway's one-call queue, so the call right behind it is refused.
    dev.publish("devices/{device_id}/wait", {"seconds": SCALE})
    out(step="overloaded", **outcome(dev, "devices/{device_id}/wait", {"seconds": 0.01}))
    result = outcome(dev, "devices/{device_id}/park", {"path": args[0]}, 3 * WAIT)
    while result.get("code") == "overloaded":
        dev.poll(100)
        result = outcome(dev, "devices/{device_id}/park", {"path": args[0]}, 3 * WAIT)
    out(step="park", **result)


def reconnect(dev: "Any", args: "list[str]") -> None:
    got: list[Any] = []
    dev.subscribe("cmd/{device_id}", lambda topic, value: got.append(value))
    out(step="before", ready=True, **outcome(dev, "devices/{device_id}/add", {"a": 1, "b": 1}))
    sys.stdin.readline()  # the test restarts the broker, then writes a line
    start = ticks_ms()
    attempts = 1
    result = outcome(dev, "devices/{device_id}/add", {"a": 2, "b": 2}, 2)
    while "result" not in result and ticks_diff(ticks_ms(), start) < 30000 * SCALE:
        dev.poll(200)
        attempts += 1
        result = outcome(dev, "devices/{device_id}/add", {"a": 2, "b": 2}, 2)
    out(step="after", ready=True, attempts=attempts, **result)
    poll_until(dev, lambda: got)
    out(step="pushed", got=got)


def bad_replies(dev: "Any", args: "list[str]") -> None:
    out(step="first", **outcome(dev, "fake/{device_id}/twice", {"n": 1}))
    out(step="second", **outcome(dev, "fake/{device_id}/twice", {"n": 2}))


def big_message(dev: "Any", args: "list[str]") -> None:
    got: list[Any] = []
    dev.subscribe("big/{device_id}", lambda topic, value: got.append(value))
    out(ready=True)
    poll_until(dev, lambda: got, 20000)
    out(got=got[:1], **outcome(dev, "devices/{device_id}/add", {"a": 2, "b": 3}))


def will(dev: "Any", args: "list[str]") -> None:
    out(ready=True)
    sys.stdin.readline()  # killed before this returns


SCENARIOS = {
    "calls": calls,
    "errors": errors,
    "call_timeout": call_timeout,
    "events": events,
    "subscribe": subscribe,
    "busy": busy,
    "reconnect": reconnect,
    "bad_replies": bad_replies,
    "big_message": big_message,
    "will": will,
}


def main() -> None:
    port, device_id, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    will = ("status/{device_id}", "offline")
    dev = Device("127.0.0.1", port, device_id=device_id, last_will=will, connect_timeout=WAIT)
    dev.connect()
    try:
        SCENARIOS[name](dev, sys.argv[4:])
    finally:
        dev.close()


main()
