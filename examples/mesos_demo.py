"""``make demo-mesos``: a Mesos stand-in with two agents, a gateway on the mesos executor, calls served on both.

Run from the repository root: ``python examples/mesos_demo.py``. It starts a private
mosquitto, the Mesos stand-in from the test tree (``tests/mesos_standin``: one process
playing a master and two agents that launch real executor processes), and
``roost run --executor mesos --mesos-master HOST:PORT``; then it calls a few functions
and shows which agent, executor and worker process answered each. Everything it
started is stopped by pid at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gateway.cli.client import NoReply, RequestClient  # noqa: E402
from gateway.cli.devbroker import LocalBroker  # noqa: E402
from tests.mesos.mesos_gateway import agent_python  # noqa: E402
from tests.mesos_standin.harness import StandIn  # noqa: E402

FUNCTIONS = ("functions.examples", "tests.mesos.gateway_funcs")
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("devices/pi-1/add", {"a": 1, "b": 2}),
    ("devices/pi-1/add", {"a": 1, "b": "two"}),
    ("devices/pi-1/fail", {"reason": "sensor unplugged"}),
    ("devices/pi-1/unknown", {}),
]


def main() -> int:
    """Start everything, call, show, stop."""
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="roost-mesos-demo-") as scratch:
        work = Path(scratch)
        with LocalBroker() as broker, StandIn(work / "mesos", agents=2) as standin:
            console.print(f"[bold]broker[/bold] mosquitto on {broker.address}")
            console.print(f"[bold]mesos[/bold] stand-in master on {standin.master}, agents:")
            for agent in standin.agents:
                console.print(f"  {agent['id']} (executor API on {agent['endpoint']})")
            gateway = start_gateway(broker.address, standin.master, work)
            try:
                console.print(
                    f"[bold]gateway[/bold] pid {gateway.pid}: --executor mesos --mesos-master {standin.master}"
                )
                code = asyncio.run(calls(broker.address, console))
                show_cluster(standin, console)
            finally:
                stop(gateway)
            if code != 0:
                console.print((work / "gateway.log").read_text(errors="replace")[-3000:], markup=False)
            return code


def start_gateway(broker: str, master: str, work: Path) -> subprocess.Popen[bytes]:
    """``roost run`` with the mesos executor; framework id, durable queue and bundles go in the scratch directory."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        ROOST_DURABLE__PATH=str(work / "queue.sqlite3"),
        ROOST_MESOS__STATE_FILE=str(work / "framework.json"),
        ROOST_MESOS__BUNDLE_DIR=str(work / "bundles"),
        # The stand-in's agents run on this machine: give them this Python by path when the agents' bare
        # PATH has no python3.X of this version (a pyenv-only Python, say), as the tests do.
        ROOST_MESOS__PYTHON=agent_python(),
    )
    functions = [arg for module in FUNCTIONS for arg in ("--functions", module)]
    args = [sys.executable, "-m", "gateway", "run", "--broker", broker, "--executor", "mesos"]
    args += ["--mesos-master", master, "--client-id", f"roost-mesos-demo-{os.getpid()}", *functions]
    with open(work / "gateway.log", "ab") as log:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)


async def calls(broker: str, console: Console) -> int:
    """Wait for the gateway, then show a few replies and where ``whereami`` ran."""
    host, port = broker.split(":")
    async with RequestClient(host, int(port), device_id="pi-1") as client:
        deadline = time.monotonic() + 60
        while True:  # the gateway answers once its executors are warm on the agents
            try:
                await client.request("devices/pi-1/add", {"a": 0, "b": 0}, timeout=1.0)
                break
            except NoReply:
                if time.monotonic() > deadline:
                    console.print("[red]the gateway did not answer within 60 s[/red]")
                    return 1
        for topic, args in CALLS:
            reply = await client.request(topic, args, timeout=5.0)
            shown = reply.result if reply.error is None else f"error {reply.error.code}: {reply.error.message}"
            console.print(f"[cyan]{topic}[/cyan] {args} → {shown}")
        table = Table(title="devices/pi-1/whereami: each call ran in a warm worker of an executor on an agent")
        for column in ("call", "agent", "executor", "worker pid", "sandbox (run)", "python"):
            table.add_column(column)
        for number in range(1, 9):
            reply = await client.request("devices/pi-1/whereami", {}, timeout=5.0)
            if reply.error is not None:
                console.print(f"[red]error {reply.error.code}: {reply.error.message}[/red]")
                return 1
            where = reply.result
            flags = "-I -S" if where["isolated"] and where["no_site"] else ""
            agent = where["agent_id"].rsplit("-", 1)[-1]  # the stand-in's agent ids end in S0, S1, ...
            sandbox = Path(where["sandbox"]).name[:8]
            python = f"{where['executable']} {flags}"
            table.add_row(str(number), agent, where["executor_id"], str(where["pid"]), sandbox + "…", python)
        console.print(table)
    return 0


def show_cluster(standin: StandIn, console: Console) -> None:
    """The master's view: one framework, one pool task per executor, no task per call."""
    for framework in standin.control.state()["frameworks"]:
        tasks = ", ".join(f"{t['id']} ({t['state']})" for t in framework["tasks"])
        console.print(f"[bold]framework[/bold] {framework['id']} ({framework['name']}): tasks {tasks}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid (the gateway kills its pool tasks), SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


if __name__ == "__main__":
    raise SystemExit(main())
