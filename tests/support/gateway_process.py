"""Start and stop a real gateway process (``python -m gateway run``) for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from gateway.config import EXAMPLE_FUNCTIONS
from tests.support.timeouts import scaled

ROOT = Path(__file__).resolve().parents[2]
#: The flags that serve the example modules: what a gateway of the tests runs when a test names no functions.
EXAMPLES = tuple(flag for module in EXAMPLE_FUNCTIONS for flag in ("--functions", module))


class GatewayProcess:
    """A gateway subprocess whose stderr goes to a log file; ready once it logs 'serving'.

    Without ``--functions``, ``--config`` or ``ROOST_FUNCTIONS`` it serves the example modules.
    """

    def __init__(
        self, broker: str, log_dir: Path, *extra: str, client_id: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.broker = broker
        self.client_id = client_id or f"roost-test-{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"{self.client_id}-{uuid.uuid4().hex[:4]}.log"
        if "--functions" not in extra and "--config" not in extra and "ROOST_FUNCTIONS" not in (env or {}):
            extra = (*extra, *EXAMPLES)  # the gateway serves nothing unless told what
        self.args = [sys.executable, "-m", "gateway", "run", "--broker", broker, "--client-id", self.client_id, *extra]
        # Each gateway identity keeps its durable queue next to its log, not in the user's state directory.
        queue = {"ROOST_DURABLE__PATH": str(log_dir / f"{self.client_id}.queue.sqlite3")}
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), **{**queue, **(env or {})})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Start and wait (``timeout`` in base seconds) until the gateway has subscribed."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "serving " in self.log()[offset:]:
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log()[offset:]}")
            time.sleep(0.02)  # a poll interval inside a bounded wait
        self.kill()  # the test never gets this process to stop: do not leave it running
        raise AssertionError(f"gateway not ready within {timeout:g} s:\n{self.log()[offset:]}")

    def log(self) -> str:
        """Everything the gateway logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM by pid, wait, SIGKILL if needed; returns the exit code."""
        process = self.process
        if process is None:
            return 0
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(scaled(5))
                raise AssertionError(f"gateway did not stop on SIGTERM:\n{self.log()[-3000:]}") from None
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the gateway and its process group children (workers die with the pipe)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(scaled(5))
            self.process = None


def queue_bytes(queue: Path) -> int:
    """A durable queue's size on disk: the database and its write-ahead log."""
    return sum(path.stat().st_size for path in (queue, Path(f"{queue}-wal")) if path.exists())
