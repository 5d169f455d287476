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
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from tests.mesos_standin.control import Control

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

FAST = {
    "--heartbeat-interval": "0.5",
    "--allocation-interval": "0.1",
    "--agent-unreachable-timeout": "0.5",
    "--status-update-retry-interval": "0.5",
    "--executor-shutdown-grace-period": "2",
    "--executor-registration-timeout": "20",
}
"""Settings that keep tests quick; any flag can be overridden."""


def wait_for(condition: Callable[[], T | None], timeout: float = 10.0, message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


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
        """Start and wait for the ready line."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
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
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        for pid_file in (self.work_dir / "pids").glob("*"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pid_file.name), signal.SIGKILL)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
