"""Deadlines, retries and dead letters: what happens to a call that is late or keeps failing.

* :func:`deadline` merges the request's MQTT 5 Message Expiry with the function's
  ``max_age`` (both count from arrival, which the durable queue carries across
  restarts).
* :func:`submit_with_retries` reruns a failed call of an idempotent function
  with exponential backoff while its ``retries`` last and its deadline allows.
* :func:`dead_letter` is the message that goes to the dead-letter topic when a
  call has failed for good, so no failure disappears silently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from gateway import codec
from gateway.errors import TemplateError, WireError
from gateway.executors.base import Call, Executor
from gateway.registry import FunctionSpec
from gateway.topics import TopicTemplate
from gateway.transport.base import OutboundMessage

log = logging.getLogger(__name__)

#: Failures worth another try: the function raised, ran too long, or its executor could not run it.
RETRYABLE = frozenset({"function_error", "timeout", "unavailable", "overloaded"})
FIRST_BACKOFF = 0.05  # seconds before the first retry; doubled for each next one
MAX_BACKOFF = 2.0


def deadline(spec: FunctionSpec, received_at: float, message_expiry: int | None) -> float | None:
    """``time.monotonic()`` after which the call must not start, or ``None``."""
    candidates = []
    if message_expiry is not None:
        candidates.append(received_at + message_expiry)
    if spec.options.max_age is not None:
        candidates.append(received_at + spec.options.max_age)
    return min(candidates) if candidates else None


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first)."""
    # The exponent stops growing well past MAX_BACKOFF: 2.0 ** 1024 would overflow, and a float this large is not.
    return float(min(FIRST_BACKOFF * 2.0 ** min(attempt - 1, 64), MAX_BACKOFF))


def submit_with_retries(executor: Executor, call: Call) -> asyncio.Future[bytes]:
    """Submit ``call``; on a retryable failure submit it again after a backoff, ``spec.options.retries`` times at most.

    The returned future carries the first success or the last failure. A retry
    that would start past the call's deadline is not made. ``Overloaded`` from
    the first submission is raised at once, like :meth:`Executor.submit`.
    """
    spec = call.spec
    first = executor.submit(call)
    if spec.options.retries == 0 or not spec.options.idempotent:
        return first
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[bytes] = loop.create_future()

    def settle(done: asyncio.Future[bytes], attempt: int) -> None:
        if outcome.done():
            return
        error = None if done.cancelled() else done.exception()
        if done.cancelled() or error is None:
            if done.cancelled():
                outcome.cancel()
            else:
                outcome.set_result(done.result())
            return
        delay = backoff(attempt + 1)
        late = call.expires_at is not None and time.monotonic() + delay >= call.expires_at
        if attempt >= spec.options.retries or late or not isinstance(error, WireError) or error.code not in RETRYABLE:
            outcome.set_exception(error)
            return
        retries = spec.options.retries
        log.info("%s failed (%s), retry %d of %d in %.2f s", spec.key, error.code, attempt + 1, retries, delay)
        loop.call_later(delay, again, attempt + 1)

    def again(attempt: int) -> None:
        if outcome.done():  # cancelled while it waited: no further try
            return
        try:
            future = executor.submit(dataclasses.replace(call))
        except WireError as exc:
            failed: asyncio.Future[bytes] = loop.create_future()
            failed.set_exception(exc)
            future = failed
        future.add_done_callback(lambda done: settle(done, attempt))

    first.add_done_callback(lambda done: settle(done, 0))
    return outcome


def dead_letter(where: TopicTemplate, params: dict[str, str], topic: str, error: WireError) -> OutboundMessage | None:
    """The dead-letter message for a request on ``topic`` that failed for good (``None`` if it has no topic)."""
    try:
        target = where.render(params)
    except TemplateError:
        return None  # the template needs a parameter this topic does not have (no {device_id})
    body = {"topic": topic, "error": error.to_wire(), "at": time.time()}
    return OutboundMessage(target, codec.encode(body), qos=1)
