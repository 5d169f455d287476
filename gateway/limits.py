"""Limits that keep one device or one function from hurting the others.

* :class:`DeviceRateLimit`: a token bucket per ``{device_id}``, taken first, for
  every request; one finding it empty is not stored, run or logged (a
  :class:`Notices` allowance decides which of them still get ``rate_limited``).
* :class:`Notices`: log lines and courtesy replies per device, so a flood from
  one device cannot fill the log either.
* :class:`Concurrency`: calls of one function running at a time; past the
  function's ``concurrency`` a request is answered ``overloaded`` at once.
* :class:`DeviceConcurrency`: calls of one device on the executors, at most its
  share of the workers; up to its burst more wait their turn, past that ``overloaded``.
* :func:`reply_space_problem`: a reply may only go inside the requesting
  device's reply space, so a forged Response Topic cannot make the gateway
  write into another device's topics.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

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
        if not self.try_take(device_id):
            raise self.refusal(device_id)

    def try_take(self, device_id: str) -> bool:
        """Spend one token of ``device_id``'s bucket; ``False`` (nothing spent) when it is empty.

        No exception on the way out: a flood finds the bucket empty on every request."""
        now = time.monotonic()
        buckets = self._buckets
        tokens, at = buckets.pop(device_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            buckets[device_id] = (tokens, now)
            return False
        buckets[device_id] = (tokens - 1.0, now)
        if len(buckets) > MAX_TRACKED_DEVICES:
            buckets.popitem(last=False)
        return True

    def refusal(self, device_id: str) -> RateLimited:
        """The error a device over its rate is told."""
        return RateLimited(f"device {device_id[:64]!r} is over its limit of {self.rate:g} requests per second")


class Notices:
    """An allowance of log lines (and courtesy replies) per device: ``burst`` at once, then ``rate`` per second.

    :meth:`allow` says whether the next one may go out, and how many were held back since the
    last one that did (to be said in it), so an operator still learns the volume.
    """

    def __init__(self, rate: float = 1.0, burst: int = 5) -> None:
        self._bucket = DeviceRateLimit(rate, burst)
        self._held: dict[str, int] = {}

    def allow(self, device_id: str | None) -> int | None:
        """``None``: hold this one back; else how many were held back before it (and are now forgotten)."""
        key = device_id or ""  # requests that name no device share one allowance
        if not self._bucket.try_take(key):
            if len(self._held) < MAX_TRACKED_DEVICES or key in self._held:
                self._held[key] = self._held.get(key, 0) + 1
            return None
        return self._held.pop(key, 0)


class DeviceConcurrency:
    """Calls per device on the executors (submitted, not finished), against ``limit``.

    A call past the limit waits, in order, for one of its device's calls to finish (it holds no
    worker meanwhile): a device that sends a few calls at once is not refused for it. At most
    ``waiting`` calls of one device, and ``max_waiting`` of all devices, wait so; past that,
    :class:`Overloaded`.
    """

    def __init__(self, limit: int, waiting: int, max_waiting: int) -> None:
        self.limit = limit
        self.max_device_waiting = waiting
        self.max_waiting = max_waiting
        self._calls: dict[str, int] = {}
        self._waiting: dict[str, deque[Callable[[], None]]] = {}
        self._waiting_count = 0

    def admit(self, device_id: str, start: Callable[[], None]) -> bool:
        """Count a call of ``device_id``: ``True`` when it may start now; ``False`` when ``start`` was kept for
        later (:meth:`leave` hands it back); :class:`Overloaded` when as many wait already."""
        calls = self._calls.get(device_id, 0)
        if calls < self.limit:
            self._calls[device_id] = calls + 1
            return True
        waiting = self._waiting.get(device_id)
        held = len(waiting) if waiting is not None else 0
        if held >= self.max_device_waiting:
            raise Overloaded(
                f"device {device_id[:64]!r} has {calls} calls under way and {held} waiting, its share of"
                " the workers; try again later"
            )
        if self._waiting_count >= self.max_waiting:
            raise Overloaded(f"{self._waiting_count} calls wait for their device's share of the workers")
        if waiting is None:
            waiting = self._waiting[device_id] = deque()
        waiting.append(start)
        self._waiting_count += 1
        return False

    def leave(self, device_id: str) -> Callable[[], None] | None:
        """A call counted by :meth:`admit` has finished: the device's next waiting call, which now counts in its
        place (the caller starts it), or ``None`` (devices with nothing under way are forgotten)."""
        waiting = self._waiting.get(device_id)
        if waiting:
            start = waiting.popleft()
            self._waiting_count -= 1
            if not waiting:
                del self._waiting[device_id]
            return start
        calls = self._calls.get(device_id, 1) - 1
        if calls > 0:
            self._calls[device_id] = calls
        else:
            self._calls.pop(device_id, None)
        return None


class Concurrency:
    """Calls running per function, against each function's ``concurrency``."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}

    def enter(self, spec: FunctionSpec) -> None:
        """Count a call of ``spec`` as running, or raise :class:`Overloaded` when it is at its limit."""
        limit = spec.options.concurrency
        if limit is None:
            return
        running = self._running.get(spec.key, 0)
        if running >= limit:
            raise Overloaded(f"{spec.key} runs at most {limit} calls at a time")
        self._running[spec.key] = running + 1

    def leave(self, spec: FunctionSpec) -> None:
        """A call of ``spec`` counted by :meth:`enter` has finished."""
        if spec.options.concurrency is not None:
            self._running[spec.key] = max(self._running.get(spec.key, 1) - 1, 0)


def reply_space_problem(target: str, device_id: str, spaces: tuple[TopicTemplate, ...]) -> str | None:
    """Why ``target`` is outside ``device_id``'s reply spaces, or ``None`` when it is inside one."""
    params = {"device_id": device_id}
    for space in spaces:
        root = space.render(params)
        if target == root or target.startswith(root + "/"):
            return None
    return f"is outside device {device_id[:64]!r}'s reply space"
