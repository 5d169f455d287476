"""The benchmark run: one broker, one fleet, and rounds in which every target takes its turn.

Within a round each target is started, probed until it answers, warmed up,
measured under every scenario, and stopped by its pid; the next round starts
them again in the same order (A, B, A, B, …), so slow drifts of a shared
machine hit every target alike and a ratio to the null responder of the same
round stays meaningful. The result is a plain dict, written as JSON by
:mod:`benchmarks.report`.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks import meters, stats
from benchmarks.loadgen import Fleet, Tally
from benchmarks.scenarios import Scenario, default_scenarios, run_scenario, wait_until_answered
from benchmarks.targets import BINDING_TRANSPORTS, TargetProcess, TargetSpec, all_targets, forget_session
from gateway.cli.devbroker import LocalBroker

SCHEMA_VERSION = 1
HOST = "127.0.0.1"
Step = Callable[[str, int], None]  # (what is running, how many steps just finished)


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run depends on; recorded in the JSON."""

    rounds: int = 5
    devices: int = 100
    scenarios: tuple[Scenario, ...] = field(default_factory=default_scenarios)
    targets: tuple[TargetSpec, ...] = field(default_factory=lambda: tuple(all_targets()))
    drain: float = 2.0  # seconds to wait for the last replies of a scenario
    start_timeout: float = 30.0  # seconds for a target to answer its first request
    warmup_requests: int = 300
    loop: str = "asyncio"  # event loop of the load generator, recorded only (chosen in __main__)

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {
            "rounds": self.rounds,
            "devices": self.devices,
            "drain_s": self.drain,
            "start_timeout_s": self.start_timeout,
            "warmup_requests": self.warmup_requests,
            "loadgen_loop": self.loop,
        }


