"""What the benchmark measures: the null responder and each gateway configuration, started and stopped by pid.

The list of gateway configurations is data: every executor in
:data:`GATEWAY_EXECUTORS` with every transport in :data:`GATEWAY_TRANSPORTS`.
A new transport or executor is one more name there (or ``--transports`` /
``--executors`` on the command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import mqtt_wire

REPO_ROOT = Path(__file__).resolve().parent.parent
NULL = "null"
GATEWAY_EXECUTORS: tuple[str, ...] = ("inline", "local")
GATEWAY_TRANSPORTS: tuple[str, ...] = ("fast", "paho")
# Transports whose ratios the targets bind; the others are reported only.
BINDING_TRANSPORTS: frozenset[str] = frozenset({"fast"})


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One responder configuration; ``name`` is ``null`` or ``EXECUTOR/TRANSPORT``."""

    name: str
    executor: str | None = None
    transport: str | None = None

    @property
    def is_gateway(self) -> bool:
        """Whether this is a Roost gateway (not the null responder)."""
        return self.executor is not None

    def command(self, broker: str, client_id: str) -> list[str]:
        """The command line that starts it against ``broker`` (``127.0.0.1:PORT``)."""
        if not self.is_gateway:
            return [sys.executable, "-m", "benchmarks.null_responder", "--broker", broker, "--client-id", client_id]
        return [
            sys.executable, "-m", "gateway", "run",
            "--broker", broker,
            "--executor", str(self.executor),
            "--transport", str(self.transport),
            "--client-id", client_id,
            "--log-level", "WARNING",
        ]  # fmt: skip


def gateway_target(executor: str, transport: str) -> TargetSpec:
    """The gateway with ``executor`` over ``transport``."""
    return TargetSpec(f"{executor}/{transport}", executor, transport)


def all_targets(
    executors: tuple[str, ...] = GATEWAY_EXECUTORS, transports: tuple[str, ...] = GATEWAY_TRANSPORTS
) -> list[TargetSpec]:
    """The null responder, then every executor over every transport."""
    return [TargetSpec(NULL)] + [gateway_target(e, t) for t in transports for e in executors]


def parse_target(name: str) -> TargetSpec:
    """``null`` or ``EXECUTOR/TRANSPORT``; raises ``ValueError`` otherwise."""
    if name == NULL:
        return TargetSpec(NULL)
    executor, sep, transport = name.partition("/")
    if not sep or not executor or not transport:
        raise ValueError(f"target {name!r} is neither {NULL!r} nor EXECUTOR/TRANSPORT")
    return gateway_target(executor, transport)


class TargetProcess:
    """A started target: its process, its log file and how to stop it."""

    def __init__(self, spec: TargetSpec, broker: str, client_id: str, log_path: Path) -> None:
        self.spec = spec
        self.client_id = client_id
        self.log_path = log_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                spec.command(broker, client_id),
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the runner only; it stops this by pid
            )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def exited(self) -> int | None:
        """The exit code once it has exited."""
        return self.process.poll()

    def log_tail(self, chars: int = 1500) -> str:
        """The end of its stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            for _ in range(int(timeout / 0.02)):
                if process.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            else:
                process.kill()
        return process.wait(5.0)


async def forget_session(host: str, port: int, client_id: str, timeout: float = 5.0) -> None:
    """Remove the broker's persistent session of ``client_id``.

    The gateway keeps a persistent session; once it is stopped, the broker would
    queue every later QoS 1 request for it and spend CPU on that during the next
    target's measurements. Connecting with Clean Start and a session expiry of 0
    discards the session.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(mqtt_wire.connect(client_id, clean_start=True, session_expiry=0))
            frames = mqtt_wire.FrameReader()
            for _ in range(100):  # bounded: CONNACK is the first packet the broker sends
                chunk = await reader.read(4096)
                if not chunk or any(isinstance(p, mqtt_wire.ConnAckPacket) for p in frames.feed(chunk)):
                    break
            writer.write(mqtt_wire.disconnect())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
