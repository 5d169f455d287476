"""The benchmark's smoke run: every target, tiny counts, no thresholds, so ``make bench`` cannot rot.

It runs ``python -m benchmarks --smoke`` (its own private broker, the null
responder and each gateway configuration, including the mesos executor on its
own Mesos stand-in, one round of every scenario) and checks the JSON it writes:
the expected structure, and every request answered with the correct result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scenarios import default_scenarios
from benchmarks.targets import all_targets
from tests.support.timeouts import scaled

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [s.name for s in default_scenarios()]
TARGETS = [t.name for t in all_targets()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The raw results of one smoke run, and its output directory."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(180),
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    return json.loads((out / "latest.json").read_text()), out


@pytest.mark.slow
def test_smoke_run_writes_json_markdown_and_chart(smoke: tuple[dict[str, Any], Path]) -> None:
    raw, out = smoke
    assert raw["schema"] == 1
    assert {"started", "duration_s", "machine", "config", "scenarios", "targets", "runs", "summary"} <= raw.keys()
    assert [s["name"] for s in raw["scenarios"]] == SCENARIOS
    assert [t["name"] for t in raw["targets"]] == TARGETS
    markdown = (out / "latest.md").read_text()
    for title in ("**Speed", "**Cost", "**Memory", "**Targets of issues 4, 6 and 9"):
        assert title in markdown
    for target in TARGETS:
        assert markdown.count(f"| closed-q0 | {target} |") == 2  # the speed and the cost tables
    assert (out / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_run_answers_every_request_correctly(smoke: tuple[dict[str, Any], Path]) -> None:
    raw, _ = smoke
    assert [(r["round"], r["target"]) for r in raw["runs"]] == [(1, t) for t in TARGETS]
    for run in raw["runs"]:
        assert run["ok"], run["error"]
        assert run["peak_pss_mb"] > 0
        assert [m["scenario"] for m in run["measurements"]] == SCENARIOS
        for m in run["measurements"]:
            where = f"{run['target']} {m['scenario']}"
            assert m["sent"] > 0, where
            assert m["answered"] == m["sent"], where
            assert m["lost"] == 0, where
            assert m["errors"] == 0, f"{where}: {m['error_samples']}"
            assert 0 < m["latency_us"]["p50"] <= m["latency_us"]["p99"] <= m["latency_us"]["max"], where
            assert m["throughput_rps"] > 0, where
            assert sum(count for _, count in m["histogram"]) == m["answered"], where
            assert set(m["cpu_us_per_request"]) == {"target", "broker", "loadgen"}, where


@pytest.mark.slow
def test_smoke_summary_has_ratios_and_goals(smoke: tuple[dict[str, Any], Path]) -> None:
    summary = smoke[0]["summary"]
    rows = {(row["target"], row["scenario"]): row for row in summary["rows"]}
    assert set(rows) == {(t, s) for t in TARGETS for s in SCENARIOS}
    for (target, _), row in rows.items():
        if target != "null":
            assert row["throughput_ratio"] > 0 and row["p50_ratio"] > 0
    assert {row["target"] for row in summary["memory"]} == set(TARGETS)
    assert all(goal["value"] is not None for goal in summary["goals"])
    issue_6 = {goal["goal"] for goal in summary["goals"] if goal["issue"] == 6 and goal["transport"] == "fast"}
    assert len(issue_6) == 4, issue_6
    # The durable queue's cost: inline/fast against itself without the queue, in the same run.
    assert "inline/fast+volatile" in TARGETS
    issue_9 = [goal for goal in summary["goals"] if goal["issue"] == 9]
    assert [(goal["transport"], goal["value"] > 0) for goal in issue_9] == [("fast", True)], issue_9


@pytest.mark.slow
def test_smoke_mesos_target_counts_its_executors(smoke: tuple[dict[str, Any], Path]) -> None:
    """The mesos target's memory includes the executors and workers under its stand-in, not just the gateway."""
    memory = {row["target"]: row for row in smoke[0]["summary"]["memory"]}
    assert "mesos/fast" in TARGETS
    # Two executors, each with a fork server and 2 warm workers, weigh more than the gateway and its 2 workers.
    assert memory["mesos/fast"]["peak_pss_mb_max"] > memory["local/fast"]["peak_pss_mb_max"]
