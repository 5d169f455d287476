"""Plain counters the dispatcher bumps per request (and the reloader per reload); :mod:`gateway.ops.metrics` reads them.

They are ints, a float and a list, not prometheus_client objects: a labelled
child's ``inc`` takes a lock and an ``observe`` walks the buckets in Python, a
microsecond or more per request, while a scrape every few seconds can afford
to do the summing. Everything here runs on the event loop only.
"""

from __future__ import annotations

import time
from bisect import bisect_left

#: Upper bounds (seconds) of the latency histogram buckets; the last bucket is +Inf.
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RESULT = "result"  # the outcome label of an answered call; errors use their wire error code


class FunctionStats:
    """Outcomes and the latency histogram of one function (key ``""``: requests no function matched)."""

    __slots__ = ("buckets", "outcomes", "results", "seconds")

    def __init__(self) -> None:
        self.results = 0  # calls answered with a result (or events that ran)
        self.outcomes: dict[str, int] = {}  # error code → count
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)  # not cumulative; the last one is +Inf
        self.seconds = 0.0  # sum of the observed latencies

    def ran(self, received_at: float) -> None:
        """Observe the time from arrival (``time.monotonic()``) to now for a call an executor finished."""
        elapsed = time.monotonic() - received_at
        self.seconds += elapsed
        self.buckets[bisect_left(LATENCY_BOUNDS, elapsed)] += 1

    def answered(self, received_at: float) -> None:
        """A call ran and its result went out."""
        # ran() written out again: one call less on every answered request.
        self.results += 1
        elapsed = time.monotonic() - received_at
        self.seconds += elapsed
        self.buckets[bisect_left(LATENCY_BOUNDS, elapsed)] += 1


class DispatchStats:
    """What the dispatcher did since the start: per function, plus requests it could not answer."""

    def __init__(self, keys: list[str] | tuple[str, ...] = ()) -> None:
        self.functions: dict[str, FunctionStats] = {key: FunctionStats() for key in ("", *keys)}
        self.dropped: dict[str, int] = {}  # reason → requests that got no reply at all
        self.dead_lettered = 0  # calls that failed for good and were reported on the dead-letter topic

    def function(self, key: str) -> FunctionStats:
        """The stats of the function with template ``key`` (created on first use, e.g. after a reload)."""
        stats = self.functions.get(key)
        if stats is None:
            stats = self.functions[key] = FunctionStats()
        return stats

    def failed(self, key: str, code: str) -> None:
        """A request for function ``key`` ended with the wire error ``code``."""
        outcomes = self.function(key).outcomes
        outcomes[code] = outcomes.get(code, 0) + 1

    def drop(self, reason: str) -> None:
        """A request got no reply: no reply address, a refused reply topic, a failed publish."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class ReloadStats:
    """How the function reloads (``roost run --reload``, SIGHUP) ended since the start: outcome → count.

    Outcomes: ``reloaded`` (new code serving), ``failed`` (a module did not load: the
    previous functions still serve), ``skipped`` (not serving yet, or the mesos executor).
    """

    __slots__ = ("outcomes",)

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}

    def count(self, outcome: str) -> None:
        """One reload ended with ``outcome``."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
