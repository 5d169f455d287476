"""Presenting a run: the terminal tables (rich), the JSON file and a Markdown summary for the README.

Every table is built once as headers and rows of strings (:func:`tables`) and
then rendered either with rich or as Markdown, so the terminal and the README
show the same figures.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.targets import NULL

Record = dict[str, Any]
TERMINAL_WIDTH = 150  # when stdout is not a terminal (make bench | tee, CI logs)
LEFT_ALIGNED = frozenset({"scenario", "target", "issue", "goal", "transport", "verdict"})
GOALS_TITLE = "Targets of issues 4, 6 and 9"


@dataclass(frozen=True, slots=True)
class TextTable:
    """A table as strings: a title, headers, rows, and the rows that start a new group."""

    title: str
    headers: tuple[str, ...]
    rows: list[list[str]]
    breaks: frozenset[int] = frozenset()
    missed: frozenset[int] = frozenset()  # rows to highlight


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(row: Record, key: str) -> str:
    if row["target"] == NULL:
        return "1"
    value = row.get(key)
    return "–" if value is None else f"{value:.2f}×"


def _grouped(rows: list[Record]) -> frozenset[int]:
    return frozenset(i for i in range(1, len(rows)) if rows[i]["scenario"] != rows[i - 1]["scenario"])


def speed_table(summary: Record) -> TextTable:
    """Throughput, latency, errors and lost requests per scenario and target."""
    rows = summary["rows"]
    cells = []
    for row in rows:
        if not row["rounds"]:
            cells.append([row["scenario"], row["target"], "not measured", *[""] * 8])
            continue
        lat = row["latency_us"]
        cells.append(
            [
                row["scenario"],
                row["target"],
                _num(row["throughput_rps"]),
                _ratio(row, "throughput_ratio"),
                _num(lat["p50"]),
                _ratio(row, "p50_ratio"),
                _num(lat["p90"]),
                _num(lat["p99"]),
                _num(lat["max"]),
                str(row["errors"]),
                str(row["lost"]),
            ]
        )
    headers = (
        "scenario",
        "target",
        "req/s",
        "×null",
        "p50 µs",
        "×null",
        "p90 µs",
        "p99 µs",
        "max µs",
        "errors",
        "lost",
    )
    return TextTable("Speed: throughput and round-trip latency", headers, cells, _grouped(rows))


def cost_table(summary: Record) -> TextTable:
    """CPU per answered request of the target, the broker and the load generator."""
    rows = [row for row in summary["rows"] if row["rounds"]]
    cells = []
    for row in rows:
        cpu = row["cpu_us_per_request"]
        cells.append(
            [
                row["scenario"],
                row["target"],
                _num(cpu["target"], 1),
                _ratio(row, "cpu_ratio"),
                _num(cpu["broker"], 1),
                _num(cpu["loadgen"], 1),
                _num(row["loadgen_cores"], 2),
            ]
        )
    headers = ("scenario", "target", "target CPU µs/req", "×null", "broker µs/req", "loadgen µs/req", "loadgen cores")
    return TextTable("Cost: CPU time per answered request", headers, cells, _grouped(rows))


def memory_table(summary: Record) -> TextTable:
    """Peak summed PSS of each target's process tree and its start-up time."""
    cells = [
        [
            row["target"],
            _num(row["peak_pss_mb_median"], 1),
            _num(row["peak_pss_mb_max"], 1),
            _num(row["ready_s_median"], 2),
            f"{row['rounds_ok']}/{row['rounds']}",
        ]
        for row in summary["memory"]
    ]
    headers = ("target", "peak PSS MB (median)", "peak PSS MB (max)", "start → first answer s", "rounds ok")
    return TextTable("Memory of the process tree (summed PSS) and start-up", headers, cells)


def goal_table(summary: Record) -> TextTable:
    """The issue's targets: value, verdict, and whether they bind."""
    cells = []
    missed = set()
    for index, goal in enumerate(summary["goals"]):
        value, unit = goal["value"], goal["unit"]
        digits = 0 if unit == "req/s" else 1
        shown = "–" if value is None else f"{value:.2f}×" if unit == "×" else f"{value:,.{digits}f} {unit}"
        verdict = "not measured" if goal["met"] is None else "met" if goal["met"] else "MISSED"
        if not goal["binding"]:
            verdict += " (report-only)"
        if goal["met"] is False:
            missed.add(index)
        cells.append([str(goal["issue"]), goal["goal"], goal["transport"], shown, verdict])
    headers = ("issue", "goal", "transport", "value", "verdict")
    return TextTable(GOALS_TITLE, headers, cells, missed=frozenset(missed))


def tables(raw: Record) -> list[TextTable]:
    """All tables of a run, in reading order."""
    summary = raw["summary"]
    return [speed_table(summary), cost_table(summary), memory_table(summary), goal_table(summary)]


def print_tables(raw: Record, console: Console) -> None:
    """The results as rich tables, then any failure."""
    for text in tables(raw):
        table = Table(title=text.title)
        for header in text.headers:
            table.add_column(header, justify="left" if header in LEFT_ALIGNED else "right")
        for index, cells in enumerate(text.rows):
            if index in text.breaks:
                table.add_section()
            table.add_row(*cells, style="red" if index in text.missed else None)
        console.print(table)
    for row in raw["summary"]["memory"]:
        for failure in row["failures"]:
            console.print(f"[red]{row['target']} failed:[/red] {failure}")


def _markdown_table(text: TextTable) -> str:
    lines = [f"**{text.title}**", "", "| " + " | ".join(text.headers) + " |", "|" + "---|" * len(text.headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in text.rows]
    return "\n".join(lines)


def markdown(raw: Record) -> str:
    """A Markdown summary of a run (for ``benchmarks/README.md``)."""
    m = raw["machine"]
    config = raw["config"]
    header = (
        f"Run of {raw['started']} ({raw['duration_s']:.0f} s; {config['rounds']} rounds; {config['devices']} devices; "
        f"load generator on {config['loadgen_loop']}) on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, "
        f"{m['os']}, Python {m['python']}, {m['broker']}; load average at start {m['load_average_at_start']}."
    )
    loads = "\n".join(f"- `{s['name']}`: {s['description']}" for s in raw["scenarios"])
    return "\n\n".join([header, loads, *(_markdown_table(t) for t in tables(raw))])


_NUMBER_LIST = re.compile(r"\[\s+(-?[\d.e+-]+(?:,\s+-?[\d.e+-]+)*)\s+\]")


def to_json(raw: Record) -> str:
    """Indented JSON with lists of numbers (histogram bins) kept on one line."""
    text = json.dumps(raw, indent=1, ensure_ascii=False)
    return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def write(raw: Record, out_dir: Path, stem: str = "latest") -> dict[str, Path]:
    """Write ``STEM.json`` and ``STEM.md`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md"}
    paths["json"].write_text(to_json(raw))
    paths["markdown"].write_text(markdown(raw) + "\n")
    return paths
