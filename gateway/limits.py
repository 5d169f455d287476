"""Limits that keep one device or one function from hurting the others.

* :class:`DeviceRateLimit`: a token bucket per ``{device_id}``; a request finding
  it empty is answered ``rate_limited``.
* :class:`Concurrency`: calls of one function running at a time; past the
  function's ``concurrency`` a request is answered ``overloaded`` at once.
* :func:`reply_space_problem`: a reply may only go inside the requesting
  device's reply space, so a forged Response Topic cannot make the gateway
  write into another device's topics.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from gateway.errors import Overloaded, RateLimited
from gateway.registry import FunctionSpec
from gateway.topics import TopicTemplate

MAX_TRACKED_DEVICES = 100_000  # buckets kept; the least recently seen device is forgotten first


class DeviceRateLimit:
    """``rate`` requests per second per device, in bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # device → (tokens, at)

    def take(self, device_id: str) -> None:
        """Spend one token of ``device_id``'s bucket or raise :class:`RateLimited`."""
        now = time.monotonic()
        buckets = self._buckets
        tokens, at = buckets.pop(device_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            buckets[device_id] = (tokens, now)
            raise RateLimited(f"device {device_id[:64]!r} is over its limit of {self.rate:g} requests per second")
        buckets[device_id] = (tokens - 1.0, now)
        if len(buckets) > MAX_TRACKED_DEVICES:
            buckets.popitem(last=False)


class Concurrency:
    """Calls running per function, against each function's ``concurrency``."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}

    def enter(self, spec: FunctionSpec) -> None:
        """Count a call of ``spec`` as running, or raise :class:`Overloaded` when it is at its limit."""
        limit = spec.concurrency
        if limit is None:
            return
        running = self._running.get(spec.key, 0)
        if running >= limit:
            raise Overloaded(f"{spec.key} runs at most {limit} calls at a time")
        self._running[spec.key] = running + 1

    def leave(self, spec: FunctionSpec) -> None:
        """A call of ``spec`` counted by :meth:`enter` has finished."""
        if spec.concurrency is not None:
            self._running[spec.key] = max(self._running.get(spec.key, 1) - 1, 0)


def reply_space_problem(target: str, device_id: str, spaces: tuple[TopicTemplate, ...]) -> str | None:
    """Why ``target`` is outside ``device_id``'s reply spaces, or ``None`` when it is inside one."""
    params = {"device_id": device_id}
    for space in spaces:
        root = space.render(params)
        if target == root or target.startswith(root + "/"):
            return None
    return f"is outside device {device_id[:64]!r}'s reply space"
