"""``roost demo``: a private mosquitto and a gateway, a few calls to the example functions, then stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway import codec
from gateway.cli.client import NoReply, Reply, RequestClient, describe
from gateway.cli.exits import Exit
from gateway.config import EXAMPLE_FUNCTIONS

DEMO_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("devices/pi-1/add", {"a": 1, "b": 2}),
    ("devices/pi-1/echo", {"value": "hello from pi-1"}),
    ("devices/pi-1/add", {"a": 1, "b": "two"}),
    ("devices/pi-1/fail", {"reason": "sensor unplugged"}),
    ("devices/pi-1/wait", {"seconds": 0.2}),
    ("devices/pi-1/unknown", {}),
]


def demo_command(ns: argparse.Namespace) -> int:
    """Start a private mosquitto and a gateway, call a few functions, stop everything."""
    from gateway.cli.devbroker import LocalBroker

    console = Console()
    # The demo's gateway keeps its durable queue in a scratch directory, removed at the end: the demo leaves nothing.
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="roost-demo-") as scratch:
        console.print(
            f"[bold]broker[/bold] mosquitto on {broker.address} (pid {broker.process and broker.process.pid})"
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1", ROOST_DURABLE__PATH=str(Path(scratch) / "queue.sqlite3"))
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "run",
                "--broker",
                broker.address,
                "--executor",
                ns.executor,
                "--client-id",
                f"roost-demo-{os.getpid()}",
                "--log-level",
                "WARNING",
                *(flag for module in EXAMPLE_FUNCTIONS for flag in ("--functions", module)),
            ],
            env=env,
        )
        try:
            console.print(f"[bold]gateway[/bold] pid {gateway.pid}, executor {ns.executor}")
            return asyncio.run(_demo_calls(broker.address, console))
        finally:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()


async def _demo_calls(address: str, console: Console) -> int:
    host, port = address.split(":")
    async with RequestClient(host, int(port), device_id="pi-1") as client:
        deadline = time.monotonic() + 30
        while True:  # wait for the gateway to subscribe: the first call is answered once it is up
            try:
                await client.request("devices/pi-1/add", {"a": 0, "b": 0}, timeout=1.0)
                break
            except NoReply:
                if time.monotonic() > deadline:
                    console.print("[red]the gateway did not answer within 30 s[/red]")
                    return Exit.ERROR
        for topic, args in DEMO_CALLS:
            reply = await client.request(topic, args, timeout=5.0)
            console.print(f"[cyan]{topic}[/cyan] {args} → {describe(reply)}")
        alerts = await client.listen("alerts/+/temperature")
        for celsius in (21.0, 35.5):
            client.publish_event("devices/pi-1/readings/temperature", {"celsius": celsius})
            console.print(f"[cyan]devices/pi-1/readings/temperature[/cyan] {{'celsius': {celsius}}} → event, no reply")
        alert = await asyncio.wait_for(alerts.get(), 5.0)
        console.print(f"[magenta]{alert.topic}[/magenta] ← {describe(decode_alert(alert.payload))}")
    return Exit.OK


def decode_alert(payload: bytes) -> Reply:
    """An event handler's published value, shown like a result."""
    return Reply(result=codec.decode(payload, max(len(payload), 1)))
