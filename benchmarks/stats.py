"""Latency statistics: exact percentiles of one measurement, and a log histogram to pool measurements.

A measurement's percentiles are computed from all its samples. To pool rounds
(for the chart and the table) without keeping millions of samples, each
measurement also keeps a histogram whose bins are 2 % wide on a log scale, so
a pooled percentile is within 2 % of the exact one.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

BIN_FACTOR = 1.02  # each histogram bin is 2 % wider than the previous one
BIN_FLOOR_US = 1.0  # bin 0 starts at 1 µs; faster round trips do not exist over a broker
_LOG_FACTOR = math.log(BIN_FACTOR)
PERCENTILES = (50.0, 90.0, 99.0)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of sorted values (nearest rank); 0.0 for no values."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100.0 * len(ordered)) - 1))
    return ordered[rank]


def latency_summary(latencies_ns: Iterable[int]) -> dict[str, float]:
    """p50, p90, p99, max and mean in microseconds."""
    ordered = sorted(ns / 1000.0 for ns in latencies_ns)
    summary = {f"p{pct:g}": percentile(ordered, pct) for pct in PERCENTILES}
    summary["max"] = ordered[-1] if ordered else 0.0
    summary["mean"] = statistics.fmean(ordered) if ordered else 0.0
    return summary


def bin_index(latency_us: float) -> int:
    """The histogram bin of a latency."""
    return max(0, int(math.log(max(latency_us, BIN_FLOOR_US) / BIN_FLOOR_US) / _LOG_FACTOR))


def bin_value(index: int) -> float:
    """The representative latency (µs) of a bin: its geometric middle."""
    return BIN_FLOOR_US * math.exp((index + 0.5) * _LOG_FACTOR)


def histogram(latencies_ns: Iterable[int]) -> dict[int, int]:
    """Sparse log histogram: bin index to count."""
    return dict(sorted(Counter(bin_index(ns / 1000.0) for ns in latencies_ns).items()))


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """The sum of histograms."""
    total: Counter[int] = Counter()
    for hist in histograms:
        total.update(hist)
    return dict(sorted(total.items()))


def hist_percentile(hist: Mapping[int, int], pct: float) -> float:
    """A percentile (µs) read from a histogram; 0.0 when it is empty."""
    count = sum(hist.values())
    if not count:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * count))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bin_value(index)
    return bin_value(max(hist))


def cdf(hist: Mapping[int, int]) -> tuple[list[float], list[float]]:
    """Points (latency µs, fraction of requests at or below it) of a histogram, for the chart."""
    count = sum(hist.values())
    xs: list[float] = []
    ys: list[float] = []
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        xs.append(bin_value(index))
        ys.append(seen / count)
    return xs, ys


def median(values: Iterable[float]) -> float | None:
    """The median, or ``None`` for no values."""
    items = list(values)
    return statistics.median(items) if items else None
