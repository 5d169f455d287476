"""Per-device limits: the share of the workers a device's calls may hold (gateway.limits.DeviceConcurrency)."""

from __future__ import annotations

import pytest

from gateway.errors import Overloaded
from gateway.limits import DeviceConcurrency


def test_calls_past_the_share_wait_in_order_up_to_the_device_s_burst() -> None:
    share = DeviceConcurrency(2, waiting=2, max_waiting=100)
    started: list[str] = []
    assert share.admit("A", lambda: started.append("a1")) and share.admit("A", lambda: started.append("a2"))
    assert not share.admit("A", lambda: started.append("a3"))  # kept for later, holding nothing
    assert not share.admit("A", lambda: started.append("a4"))
    with pytest.raises(Overloaded, match="device 'A' has 2 calls under way and 2 waiting, its share of the workers"):
        share.admit("A", lambda: started.append("a5"))
    assert share.admit("B", lambda: started.append("b1"))  # another device is not affected
    for _ in range(2):  # each finish hands back the next waiting call, which counts in its place
        waiting = share.leave("A")
        assert waiting is not None
        waiting()
    assert started == ["a3", "a4"]
    assert share.leave("A") is None and share.leave("A") is None  # a3, a4 finish: A has nothing under way
    assert share.admit("A", lambda: started.append("a6"))  # its whole share is free again


def test_calls_waiting_of_all_devices_together_are_bounded() -> None:
    share = DeviceConcurrency(1, waiting=5, max_waiting=3)
    for device in ("A", "B", "C", "D"):
        assert share.admit(device, lambda: None)
    for device in ("A", "B", "C"):
        assert not share.admit(device, lambda: None)
    with pytest.raises(Overloaded, match="3 calls wait for their device's share of the workers"):
        share.admit("D", lambda: None)
    assert share.leave("A") is not None  # one fewer waits: D's may now
    assert not share.admit("D", lambda: None)


def test_devices_with_nothing_under_way_are_forgotten() -> None:
    share = DeviceConcurrency(1, waiting=1, max_waiting=1)
    assert share.admit("busy", lambda: None) and not share.admit("busy", lambda: None)
    for n in range(1000):
        assert share.admit(f"d{n}", lambda: None)
        with pytest.raises(Overloaded):  # the one place to wait is taken
            share.admit(f"d{n}", lambda: None)
        assert share.leave(f"d{n}") is None
    assert share.leave("busy") is not None and share.leave("busy") is None
    assert share._calls == {} and share._waiting == {}
