"""``python -m benchmarks``: run the benchmark, print the tables, write JSON, Markdown and a PNG chart.

Exit code 0 when every target started and answered every request correctly,
1 otherwise (the issue's targets are reported, not enforced here).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import analysis, chart, report
from benchmarks.runner import BenchConfig, Runner
from benchmarks.scenarios import Scenario, default_scenarios
from benchmarks.targets import GATEWAY_EXECUTORS, GATEWAY_TRANSPORTS, NULL, TargetSpec, all_targets, parse_target

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Roost against the null responder.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2 rounds, a quarter of the requests (~30 s)")
    size.add_argument("--smoke", action="store_true", help="1 round, 10 devices, a few requests (for make test)")
    parser.add_argument("--rounds", type=int, help="rounds of A, B, … (default 5; --quick 2; --smoke 1)")
    parser.add_argument("--scale", type=float, help="multiply every scenario's requests and seconds")
    parser.add_argument("--devices", type=int, help="simulated devices (default 100)")
    parser.add_argument("--window", type=int, default=500, help="requests in flight for max throughput")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s of the fixed-rate scenarios")
    parser.add_argument("--targets", type=_names, help=f"comma list: {NULL}, EXECUTOR/TRANSPORT (overrides the next)")
    parser.add_argument("--executors", type=_names, default=GATEWAY_EXECUTORS, help="comma list (default: all)")
    parser.add_argument("--transports", type=_names, default=GATEWAY_TRANSPORTS, help="comma list (default: all)")
    parser.add_argument("--scenarios", type=_names, help="comma list of scenario names (default: all six)")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="load generator loop")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument(
        "--from-json", type=Path, metavar="PATH", help="do not run: redo the tables, Markdown and chart of a JSON file"
    )
    return parser


def _scenarios(ns: argparse.Namespace) -> tuple[Scenario, ...]:
    loads = default_scenarios(rate=ns.rate, window=ns.window)
    if ns.smoke:
        loads = tuple(
            dataclasses.replace(s, requests=30, seconds=1.0, window=min(s.window, 10), rate=min(s.rate, 500.0))
            for s in loads
        )
    scale = ns.scale if ns.scale is not None else (0.25 if ns.quick else 1.0)
    loads = tuple(s.scaled(scale) for s in loads) if scale != 1.0 else loads
    if ns.scenarios:
        unknown = set(ns.scenarios) - {s.name for s in loads}
        if unknown:
            raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        loads = tuple(s for s in loads if s.name in ns.scenarios)
    return loads


def _targets(ns: argparse.Namespace) -> tuple[TargetSpec, ...]:
    if not ns.targets:
        return tuple(all_targets(ns.executors, ns.transports))
    try:
        chosen = [parse_target(name) for name in ns.targets]
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    if all(t.name != NULL for t in chosen):  # every ratio needs the floor of the same round
        chosen.insert(0, TargetSpec(NULL))
    return tuple(chosen)


def config_from_args(ns: argparse.Namespace, loop_name: str) -> BenchConfig:
    """The run's settings from the command line."""
    rounds = ns.rounds or (1 if ns.smoke else 2 if ns.quick else 5)
    devices = ns.devices or (10 if ns.smoke else 100)
    return BenchConfig(
        rounds=rounds,
        devices=devices,
        scenarios=_scenarios(ns),
        targets=_targets(ns),
        warmup_requests=20 if ns.smoke else 300,
        loop=loop_name,
    )


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """The load generator's event loop: uvloop when available (it halves the generator's CPU), else asyncio's."""
    if choice != "asyncio":
        try:
            module: Any = importlib.import_module("uvloop")
            factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
            return factory, "uvloop"
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("--loop uvloop: uvloop is not installed") from None
    return None, "asyncio"


def run(
    config: BenchConfig, factory: Callable[[], asyncio.AbstractEventLoop] | None, console: Console
) -> dict[str, Any]:
    """Run the benchmark under a progress bar and return the raw results."""
    steps = config.rounds * len(config.targets) * len(config.scenarios)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting the broker and the devices", total=steps)

        def step(text: str, done: int) -> None:
            progress.update(task, description=text, advance=done)

        with asyncio.Runner(loop_factory=factory) as runner:
            raw = runner.run(Runner(config, step).run())
        progress.update(task, description="done")
    return raw


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ns = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else report.TERMINAL_WIDTH)
    if ns.from_json:
        raw = json.loads(ns.from_json.read_text())
    else:
        factory, loop_name = loop_factory(ns.loop)
        raw = run(config_from_args(ns, loop_name), factory, console)
    raw["summary"] = analysis.analyse(raw)
    paths = report.write(raw, ns.out)
    paths["chart"] = chart.draw(raw, ns.out / "latest.png")
    report.print_tables(raw, console)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
    healthy = all(record["ok"] for record in raw["runs"]) and all(
        row.get("lost", 0) == 0 and row.get("errors", 0) == 0 for row in raw["summary"]["rows"]
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
