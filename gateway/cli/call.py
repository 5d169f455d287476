"""``roost call``: call a function over MQTT as a device would, and print the reply."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from gateway.cli.client import NoReply, Reply, RequestClient, describe
from gateway.cli.exits import Exit
from gateway.config import DEFAULT_BROKER, DEFAULT_NAMESPACE, DEFAULT_REPLY_PREFIX, BrokerAddress, load_settings
from gateway.errors import ConfigError, RoostError
from gateway.topics import TopicTemplate
from gateway.transport.options import tls_context


def parse_value(text: str) -> Any:
    """A JSON literal when it parses as one, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_args_list(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` to ``{"a": 1, "b": "x"}``; raises ``ValueError`` naming a bad item."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"argument {item!r} is not NAME=VALUE")
        out[name] = parse_value(value)
    return out


def _device_of(topic: str, namespace: tuple[str, ...]) -> str | None:
    """The ``{device_id}`` of a topic in the namespace: the device ``roost call`` calls as."""
    for template in namespace:
        params = TopicTemplate.parse(template).match(topic)
        if params is not None and "device_id" in params:
            return params["device_id"]
    return None


def call_command(ns: argparse.Namespace) -> int:
    """``roost call``: 0 on a result, 1 on an error reply, 2 on a timeout, 64 or 78 on a bad argument."""

    try:
        args = parse_args_list(ns.args)
        settings = load_settings(ns.config) if ns.config is not None else None
        broker = BrokerAddress.parse(ns.broker) if ns.broker else settings.broker if settings else DEFAULT_BROKER
    except (ValueError, ConfigError) as exc:
        print(f"roost call: {exc}", file=sys.stderr)
        return Exit.CONFIG if isinstance(exc, ConfigError) else Exit.USAGE
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
        return Exit.TIMEOUT
    except RoostError as exc:
        print(f"roost call: {exc}", file=sys.stderr)
        return Exit.ERROR
    print(describe(reply))
    return Exit.ERROR if reply.error is not None else Exit.OK
