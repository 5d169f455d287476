"""gateway.limits: the device token bucket, the per-device allowance of notices, calls per function, reply spaces.

The buckets read ``time.monotonic()`` through the module's ``time``; the tests hand them a clock of their
own there, so refills are exact and nothing sleeps. (``DeviceConcurrency`` is in ``test_device_limits.py``.)
"""

from __future__ import annotations

import pytest

from gateway import limits
from gateway.errors import Overloaded, RateLimited
from gateway.limits import Concurrency, DeviceRateLimit, Notices, reply_space_problem
from gateway.registry import FunctionSpec, build_spec
from gateway.topics import TopicTemplate


class Clock:
    """Stands in for the ``time`` module in gateway.limits: ``monotonic()`` is whatever the test sets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limits, "time", fake)
    return fake


def taken(bucket: DeviceRateLimit, device_id: str) -> bool:
    """Whether ``bucket`` let one request of ``device_id`` through."""
    try:
        bucket.take(device_id)
    except RateLimited:
        return False
    return True


def add(a: int, b: int) -> int:
    return a + b


def spec(template: str, concurrency: int | None) -> FunctionSpec:
    return build_spec(add, template, concurrency=concurrency)


# -- DeviceRateLimit -----------------------------------------------------------------------------------


def test_a_device_may_send_its_burst_at_once_then_is_rate_limited(clock: Clock) -> None:
    bucket = DeviceRateLimit(rate=1.0, burst=3)
    assert [taken(bucket, "A") for _ in range(3)] == [True, True, True]
    with pytest.raises(RateLimited, match="device 'A' is over its limit of 1 requests per second"):
        bucket.take("A")
    assert taken(bucket, "B")  # each device has a bucket of its own


def test_tokens_come_back_at_the_rate_and_a_refused_request_costs_none(clock: Clock) -> None:
    bucket = DeviceRateLimit(rate=2.0, burst=4)
    assert all(taken(bucket, "A") for _ in range(4))
    clock.advance(0.25)  # half a token
    assert not taken(bucket, "A")
    clock.advance(0.25)  # the half kept by the refusal, and another half
    assert taken(bucket, "A")
    assert not taken(bucket, "A")
    clock.advance(1.0)
    assert taken(bucket, "A") and taken(bucket, "A")
    assert not taken(bucket, "A")


def test_a_quiet_device_saves_up_to_its_burst_only(clock: Clock) -> None:
    bucket = DeviceRateLimit(rate=10.0, burst=3)
    assert all(taken(bucket, "A") for _ in range(3))
    clock.advance(3600.0)
    assert [taken(bucket, "A") for _ in range(4)] == [True, True, True, False]


def test_the_least_recently_seen_device_is_forgotten_past_the_tracked_limit(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_TRACKED_DEVICES", 3)
    bucket = DeviceRateLimit(rate=0.001, burst=1)
    assert taken(bucket, "A") and taken(bucket, "B") and taken(bucket, "C")
    assert not taken(bucket, "A")  # refused, but seen: A is now the most recent
    assert taken(bucket, "D")  # a fourth device: B, the least recently seen, is forgotten
    assert len(bucket._buckets) == 3
    assert not taken(bucket, "A")  # still remembered with its empty bucket
    assert taken(bucket, "B")  # forgotten: back with a full bucket (and C is forgotten in its turn)
    assert taken(bucket, "C")
    assert len(bucket._buckets) == 3


# -- Notices -------------------------------------------------------------------------------------------


def test_notices_allow_five_at_once_then_one_a_second_saying_how_many_were_held(clock: Clock) -> None:
    notices = Notices()
    assert [notices.allow("A") for _ in range(5)] == [0, 0, 0, 0, 0]
    assert [notices.allow("A") for _ in range(3)] == [None, None, None]
    clock.advance(0.5)
    assert notices.allow("A") is None
    clock.advance(0.5)
    assert notices.allow("A") == 4  # the next one out says how many were held back before it
    assert notices.allow("A") is None
    clock.advance(1.0)
    assert notices.allow("A") == 1  # counted afresh since the last one out
    clock.advance(1.0)
    assert notices.allow("A") == 0


def test_notices_are_per_device_and_requests_naming_none_share_one_allowance(clock: Clock) -> None:
    notices = Notices(rate=1.0, burst=1)
    assert notices.allow("A") == 0 and notices.allow("A") is None
    assert notices.allow("B") == 0  # A's flood does not silence B
    assert notices.allow(None) == 0
    assert notices.allow(None) is None  # every request without a device draws on the same allowance
    assert notices.allow(None) is None
    clock.advance(1.0)
    assert notices.allow(None) == 2
    assert notices.allow("A") == 1


def test_held_back_counts_are_kept_for_a_bounded_number_of_devices(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_TRACKED_DEVICES", 2)
    notices = Notices(rate=1.0, burst=1)
    for device in ("A", "B"):
        assert notices.allow(device) == 0 and notices.allow(device) is None
    assert notices.allow("C") == 0
    assert notices.allow("C") is None  # held back, but two counts are kept already: C's is not
    assert notices.allow("B") is None  # a device already counted goes on being counted
    assert len(notices._held) == 2
    clock.advance(1.0)
    assert notices.allow("C") == 0
    assert notices.allow("B") == 2


# -- Concurrency ---------------------------------------------------------------------------------------


def test_a_function_runs_at_most_its_concurrency() -> None:
    running = Concurrency()
    limited = spec("devices/{device_id}/add", concurrency=2)
    running.enter(limited)
    running.enter(limited)
    with pytest.raises(Overloaded, match=r"devices/\{device_id\}/add runs at most 2 calls at a time"):
        running.enter(limited)
    running.leave(limited)
    running.enter(limited)  # a finished call makes room for one more
    with pytest.raises(Overloaded):
        running.enter(limited)


def test_functions_are_counted_apart_and_those_without_a_concurrency_not_at_all() -> None:
    running = Concurrency()
    one, other = spec("devices/{device_id}/one", concurrency=1), spec("devices/{device_id}/other", concurrency=1)
    free = spec("devices/{device_id}/free", concurrency=None)
    running.enter(one)
    running.enter(other)  # one's call does not hold other back
    for _ in range(1000):
        running.enter(free)
    with pytest.raises(Overloaded, match="one runs at most 1 calls"):
        running.enter(one)
    running.leave(free)
    with pytest.raises(Overloaded):  # leaving an uncounted function frees nothing of the others
        running.enter(one)


def test_an_extra_leave_does_not_make_room_past_the_concurrency() -> None:
    running = Concurrency()
    limited = spec("devices/{device_id}/add", concurrency=1)
    running.leave(limited)
    running.leave(limited)
    running.enter(limited)
    with pytest.raises(Overloaded):
        running.enter(limited)


# -- reply_space_problem -------------------------------------------------------------------------------

SPACES = (TopicTemplate.parse("roost/replies/{device_id}"), TopicTemplate.parse("pi/{device_id}/inbox"))


@pytest.mark.parametrize("target", ["roost/replies/A", "roost/replies/A/7", "pi/A/inbox", "pi/A/inbox/x/y"])
def test_a_reply_at_or_under_the_device_s_space_is_inside(target: str) -> None:
    assert reply_space_problem(target, "A", SPACES) is None


@pytest.mark.parametrize(
    "target",
    [
        "roost/replies/B",  # another device's space
        "roost/replies/B/7",
        "roost/replies/AB",  # shares A's text, not its level
        "roost/replies",  # above the space
        "pi/A",
        "pi/A/inboxes",
        "devices/A/add",
    ],
)
def test_a_reply_anywhere_else_is_outside(target: str) -> None:
    assert reply_space_problem(target, "A", SPACES) == "is outside device 'A''s reply space"


def test_the_problem_names_at_most_64_characters_of_the_device() -> None:
    device = "d" * 100
    assert reply_space_problem("elsewhere", device, SPACES) == f"is outside device {'d' * 64!r}'s reply space"
