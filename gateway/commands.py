"""The bodies of ``roost functions``, ``roost call`` and ``roost demo``."""

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
from rich.table import Table

from gateway import codec
from gateway.client import NoReply, Reply, RequestClient
from gateway.config import (
    DEFAULT_BROKER,
    DEFAULT_NAMESPACE,
    DEFAULT_REPLY_PREFIX,
    BrokerAddress,
    Settings,
    load_settings,
)
from gateway.errors import ConfigError, RoostError
from gateway.registry import Registry
from gateway.topics import TopicTemplate
from gateway.transport.options import tls_context

EXIT_OK, EXIT_ERROR, EXIT_TIMEOUT = 0, 1, 2


def print_functions(settings: Settings, registry: Registry) -> None:
    """Print topic template → MQTT filter, argument schema and executor of every function."""
    table = Table(title=f"Roost functions ({len(registry.specs)})")
    for column in ("topic template", "MQTT filter", "arguments", "executor", "function"):
        table.add_column(column)
    for spec in registry.specs:
        executor = settings.executor if spec.executor == "default" else spec.executor
        extra = f" → {spec.publish.template}" if spec.publish else ""
        table.add_row(spec.key, spec.template.mqtt_filter, spec.schema_summary(), executor, spec.name + extra)
    Console(width=160).print(table)


def _show(reply: Reply) -> str:
    from rich.pretty import pretty_repr

    if reply.error is not None:
        return f"error {reply.error.code}: {reply.error.message}" + (
            f"\n  details: {pretty_repr(reply.error.details)}" if reply.error.details else ""
        )
    return pretty_repr(reply.result)


def decode_alert(payload: bytes) -> Reply:
    """An event handler's published value, shown like a result."""
    return Reply(result=codec.decode(payload, max(len(payload), 1)))


def _device_of(topic: str, namespace: tuple[str, ...]) -> str | None:
    """The ``{device_id}`` of a topic in the namespace: the device ``roost call`` calls as."""
    for template in namespace:
        params = TopicTemplate.parse(template).match(topic)
        if params is not None and "device_id" in params:
            return params["device_id"]
    return None


def call_command(ns: argparse.Namespace) -> int:
    """``roost call``: 0 on a result, 1 on an error reply, 2 on a timeout."""
    from gateway.cli import EXIT_CONFIG, parse_args_list

    try:
        args = parse_args_list(ns.args)
        settings = load_settings(ns.config) if ns.config is not None else None
        broker = BrokerAddress.parse(ns.broker) if ns.broker else settings.broker if settings else DEFAULT_BROKER
    except (ValueError, ConfigError) as exc:
        print(f"roost call: {exc}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, ConfigError) else 64
    version = ns.mqtt_version or (settings.mqtt_version if settings else "5")
    namespace = settings.namespace if settings else (DEFAULT_NAMESPACE,)
    reply_prefix = settings.reply_prefix if settings else DEFAULT_REPLY_PREFIX
    context = tls_context(settings) if settings is not None and settings.tls.active else None
    password = ns.password if ns.password is not None else os.environ.get("ROOST_CALL_PASSWORD")

    async def run() -> Reply:
        async with RequestClient(
            broker.host,
            broker.port,
            mqtt_version=5 if version == "5" else 4,
            device_id=ns.device or _device_of(ns.topic, namespace),
            reply_prefix=reply_prefix,
            username=ns.username,
            password=password,
            ssl_context=context,
        ) as client:
            return await client.request(ns.topic, args, timeout=ns.timeout, qos=ns.qos, expiry=ns.expiry)

    try:
        reply = asyncio.run(run())
    except NoReply as exc:
        print(f"timeout: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except RoostError as exc:
        print(f"roost call: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(_show(reply))
    return EXIT_ERROR if reply.error is not None else EXIT_OK


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
    from gateway.devbroker import LocalBroker

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
                    return EXIT_ERROR
        for topic, args in DEMO_CALLS:
            reply = await client.request(topic, args, timeout=5.0)
            console.print(f"[cyan]{topic}[/cyan] {args} → {_show(reply)}")
        alerts = await client.listen("alerts/+/temperature")
        for celsius in (21.0, 35.5):
            client.publish_event("devices/pi-1/readings/temperature", {"celsius": celsius})
            console.print(f"[cyan]devices/pi-1/readings/temperature[/cyan] {{'celsius': {celsius}}} → event, no reply")
        alert = await asyncio.wait_for(alerts.get(), 5.0)
        console.print(f"[magenta]{alert.topic}[/magenta] ← {_show(decode_alert(alert.payload))}")
    return EXIT_OK
