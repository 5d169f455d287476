"""The SDK under the real MicroPython (unix port) against a real mosquitto and a real gateway."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from tests.device_sdk.programs import Program, micropython, run
from tests.device_sdk.stack import Stack
from tests.integration.test_operations import metrics_env
from tests.support.ops import scrape, value
from tests.support.ops import wait_for as wait_for_endpoint
from tests.support.probe import Probe
from tests.support.timeouts import wait_for


def scenario(stack: Stack, device_id: str, name: str, *args: str, heap_kib: int | None = None) -> Program:
    return micropython("scenarios.py", str(stack.port), device_id, name, *args, heap_kib=heap_kib)


def test_calls_return_results_of_every_type(stack: Stack, device_id: str) -> None:
    results = run("scenarios.py", str(stack.port), device_id, "calls").results
    assert results[0] == {"step": "add", "result": 42}
    echoed = [r["result"]["value"] for r in results[1:]]
    assert echoed == [{"$bin": "00ff"}, None, 2.5, -7, "h\u00e9llo", True, 2**40]
    assert all(r["result"]["device_id"] == device_id for r in results[1:])


@pytest.mark.slow
def test_every_error_code_a_device_can_cause(stack: Stack, device_id: str) -> None:
    by_topic = {r["topic"]: r for r in run("scenarios.py", str(stack.port), device_id, "errors").results}
    invalid = by_topic["devices/{device_id}/add"]
    assert (invalid["error"], invalid["code"]) == ("InvalidArguments", "invalid_arguments")
    assert invalid["details"] == [{"loc": ["b"], "msg": "Input should be a valid integer", "type": "int_type"}]
    not_found = by_topic["devices/{device_id}/nope"]
    assert (not_found["error"], not_found["code"]) == ("NotFound", "not_found")
    assert not_found["message"] == f"no function is registered at 'devices/{device_id}/nope'"
    failed = by_topic["devices/{device_id}/fail"]
    assert (failed["error"], failed["message"]) == ("FunctionError", "RuntimeError: sensor unplugged")
    assert by_topic["devices/{device_id}/opaque"]["error"] == "BadResult"
    timeout = by_topic["devices/{device_id}/hang"]
    assert (timeout["error"], timeout["code"]) == ("RemoteTimeout", "timeout")
    # Too large for the gateway: a 3.1.1 request's reply address is inside the unread payload.
    assert by_topic["oversized"]["error"] == "CallTimeout"


@pytest.mark.slow
def test_busy_gateway_answers_overloaded_then_unavailable(
    make_stack: Callable[..., Stack], device_id: str, tmp_path: Path
) -> None:
    own = make_stack(env={"ROOST_LIMITS__MAX_QUEUE": "1", "ROOST_SHUTDOWN_GRACE": "0.2"})
    marker = tmp_path / "parked"
    with scenario(own, device_id, "busy", str(marker)) as device:
        overloaded = device.expect(step="overloaded")
        assert (overloaded["error"], overloaded["code"]) == ("Overloaded", "overloaded")
        wait_for(marker.exists, 15, "the parked call to run")
        assert own.gateway.stop() == 0
        parked = device.expect(step="park")
        assert (parked["error"], parked["code"]) == ("Unavailable", "unavailable")
        device.finish()


def test_no_reply_raises_call_timeout(stack: Stack, device_id: str) -> None:
    [result] = run("scenarios.py", str(stack.port), device_id, "call_timeout").results
    assert result["error"] == "CallTimeout"
    # Not before the call's 0.3 s; and that timeout, not the 5 s default of call(), is the one that fired.
    assert 300 <= result["elapsed_ms"] < 5000


def test_events_reach_the_gateway_and_alerts_come_back(stack: Stack, device_id: str) -> None:
    [result] = run("scenarios.py", str(stack.port), device_id, "events").results
    topic = f"alerts/{device_id}/temperature"
    assert result["alerts"] == [
        [topic, {"device_id": device_id, "celsius": 35.5, "limit": 30.0}],
        [topic, {"device_id": device_id, "celsius": 31.0, "limit": 30.0}],
    ]


def test_subscription_handlers_run_in_poll(stack: Stack, device_id: str) -> None:
    probe = Probe(stack.port)
    try:
        with scenario(stack, device_id, "subscribe") as device:
            device.expect(ready=True)
            probe.publish(f"cmd/{device_id}/led", b"\xc1")  # not msgpack: dropped with a log line
            probe.publish(f"cmd/{device_id}/led/extra", msgpack.packb(0))  # "+" matches one level only
            probe.publish(f"cmd/{device_id}/led", msgpack.packb({"on": True}))
            probe.publish(f"cmd/{device_id}/rate", msgpack.packb(2.5))
            result = device.finish()[-1]
            assert result["got"] == [[f"cmd/{device_id}/led", {"on": True}], [f"cmd/{device_id}/rate", 2.5]]
            assert "dropped a message on cmd/" in device.stderr
    finally:
        probe.close()


@pytest.mark.slow
def test_reconnects_after_a_broker_restart(make_stack: Callable[..., Stack], device_id: str, free_port: int) -> None:
    own = make_stack(env=metrics_env(free_port))
    with scenario(own, device_id, "reconnect") as device:
        assert device.expect(step="before")["result"] == 2
        own.broker.stop()
        own.broker.start()

        def gateway_reconnected() -> bool:
            samples = scrape(free_port)
            return (
                value(samples, "roost_broker_reconnects_total") >= 1 and value(samples, "roost_broker_connected") == 1
            )

        wait_for_endpoint(gateway_reconnected, 20, "the gateway to reconnect")
        device.send_line()
        after = device.expect(step="after", timeout=40)
        assert after["result"] == 4, device.stderr
        probe = Probe(own.port)
        try:
            probe.publish(f"cmd/{device_id}", msgpack.packb("still subscribed"))
            assert device.expect(step="pushed")["got"] == ["still subscribed"]
        finally:
            probe.close()
        device.finish()
    assert "reconnected to the broker" in device.stderr


def test_bad_unknown_and_repeated_replies_are_dropped(stack: Stack, device_id: str) -> None:
    responder = Probe(stack.port)
    try:
        responder.subscribe(f"fake/{device_id}/twice")
        with scenario(stack, device_id, "bad_replies") as device:
            for n in (1, 2):
                request = msgpack.unpackb(responder.wait_for(f"fake/{device_id}/twice").payload)
                assert request["n"] == n
                reply_to, cid = request["$rt"], request["$cid"]
                assert reply_to == f"roost/replies/{device_id}"
                responder.publish(reply_to, b"\xc1 not msgpack")
                responder.publish(reply_to, msgpack.packb({"result": "stray", "$cid": b"unknown"}))
                for _ in range(2):
                    responder.publish(reply_to, msgpack.packb({"result": n * 10, "$cid": cid}))
            results = device.finish()
        assert [r["result"] for r in results] == [10, 20]
        assert "dropped a reply: reply is not msgpack" in device.stderr
        assert "unknown correlation id" in device.stderr
        assert "repeated or late reply" in device.stderr
    finally:
        responder.close()


def test_a_message_too_large_for_the_heap_costs_a_reconnect(stack: Stack, device_id: str) -> None:
    probe = Probe(stack.port)
    try:
        with scenario(stack, device_id, "big_message", heap_kib=160) as device:
            device.expect(ready=True)
            probe.publish(f"big/{device_id}", msgpack.packb(b"x" * 400_000))
            # The SDK logs it after it has subscribed again; its log is all a device shows of a reconnect.
            wait_for(lambda: "reconnected to the broker" in device.stderr, 20, "the device to reconnect")
            assert "a message did not fit in the heap" in device.stderr
            probe.publish(f"big/{device_id}", msgpack.packb(7))
            result = device.expect(timeout=20)
            assert result["got"] == [7]
            assert result["result"] == 5
            device.finish()
    finally:
        probe.close()


def test_last_will_is_published_when_the_device_dies(stack: Stack, device_id: str) -> None:
    probe = Probe(stack.port)
    try:
        probe.subscribe(f"status/{device_id}")
        with scenario(stack, device_id, "will") as device:
            device.expect(ready=True)
            device.stop()  # SIGKILL: no DISCONNECT, so the broker publishes the will
        assert msgpack.unpackb(probe.wait_for(f"status/{device_id}").payload) == "offline"
    finally:
        probe.close()
