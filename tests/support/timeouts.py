"""One timeout scale for the whole suite, and the one way a test waits for a condition.

Every wait in ``tests/`` takes its limit in *base seconds* and multiplies it by
``ROOST_TEST_TIMEOUT_SCALE`` (default 1) here, and nowhere else: a slow board or a
crowded CI runner raises that one number instead of editing figures spread over
the files. A wait ends as soon as its condition holds, so a generous limit costs
nothing on a passing run; it only bounds how long a failing one takes.

The same scale stretches the timers a test hands to the software under test
(heartbeats, silence timeouts, the stand-in's intervals): :func:`scaled` and
:func:`scaled_text` are for those.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ENVIRONMENT = "ROOST_TEST_TIMEOUT_SCALE"


def _scale() -> float:
    text = os.environ.get(ENVIRONMENT, "1")
    try:
        value = float(text)
    except ValueError:
        raise RuntimeError(f"{ENVIRONMENT} must be a number, got {text!r}") from None
    if not value > 0:
        raise RuntimeError(f"{ENVIRONMENT} must be above 0, got {text!r}")
    return value


SCALE = _scale()
"""How much longer than its base figure every wait and test timer may take."""


def scaled(seconds: float) -> float:
    """``seconds`` on this machine: the base figure times :data:`SCALE`."""
    return seconds * SCALE


def scaled_text(seconds: float) -> str:
    """:func:`scaled` as a setting's text (``--flag 0.5`` or ``ROOST_X=0.5``)."""
    return f"{scaled(seconds):g}"


def wait_for(
    condition: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``condition`` until it returns something truthy and return that.

    ``timeout`` is in base seconds (scaled here); an exception of a type in ``ignore``
    counts as "not yet" (an endpoint that does not answer yet). The poll starts at 5 ms
    and backs off to 100 ms, so a quick condition is seen quickly and a slow one
    costs little CPU beside the work it waits for.
    """
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    delay = 0.005
    while True:
        try:
            result = condition()
        except ignore:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(delay)  # a poll interval inside a bounded wait, not a wait for time to pass
        delay = min(delay * 2, 0.1)


async def until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """:func:`wait_for` for a test running on an event loop: let the loop run until ``condition()`` holds.

    Polls every millisecond (the loop's own tasks make the condition true between polls).
    """
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        await asyncio.sleep(0.001)  # a poll interval: hands the loop to the tasks under test