def machine() -> dict[str, Any]:
    """Where the run happened."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5).stdout
        broker = mosquitto.splitlines()[0] if mosquitto else "unknown"
    except (OSError, subprocess.SubprocessError):
        broker = "unknown"
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "broker": broker,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def measurement(scenario: Scenario, tally: Tally, cpu: dict[str, float]) -> dict[str, Any]:
    """The JSON record of one scenario on one target in one round."""
    elapsed = max(tally.last_reply_ns - tally.first_send_ns, 1) / 1e9 if tally.answered else 0.0
    answered = max(tally.answered, 1)
    return {
        "scenario": scenario.name,
        "sent": tally.sent,
        "answered": tally.answered,
        "errors": tally.errors,
        "lost": tally.sent - tally.answered,
        "stray": tally.stray,
        "elapsed_s": round(elapsed, 6),
        "throughput_rps": round(tally.answered / elapsed, 1) if elapsed else 0.0,
        "latency_us": {k: round(v, 1) for k, v in stats.latency_summary(tally.latencies_ns).items()},
        "histogram": [[i, c] for i, c in stats.histogram(tally.latencies_ns).items()],
        "cpu_s": {k: round(v, 4) for k, v in cpu.items()},
        "cpu_us_per_request": {k: round(v * 1e6 / answered, 2) for k, v in cpu.items()},
        "error_samples": tally.error_samples,
    }


class Runner:
    """Runs the configured rounds against one private broker."""

    def __init__(self, config: BenchConfig, step: Step | None = None) -> None:
        self.config = config
        self.step = step or (lambda _text, _done: None)
        self.run_id = uuid.uuid4().hex[:8]
        self.log_dir = Path(tempfile.mkdtemp(prefix="roost-bench-"))
        self.loadgen = psutil.Process()

    async def run(self) -> dict[str, Any]:
        """The whole benchmark; returns the raw results."""
        started = datetime.now(UTC)
        wall = time.monotonic()
        runs: list[dict[str, Any]] = []
        with LocalBroker(data_dir=self.log_dir / "broker") as broker:
            assert broker.process is not None
            fleet = Fleet(self.run_id)
            await fleet.connect(HOST, broker.port, self.config.devices, timeout=30.0)
            try:
                for round_no in range(1, self.config.rounds + 1):
                    for spec in self.config.targets:
                        runs.append(await self._measure_target(fleet, broker, round_no, spec))
            finally:
                fleet.close()
                await asyncio.sleep(0.05)  # let the DISCONNECTs leave before the broker stops
        keep_logs = any(not run["ok"] for run in runs)
        if not keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return {
            "schema": SCHEMA_VERSION,
            "started": started.isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - wall, 1),
            "machine": machine(),
            "config": self.config.describe(),
            "histogram_bins": {"floor_us": stats.BIN_FLOOR_US, "factor": stats.BIN_FACTOR},
            "scenarios": [asdict(s) | {"description": s.describe()} for s in self.config.scenarios],
            "targets": [asdict(t) | {"binding": t.transport in BINDING_TRANSPORTS} for t in self.config.targets],
            "runs": runs,
            "logs": str(self.log_dir) if keep_logs else None,
        }

    async def _measure_target(
        self, fleet: Fleet, broker: LocalBroker, round_no: int, spec: TargetSpec
    ) -> dict[str, Any]:
        assert broker.process is not None
        record: dict[str, Any] = {"round": round_no, "target": spec.name, "ok": False, "error": None}
        client_id = f"bench-{self.run_id}-{spec.name.replace('/', '-')}-r{round_no}"
        log_path = self.log_dir / f"{client_id}.log"
        measurements: list[dict[str, Any]] = []
        try:  # on a thread: a mesos target first starts its stand-in and waits for it
            target = await asyncio.to_thread(TargetProcess, spec, broker.address, client_id, log_path)
        except OSError as exc:
            record["error"] = f"could not start: {exc}"
            record["measurements"] = measurements
            self.step(f"round {round_no}/{self.config.rounds} · {spec.name} · failed", len(self.config.scenarios))
            return record
        try:
            with meters.PeakMemory(target.processes) as memory:
                record["ready_s"] = round(await self._wait_ready(fleet, target), 3)
                await run_scenario(fleet, self._warmup(), self.config.drain)
                for scenario in self.config.scenarios:
                    self.step(f"round {round_no}/{self.config.rounds} · {spec.name} · {scenario.name}", 0)
                    before = self._cpu(target, broker.process.pid)
                    tally = await run_scenario(fleet, scenario, self.config.drain)
                    after = self._cpu(target, broker.process.pid)
                    cpu = {k: after[k] - before[k] for k in before}
                    measurements.append(measurement(scenario, tally, cpu))
                    self.step(f"round {round_no}/{self.config.rounds} · {spec.name} · {scenario.name}", 1)
            record["peak_pss_mb"] = round(memory.peak_bytes / 2**20, 1)
            record["pss_samples"] = memory.samples
            record["ok"] = target.exited() is None
            if not record["ok"]:
                record["error"] = f"exited with code {target.exited()}: {target.log_tail()}"
        except (TimeoutError, OSError, psutil.Error) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}; log: {target.log_tail()}"
        finally:
            record["exit_code"] = await target.stop()
            if spec.is_gateway:
                try:
                    await forget_session(HOST, broker.port, client_id)
                except (TimeoutError, OSError) as exc:  # the next targets would pay for its queue: say so
                    record["ok"] = False
                    record["error"] = f"could not clear the session of {client_id}: {exc!r}"
        missing = len(self.config.scenarios) - len(measurements)
        if missing:
            self.step(f"round {round_no}/{self.config.rounds} · {spec.name} · failed", missing)
        record["measurements"] = measurements
        return record

    async def _wait_ready(self, fleet: Fleet, target: TargetProcess) -> float:
        """Probe until the target answers; fail fast if its process exits."""
        probe = asyncio.ensure_future(wait_until_answered(fleet, self.config.start_timeout))
        try:
            for _ in range(int(self.config.start_timeout / 0.05) + 2):
                if probe.done():
                    return probe.result()
                if target.exited() is not None:
                    raise OSError(f"{target.spec.name} exited with code {target.exited()} before answering")
                await asyncio.sleep(0.05)
            return await probe
        finally:
            probe.cancel()

    def _warmup(self) -> Scenario:
        count = self.config.warmup_requests
        return Scenario("warmup", "window", 1, requests=count, seconds=5.0, window=min(count, 50))

    def _cpu(self, target: TargetProcess, broker_pid: int) -> dict[str, float]:
        times = self.loadgen.cpu_times()
        return {
            "target": meters.cpu_seconds(target.processes()),
            "broker": meters.tree_cpu_seconds(broker_pid),
            "loadgen": times.user + times.system,
        }
