"""Run the stand-in as a subprocess for a test, and stop it (and every executor) by pid.

The stand-in picks free ports itself (``--port 0``) and reports them on its first stdout line, so
there is no race for a port. Executors live in their own sessions, so they would outlive a
SIGKILLed stand-in: ``stop`` also kills every process group listed in ``<work_dir>/pids``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from tests.mesos_standin.control import Control
from tests.support.timeouts import scaled, scaled_text, wait_for

__all__ = ["FAST", "StandIn", "process_alive", "wait_for"]  # wait_for: the suite's one wait, kept importable here

ROOT = Path(__file__).resolve().parents[2]

FAST = {
    "--heartbeat-interval": scaled_text(0.5),
    "--allocation-interval": scaled_text(0.1),
    "--agent-unreachable-timeout": scaled_text(0.5),
    "--status-update-retry-interval": scaled_text(0.5),
    "--executor-shutdown-grace-period": scaled_text(2),
    "--executor-registration-timeout": scaled_text(20),
}
"""Settings that keep tests quick, stretched by the suite's timeout scale; any flag can be overridden."""


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class StandIn:
    """A running ``python -m tests.mesos_standin``."""

    def __init__(self, work_dir: Path, agents: int = 2, **flags: str) -> None:
        self.work_dir = work_dir
        options = {**FAST, **{f"--{k.replace('_', '-')}": v for k, v in flags.items()}}
        self.args = [
            sys.executable,
            "-m",
            "tests.mesos_standin",
            "--port",
            "0",
            "--agents",
            str(agents),
            "--work-dir",
            str(work_dir),
        ] + [x for pair in options.items() for x in pair]
        self.log_path = work_dir.parent / f"{work_dir.name}-standin.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.master = ""
        self.agents: list[dict[str, str]] = []

    @property
    def control(self) -> Control:
        """A client for this stand-in."""
        return Control(self.master)

    def start(self, timeout: float = 20.0) -> StandIn:
        """Start and wait for the ready line (``timeout`` in base seconds)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], scaled(timeout))
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise AssertionError(f"stand-in did not start:\n{self.log()[-3000:]}")
        ready_info = json.loads(line)
        self.master, self.agents = ready_info["master"], ready_info["agents"]
        return self

    def log(self) -> str:
        """The stand-in's stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by pid (the stand-in destroys its executors), SIGKILL if needed, then sweep leftover groups."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(scaled(5))
        if process is not None and process.stdout is not None:
            process.stdout.close()
        for pid_file in (self.work_dir / "pids").glob("*"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pid_file.name), signal.SIGKILL)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
