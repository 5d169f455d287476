"""What the benchmark measures: the null responder and each gateway configuration, started and stopped by pid.

The list of gateway configurations is data: every executor in
:data:`GATEWAY_EXECUTORS` with every transport in :data:`GATEWAY_TRANSPORTS`
(or only those :data:`EXECUTOR_TRANSPORTS` names for it). A new transport or
executor is one more name there (or ``--transports`` / ``--executors`` on the
command line).

A ``mesos/…`` target also owns a Mesos stand-in for its lifetime
(:mod:`benchmarks.mesos_cluster`), and its executors count as part of it.
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

import psutil

from benchmarks import meters, mqtt_wire
from benchmarks.mesos_cluster import MesosCluster
from gateway.config import EXAMPLE_FUNCTIONS

REPO_ROOT = Path(__file__).resolve().parent.parent
NULL = "null"
GATEWAY_EXECUTORS: tuple[str, ...] = ("inline", "local", "mesos")
GATEWAY_TRANSPORTS: tuple[str, ...] = ("fast", "paho")
# Executors that a default run measures over these transports only (any other pair still runs with --targets):
# mesos/paho would be report-only and would add a minute to a full run.
EXECUTOR_TRANSPORTS: dict[str, frozenset[str]] = {"mesos": frozenset({"fast"})}
MESOS = "mesos"
# Transports whose ratios the targets bind; the others are reported only.
BINDING_TRANSPORTS: frozenset[str] = frozenset({"fast"})
# "+volatile": the same gateway with the durable queue off, the baseline of what the queue costs (issue 9).
VOLATILE = "+volatile"
# Executors a default run also measures without the durable queue, on the binding transports.
VOLATILE_BASELINES: tuple[str, ...] = ("inline",)


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One responder configuration; ``name`` is ``null`` or ``EXECUTOR/TRANSPORT[+volatile]``."""

    name: str
    executor: str | None = None
    transport: str | None = None
    durable: bool = True  # a gateway's durable queue (off: ``+volatile``)

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
            # What every benchmark calls (add, echo and friends): the example functions, named.
            *(flag for module in EXAMPLE_FUNCTIONS for flag in ("--functions", module)),
        ]  # fmt: skip


def gateway_target(executor: str, transport: str, durable: bool = True) -> TargetSpec:
    """The gateway with ``executor`` over ``transport`` (and its durable queue, unless ``durable`` is false)."""
    return TargetSpec(f"{executor}/{transport}{'' if durable else VOLATILE}", executor, transport, durable)


def all_targets(
    executors: tuple[str, ...] = GATEWAY_EXECUTORS, transports: tuple[str, ...] = GATEWAY_TRANSPORTS
) -> list[TargetSpec]:
    """The null responder, every executor over every transport (of :data:`EXECUTOR_TRANSPORTS`, if listed), then
    the :data:`VOLATILE_BASELINES` without their durable queue on the binding transports."""
    pairs = [(e, t) for t in transports for e in executors if t in EXECUTOR_TRANSPORTS.get(e, frozenset({t}))]
    baselines = [(e, t) for e, t in pairs if e in VOLATILE_BASELINES and t in BINDING_TRANSPORTS]
    volatile = [gateway_target(e, t, durable=False) for e, t in baselines]
    return [TargetSpec(NULL)] + [gateway_target(e, t) for e, t in pairs] + volatile


def parse_target(name: str) -> TargetSpec:
    """``null`` or ``EXECUTOR/TRANSPORT[+volatile]``; raises ``ValueError`` otherwise."""
    if name == NULL:
        return TargetSpec(NULL)
    durable = not name.endswith(VOLATILE)
    executor, sep, transport = name.removesuffix(VOLATILE).partition("/")
    if not sep or not executor or not transport:
        raise ValueError(f"target {name!r} is neither {NULL!r} nor EXECUTOR/TRANSPORT[{VOLATILE}]")
    return gateway_target(executor, transport, durable)


class TargetProcess:
    """A started target: its process (and Mesos cluster), its log file and how to stop it."""

    def __init__(self, spec: TargetSpec, broker: str, client_id: str, log_path: Path) -> None:
        self.spec = spec
        self.client_id = client_id
        self.log_path = log_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        command = spec.command(broker, client_id)
        if spec.is_gateway and not spec.durable:
            env["ROOST_DURABLE__ENABLED"] = "false"
        elif spec.is_gateway:  # its durable queue next to its log (removed with it), not in the user's state directory
            env["ROOST_DURABLE__PATH"] = str(log_path.with_suffix(".queue.sqlite3"))
        self.cluster: MesosCluster | None = None
        if spec.executor == MESOS:
            self.cluster = MesosCluster(log_path.with_suffix(".mesos"))
            command += self.cluster.gateway_args()
            env.update(self.cluster.gateway_env())
        try:
            with open(log_path, "ab") as log:
                self.process = subprocess.Popen(
                    command,
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches the runner only; it stops this by pid
                )
        except BaseException:
            if self.cluster is not None:
                self.cluster.stop()
            raise

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def processes(self) -> list[psutil.Process]:
        """What its CPU and memory are: its process tree, plus the executors on its Mesos cluster."""
        mine = meters.tree(self.pid)
        return mine + self.cluster.executors() if self.cluster is not None else mine

    def exited(self) -> int | None:
        """The exit code once it has exited."""
        return self.process.poll()

    def log_tail(self, chars: int = 1500) -> str:
        """The end of its stdout and stderr."""
        try:
            tail = self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            tail = ""
        if self.cluster is not None:
            tail += f"\nstand-in log: {self.cluster.log_tail(chars // 2)}"
        return tail

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code. Then its Mesos cluster."""
        process = self.process
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                for _ in range(int(timeout / 0.02)):
                    if process.poll() is not None:
                        break
                    await asyncio.sleep(0.02)
                else:
                    process.kill()
            return process.wait(5.0)
        finally:
            if self.cluster is not None:
                await asyncio.to_thread(self.cluster.stop)


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
