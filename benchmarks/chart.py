"""The latency chart: one panel per scenario, one cumulative distribution per target."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

from benchmarks import stats
from benchmarks.analysis import Results

COLUMNS = 2


def draw(raw: dict[str, Any], path: Path) -> Path:
    """Write the PNG chart of the pooled latency distributions to ``path``."""
    results = Results(raw)
    scenarios = results.scenarios
    rows = max(1, math.ceil(len(scenarios) / COLUMNS))
    figure, axes = plt.subplots(rows, COLUMNS, figsize=(6.5 * COLUMNS, 3.6 * rows), squeeze=False)
    for index, scenario in enumerate(scenarios):
        ax = axes[index // COLUMNS][index % COLUMNS]
        description = next(s["description"] for s in raw["scenarios"] if s["name"] == scenario)
        for target in results.targets:
            hist = stats.merge({i: c for i, c in m["histogram"]} for m in results.measurements(target, scenario))
            if not hist:
                continue
            xs, ys = stats.cdf(hist)
            p50 = stats.hist_percentile(hist, 50)
            ax.step(xs, [100 * y for y in ys], where="post", label=f"{target} (p50 {p50:,.0f} µs)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 100.5)
        ax.set_title(f"{scenario}: {description}", fontsize=9)
        ax.set_xlabel("round-trip latency (µs, log scale)", fontsize=8)
        ax.set_ylabel("% of requests answered within", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for index in range(len(scenarios), rows * COLUMNS):
        axes[index // COLUMNS][index % COLUMNS].set_visible(False)
    machine = raw["machine"]
    figure.suptitle(
        f"Roost latency distributions, {raw['started']}, {machine['cores']} cores, "
        f"{raw['config']['rounds']} round(s) pooled",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
