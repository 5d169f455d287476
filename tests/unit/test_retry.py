"""gateway.retry: deadlines from a request's expiry and a function's ``max_age``; retries of idempotent calls on
retryable failures, as many as the function's ``retries`` and not past the deadline; dead-letter messages.

The executor is a scripted stand-in: each submission takes the next outcome of its script. Backoffs are
shrunk to a millisecond, so a test with retries takes a few milliseconds and never sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from gateway import retry
from gateway.errors import (
    BadPayload,
    BadResult,
    CallTimeout,
    FunctionError,
    InternalError,
    InvalidArguments,
    NotFound,
    Overloaded,
    Unavailable,
    WireError,
)
from gateway.executors.base import Call, Executor
from gateway.registry import FunctionSpec, build_spec
from gateway.topics import TopicTemplate
from gateway.transport.base import OutboundMessage


@dataclass(frozen=True)
class Refused:
    """A submission that raises ``error`` from ``submit`` itself (a full queue, a stopping executor)."""

    error: WireError


CANCELLED = "cancelled"
Outcome = bytes | BaseException | Refused | str


class ScriptedExecutor(Executor):
    """Answers each submission with the next outcome of its script, at once."""

    name = "scripted"

    def __init__(self, *script: Outcome) -> None:
        self.script = list(script)
        self.calls: list[Call] = []
        self.futures: list[asyncio.Future[bytes]] = []

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self, grace: float) -> None:
        """Nothing to stop."""

    @property
    def in_flight(self) -> int:
        """Every call is answered as it is submitted."""
        return 0

    def submit(self, call: Call) -> asyncio.Future[bytes]:
        self.calls.append(call)
        outcome = self.script.pop(0)
        if isinstance(outcome, Refused):
            raise outcome.error
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if isinstance(outcome, bytes):
            future.set_result(outcome)
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            assert outcome == CANCELLED
            future.cancel()
        self.futures.append(future)
        return future


def add(a: int, b: int) -> int:
    return a + b


def spec(**options: Any) -> FunctionSpec:
    return build_spec(add, "devices/{device_id}/add", **options)


def call(function: FunctionSpec, expires_at: float | None = None) -> Call:
    return Call(function, {"a": 1, "b": 2}, 1.0, expires_at)


async def outcome_of(future: asyncio.Future[bytes]) -> bytes | BaseException:
    try:
        return await future
    except Exception as exc:
        return exc


def run(executor: Executor, submitted: Call) -> bytes | BaseException:
    async def go() -> bytes | BaseException:
        return await outcome_of(retry.submit_with_retries(executor, submitted))

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_BACKOFF", 0.001)


# -- deadline ------------------------------------------------------------------------------------------


def test_without_an_expiry_or_a_max_age_there_is_no_deadline() -> None:
    assert retry.deadline(spec(), 100.0, None) is None


def test_the_deadline_is_the_earlier_of_the_message_expiry_and_the_max_age() -> None:
    assert retry.deadline(spec(), 100.0, 30) == 130.0
    assert retry.deadline(spec(max_age=5.0), 100.0, None) == 105.0
    assert retry.deadline(spec(max_age=5.0), 100.0, 30) == 105.0
    assert retry.deadline(spec(max_age=60.0), 100.0, 30) == 130.0
    assert retry.deadline(spec(max_age=60.0), 100.0, 0) == 100.0  # an expiry of 0: already due on arrival


# -- backoff -------------------------------------------------------------------------------------------


def test_the_backoff_doubles_from_the_first_up_to_its_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_BACKOFF", 0.05)
    assert [retry.backoff(n) for n in (1, 2, 3, 4)] == [0.05, 0.1, 0.2, 0.4]
    assert retry.backoff(6) == 1.6
    assert retry.backoff(7) == retry.backoff(50) == retry.MAX_BACKOFF == 2.0
    assert retry.backoff(5000) == retry.MAX_BACKOFF  # no OverflowError, however many retries a function allows


# -- submit_with_retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [FunctionError("boom"), CallTimeout("slow"), Unavailable("gone"), Overloaded("full")])
def test_a_retryable_failure_of_an_idempotent_function_is_retried(error: WireError) -> None:
    assert error.code in retry.RETRYABLE
    executor = ScriptedExecutor(error, b"\x03")
    assert run(executor, call(spec(idempotent=True, retries=1))) == b"\x03"
    assert len(executor.calls) == 2


@pytest.mark.parametrize(
    "error",
    [
        BadResult("too big"),
        InvalidArguments("no"),
        BadPayload("bad"),
        NotFound("none"),
        InternalError("oops"),
        RuntimeError("not a wire error"),
    ],
)
def test_other_failures_are_not_retried(error: BaseException) -> None:
    executor = ScriptedExecutor(error, b"\x03")
    assert run(executor, call(spec(idempotent=True, retries=3))) is error
    assert len(executor.calls) == 1


def test_a_call_is_submitted_at_most_retries_plus_one_times_and_fails_with_the_last_failure() -> None:
    failures = [FunctionError(f"boom {n}") for n in range(4)]
    executor = ScriptedExecutor(*failures)
    assert run(executor, call(spec(idempotent=True, retries=3))) is failures[3]
    assert len(executor.calls) == 4


def test_each_retry_submits_a_copy_of_the_call() -> None:
    executor = ScriptedExecutor(FunctionError("boom"), FunctionError("boom"), b"\x03")
    first = call(spec(idempotent=True, retries=2), expires_at=time.monotonic() + 60)
    assert run(executor, first) == b"\x03"
    assert executor.calls[0] is first
    assert executor.calls[1] is not first and executor.calls[2] is not first
    assert executor.calls[1] == executor.calls[2] == first  # same function, arguments, timeout and deadline


@pytest.mark.parametrize("options", [{"idempotent": True}, {"idempotent": False}])
def test_without_retries_the_executor_s_own_future_is_returned(options: dict[str, Any]) -> None:
    async def go() -> None:
        executor = ScriptedExecutor(FunctionError("boom"), b"\x03")
        future = retry.submit_with_retries(executor, call(spec(**options)))
        assert future is executor.futures[0]
        assert isinstance(await outcome_of(future), FunctionError)
        assert len(executor.calls) == 1

    asyncio.run(go())


def test_a_retry_that_would_start_past_the_deadline_is_not_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_BACKOFF", 30.0)
    monkeypatch.setattr(retry, "MAX_BACKOFF", 30.0)
    error = CallTimeout("slow")
    executor = ScriptedExecutor(error, b"\x03")
    assert run(executor, call(spec(idempotent=True, retries=2), expires_at=time.monotonic() + 20)) is error
    assert len(executor.calls) == 1


def test_a_retry_that_starts_before_the_deadline_is_made() -> None:
    executor = ScriptedExecutor(CallTimeout("slow"), b"\x03")
    assert run(executor, call(spec(idempotent=True, retries=2), expires_at=time.monotonic() + 60)) == b"\x03"
    assert len(executor.calls) == 2


def test_overloaded_from_the_first_submission_is_raised_at_once() -> None:
    async def go() -> None:
        executor = ScriptedExecutor(Refused(Overloaded("full")), b"\x03")
        with pytest.raises(Overloaded, match="full"):
            retry.submit_with_retries(executor, call(spec(idempotent=True, retries=2)))
        assert len(executor.calls) == 1

    asyncio.run(go())


def test_a_retry_refused_at_submission_counts_as_a_failed_attempt() -> None:
    executor = ScriptedExecutor(FunctionError("boom"), Refused(Overloaded("full")), b"\x03")
    assert run(executor, call(spec(idempotent=True, retries=2))) == b"\x03"
    assert len(executor.calls) == 3
    refusal = Unavailable("the gateway is stopping")
    executor = ScriptedExecutor(FunctionError("boom"), Refused(refusal), b"\x03")
    assert run(executor, call(spec(idempotent=True, retries=1))) is refusal  # no retries left
    assert len(executor.calls) == 2


def test_a_cancelled_call_cancels_the_outcome_and_is_not_retried() -> None:
    async def go() -> None:
        executor = ScriptedExecutor(CANCELLED, b"\x03")
        future = retry.submit_with_retries(executor, call(spec(idempotent=True, retries=2)))
        with pytest.raises(asyncio.CancelledError):
            await future
        assert future.cancelled()
        assert len(executor.calls) == 1

    asyncio.run(go())


def test_an_outcome_cancelled_while_a_retry_waits_stops_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_BACKOFF", 0.0)  # the retry is due on the loop's next turn

    async def go() -> None:
        executor = ScriptedExecutor(FunctionError("boom"), b"\x03")
        future = retry.submit_with_retries(executor, call(spec(idempotent=True, retries=2)))
        await asyncio.sleep(0)  # the failure's callback runs and schedules the retry for the next turn
        assert len(executor.calls) == 1 and not future.done()
        future.cancel()
        for _ in range(3):  # turns of the loop: a retry due now would have been submitted by the second
            await asyncio.sleep(0)
        assert len(executor.calls) == 1

    asyncio.run(go())


# -- dead_letter ---------------------------------------------------------------------------------------


def test_a_dead_letter_names_the_request_s_topic_and_its_error() -> None:
    where = TopicTemplate.parse("roost/dead/{device_id}")
    error = InvalidArguments("invalid arguments: a: missing", [{"loc": ["a"], "msg": "missing", "type": "missing"}])
    before = time.time()
    letter = retry.dead_letter(where, {"device_id": "A", "function": "add"}, "devices/A/add", error)
    assert letter is not None
    assert (letter.topic, letter.qos, letter.correlation_data, letter.response_topic) == ("roost/dead/A", 1, None, None)
    body = msgpack.unpackb(letter.payload)
    assert body.keys() == {"topic", "error", "at"}
    assert body["topic"] == "devices/A/add"
    assert body["error"] == {
        "code": "invalid_arguments",
        "message": "invalid arguments: a: missing",
        "details": [{"loc": ["a"], "msg": "missing", "type": "missing"}],
    }
    assert before <= body["at"] <= time.time()  # wall-clock time, for the reader of the dead letter


def test_no_dead_letter_when_its_topic_needs_a_parameter_the_request_has_not() -> None:
    where = TopicTemplate.parse("roost/dead/{device_id}")
    assert retry.dead_letter(where, {"site": "s1"}, "sites/s1/reset", FunctionError("boom")) is None


def test_a_dead_letter_topic_without_parameters_takes_every_request() -> None:
    letter = retry.dead_letter(TopicTemplate.parse("roost/dead"), {}, "sites/s1/reset", FunctionError("boom"))
    assert isinstance(letter, OutboundMessage) and letter.topic == "roost/dead"
    assert msgpack.unpackb(letter.payload)["error"] == {"code": "function_error", "message": "boom"}
