"""From raw rounds to the figures people read: pooled latencies, per-round ratios, and the issue's goals.

Ratios are computed within a round (target ÷ null responder of the same round)
and then the median over rounds is taken, so a noisy moment of the shared
machine spoils one ratio rather than the comparison.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks import stats
from benchmarks.targets import BINDING_TRANSPORTS, NULL, VOLATILE

Record = dict[str, Any]


class Results:
    """Index over the raw results of a run."""

    def __init__(self, raw: Record) -> None:
        self.raw = raw
        self.rounds = sorted({run["round"] for run in raw["runs"]})
        self.targets: list[str] = [t["name"] for t in raw["targets"]]
        self.scenarios: list[str] = [s["name"] for s in raw["scenarios"]]
        self._runs = {(run["round"], run["target"]): run for run in raw["runs"]}

    def run(self, round_no: int, target: str) -> Record | None:
        """The record of one target in one round, if it ran."""
        return self._runs.get((round_no, target))

    def measurement(self, round_no: int, target: str, scenario: str) -> Record | None:
        """One scenario of one target in one round, if measured."""
        run = self.run(round_no, target)
        if run is None:
            return None
        return next((m for m in run["measurements"] if m["scenario"] == scenario), None)

    def measurements(self, target: str, scenario: str) -> Iterator[Record]:
        """That scenario on that target in every round where it was measured."""
        for round_no in self.rounds:
            found = self.measurement(round_no, target, scenario)
            if found is not None:
                yield found

    def per_round(self, target: str, scenario: str, value: Callable[[Record, Record], float | None]) -> list[float]:
        """``value(measurement, null_measurement)`` for every round where both exist."""
        values: list[float] = []
        for round_no in self.rounds:
            mine = self.measurement(round_no, target, scenario)
            null = self.measurement(round_no, NULL, scenario)
            if mine is not None and null is not None:
                result = value(mine, null)
                if result is not None:
                    values.append(result)
        return values


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def throughput_ratio(mine: Record, null: Record) -> float | None:
    """Requests per second relative to the null responder."""
    return _ratio(mine["throughput_rps"], null["throughput_rps"])


def p50_ratio(mine: Record, null: Record) -> float | None:
    """Median latency relative to the null responder."""
    return _ratio(mine["latency_us"]["p50"], null["latency_us"]["p50"])


def p99_ratio(mine: Record, null: Record) -> float | None:
    """99th percentile latency relative to the null responder."""
    return _ratio(mine["latency_us"]["p99"], null["latency_us"]["p99"])


def cpu_ratio(mine: Record, null: Record) -> float | None:
    """The target's CPU per request relative to the null responder's."""
    return _ratio(mine["cpu_us_per_request"]["target"], null["cpu_us_per_request"]["target"])


def _med(values: list[float], digits: int = 3) -> float | None:
    found = stats.median(values)
    return None if found is None else round(found, digits)


def summary(results: Results) -> list[Record]:
    """One row per target and scenario: pooled latencies, sums, medians over rounds and ratios."""
    rows: list[Record] = []
    for scenario in results.scenarios:
        for target in results.targets:
            items = list(results.measurements(target, scenario))
            if not items:
                rows.append({"target": target, "scenario": scenario, "rounds": 0})
                continue
            hist = stats.merge({i: c for i, c in m["histogram"]} for m in items)
            slowest = max(m["latency_us"]["max"] for m in items)
            pooled = {f"p{p:g}": round(min(stats.hist_percentile(hist, p), slowest), 1) for p in stats.PERCENTILES}
            row: Record = {
                "target": target,
                "scenario": scenario,
                "rounds": len(items),
                "throughput_rps": _med([m["throughput_rps"] for m in items], 1),
                "latency_us": pooled | {"max": slowest},
            }
            for key in ("sent", "answered", "errors", "lost", "stray"):
                row[key] = sum(m[key] for m in items)
            row["cpu_us_per_request"] = {
                who: _med([m["cpu_us_per_request"][who] for m in items], 1) for who in ("target", "broker", "loadgen")
            }
            row["loadgen_cores"] = _med([m["cpu_s"]["loadgen"] / m["elapsed_s"] for m in items if m["elapsed_s"]], 2)
            if target != NULL:
                row["throughput_ratio"] = _med(results.per_round(target, scenario, throughput_ratio))
                row["p50_ratio"] = _med(results.per_round(target, scenario, p50_ratio))
                row["p99_ratio"] = _med(results.per_round(target, scenario, p99_ratio))
                row["cpu_ratio"] = _med(results.per_round(target, scenario, cpu_ratio), 2)
            rows.append(row)
    return rows


def memory(results: Results) -> list[Record]:
    """Per target: peak summed PSS (median and max over rounds) and time to the first answer."""
    rows: list[Record] = []
    for target in results.targets:
        runs = [r for r in (results.run(n, target) for n in results.rounds) if r is not None]
        peaks = [r["peak_pss_mb"] for r in runs if "peak_pss_mb" in r]
        ready = [r["ready_s"] for r in runs if "ready_s" in r]
        rows.append(
            {
                "target": target,
                "rounds_ok": sum(1 for r in runs if r["ok"]),
                "rounds": len(runs),
                "peak_pss_mb_median": _med(peaks, 1),
                "peak_pss_mb_max": max(peaks) if peaks else None,
                "ready_s_median": _med(ready, 2),
                "failures": [r["error"] for r in runs if not r["ok"]],
            }
        )
    return rows


@dataclass(frozen=True, slots=True)
class Goal:
    """One target of an issue, checked for every transport."""

    issue: int
    title: str
    executor: str
    scenario: str | None
    metric: str  # throughput_ratio, throughput_rps, p50_ratio, p50_over_us, peak_pss_mb, throughput_vs_volatile
    op: str  # ">=", "<=" or "<"
    limit: float
    base: str | None = None  # p50_over_us: the executor whose p50 the goal adds to

    @property
    def unit(self) -> str:
        """How the value reads: ``×`` (of the null responder), ``µs``, ``req/s`` or ``MB``."""
        return {"p50_over_us": "µs", "throughput_rps": "req/s", "peak_pss_mb": "MB"}.get(self.metric, "×")


GOALS: tuple[Goal, ...] = (
    Goal(4, "inline: throughput QoS 0 ≥ 0.9× null", "inline", "window-q0", "throughput_ratio", ">=", 0.9),
    Goal(4, "inline: throughput QoS 1 ≥ 0.8× null", "inline", "window-q1", "throughput_ratio", ">=", 0.8),
    Goal(4, "inline: closed-loop p50 QoS 0 ≤ 1.15× null", "inline", "closed-q0", "p50_ratio", "<=", 1.15),
    Goal(4, "inline: closed-loop p50 QoS 1 ≤ 1.15× null", "inline", "closed-q1", "p50_ratio", "<=", 1.15),
    Goal(4, "local: throughput QoS 0 ≥ 0.5× null", "local", "window-q0", "throughput_ratio", ">=", 0.5),
    Goal(4, "local: throughput QoS 1 ≥ 0.5× null", "local", "window-q1", "throughput_ratio", ">=", 0.5),
    Goal(4, "local: closed-loop p50 QoS 0 ≤ inline + 300 µs", "local", "closed-q0", "p50_over_us", "<=", 300, "inline"),
    Goal(4, "local: closed-loop p50 QoS 1 ≤ inline + 300 µs", "local", "closed-q1", "p50_over_us", "<=", 300, "inline"),
    Goal(4, "local: peak summed PSS < 80 MB", "local", None, "peak_pss_mb", "<", 80),
    Goal(6, "mesos: closed-loop p50 QoS 0 ≤ local + 500 µs", "mesos", "closed-q0", "p50_over_us", "<=", 500, "local"),
    Goal(6, "mesos: closed-loop p50 QoS 1 ≤ local + 500 µs", "mesos", "closed-q1", "p50_over_us", "<=", 500, "local"),
    Goal(6, "mesos: throughput QoS 0 ≥ 5,000 calls/s", "mesos", "window-q0", "throughput_rps", ">=", 5000),
    Goal(6, "mesos: throughput QoS 1 ≥ 5,000 calls/s", "mesos", "window-q1", "throughput_rps", ">=", 5000),
    Goal(9, "inline: throughput QoS 1, durable queue ≥ 0.7× without", "inline", "window-q1", "throughput_vs_volatile",
         ">=", 0.7),
)  # fmt: skip
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def _goal_value(results: Results, goal: Goal, transport: str) -> float | None:
    target = f"{goal.executor}/{transport}"
    if goal.metric == "peak_pss_mb":
        runs = [results.run(n, target) for n in results.rounds]
        peaks = [r["peak_pss_mb"] for r in runs if r is not None and "peak_pss_mb" in r]
        return max(peaks) if peaks else None
    assert goal.scenario is not None
    if goal.metric == "throughput_rps":
        return _med([m["throughput_rps"] for m in results.measurements(target, goal.scenario)], 1)
    if goal.metric == "throughput_vs_volatile":  # per round, like the ratios to the null responder
        volatile = target + VOLATILE
        ratios = []
        for n in results.rounds:
            mine = results.measurement(n, target, goal.scenario)
            theirs = results.measurement(n, volatile, goal.scenario)
            if mine is not None and theirs is not None:
                ratio = _ratio(mine["throughput_rps"], theirs["throughput_rps"])
                if ratio is not None:
                    ratios.append(ratio)
        return _med(ratios)
    if goal.metric == "p50_over_us":  # per round, then the median: both met the same moment of the machine
        base = f"{goal.base}/{transport}"
        diffs = []
        for n in results.rounds:
            mine = results.measurement(n, target, goal.scenario)
            theirs = results.measurement(n, base, goal.scenario)
            if mine is not None and theirs is not None:
                diffs.append(mine["latency_us"]["p50"] - theirs["latency_us"]["p50"])
        return _med(diffs, 1)
    value = {"throughput_ratio": throughput_ratio, "p50_ratio": p50_ratio}[goal.metric]
    return _med(results.per_round(target, goal.scenario, value))


def goals(results: Results) -> list[Record]:
    """Every goal of a target in the run, for every transport: value, pass or miss, and whether it binds.

    Goals of targets the run did not include are left out; a goal whose target
    (or base) failed or was not run has the value ``None`` ("not measured").
    """
    transports = [t["transport"] for t in results.raw["targets"] if t["transport"]]
    rows: list[Record] = []
    for transport in dict.fromkeys(transports):
        for goal in GOALS:
            target = f"{goal.executor}/{transport}"
            if target not in results.targets:
                continue
            if goal.metric == "throughput_vs_volatile" and target + VOLATILE not in results.targets:
                continue
            value = _goal_value(results, goal, transport)
            rows.append(
                {
                    "issue": goal.issue,
                    "goal": goal.title,
                    "transport": transport,
                    "value": value,
                    "limit": goal.limit,
                    "unit": goal.unit,
                    "met": None if value is None else _OPS[goal.op](value, goal.limit),
                    "binding": transport in BINDING_TRANSPORTS,
                }
            )
    return rows


def analyse(raw: Record) -> Record:
    """The ``summary`` section of the JSON."""
    results = Results(raw)
    return {"rows": summary(results), "memory": memory(results), "goals": goals(results)}
