"""The ``roost`` command: run, functions, call, check, status, demo.

Exit codes a supervisor can act on: 0 done, 1 error reply (``call``) or crash,
2 timeout (``call``) or usage error, 69 broker unreachable, 78 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from gateway.cli.exits import Exit
from gateway.config import AUTO_SHARE_GROUP, BrokerAddress, Settings, load_settings
from gateway.errors import ConfigError, RegistryError, TransportError
from gateway.ops.logs import LogFormat

log = logging.getLogger("roost")


NO_FUNCTIONS = (
    "no functions to serve: list your function modules in the settings (functions = [\"myproject.functions\"]),"
    " ROOST_FUNCTIONS or --functions; to try the examples: --functions functions.examples"
)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--broker", help="broker address HOST:PORT")
    parser.add_argument("--client-id", dest="client_id")
    parser.add_argument("--mqtt-version", dest="mqtt_version", choices=["5", "3.1.1"])
    parser.add_argument("--executor", choices=["local", "inline", "mesos"])
    parser.add_argument("--mesos-master", dest="mesos_master", help="Mesos master HOST:PORT (executor mesos)")
    parser.add_argument("--workers", type=int, help="warm worker processes of the local executor")
    parser.add_argument("--transport", choices=["fast", "paho"], help="MQTT client (default: fast for MQTT 5)")
    parser.add_argument(
        "--functions", action="append", help="function module to serve (repeatable; replaces the settings' list)"
    )
    parser.add_argument("--log-level", dest="log_level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", dest="log_format", choices=["text", "json"], help="one line per event")
    parser.add_argument("--share-group", dest="share_group", help="share requests with other gateways of this group")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``roost`` command."""
    parser = argparse.ArgumentParser(prog="roost", description="Roost: run Python functions for MQTT devices.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the registered functions")
    _settings_flags(run)
    run.add_argument("--reload", action="store_true", help="reload function modules when their files change")
    status = commands.add_parser("status", help="ask a running gateway whether it is alive and ready")
    status.add_argument("--config", type=Path, help="TOML settings file (for the metrics address)")
    status.add_argument("--url", help="the gateway's endpoint, e.g. http://127.0.0.1:9108 (default: from settings)")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for each answer")
    functions = commands.add_parser("functions", help="print the table of registered functions")
    _settings_flags(functions)
    check = commands.add_parser("check", help="validate the settings and functions, then exit")
    _settings_flags(check)
    acl = commands.add_parser("acl", help="print the broker configuration that keeps each device in its own topics")
    _settings_flags(acl)
    acl.add_argument("--gateway-user", dest="gateway_user", default="roost", help="the gateway's broker username")
    acl.add_argument(
        "--format",
        dest="acl_format",
        choices=["acl-file", "dynsec"],
        default="acl-file",
        help="a mosquitto acl_file, or the dynamic-security plugin's file (which also governs subscriptions)",
    )
    acl.add_argument(
        "--devices-from", dest="devices_from", type=Path, help="dynsec: device names, one a line, or the password file"
    )
    acl.add_argument("--device", dest="devices", action="append", default=[], help="dynsec: a device (repeatable)")
    call = commands.add_parser("call", help="call a function over MQTT and print the reply")
    call.add_argument("--config", type=Path, help="settings for broker, TLS, MQTT version, namespace, reply prefix")
    call.add_argument("--broker", help="broker address HOST:PORT (default: from --config, else 127.0.0.1:1883)")
    call.add_argument("--username", help="the device's broker login (its device id, with roost acl's ACL)")
    call.add_argument("--password", help="its password (or ROOST_CALL_PASSWORD; the gateway's own is not used)")
    call.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply")
    call.add_argument("--qos", type=int, choices=[0, 1, 2], default=1)
    call.add_argument("--mqtt-version", dest="mqtt_version", choices=["5", "3.1.1"], help="default: 5")
    call.add_argument("--expiry", type=int, help="MQTT 5 message expiry interval in seconds")
    call.add_argument(
        "--device",
        help="device id to call as; replies come inside its reply space (default: the {device_id} of the topic)",
    )
    call.add_argument("topic")
    call.add_argument("args", nargs="*", metavar="NAME=VALUE", help="arguments; values are JSON literals or strings")
    demo = commands.add_parser("demo", help="start a private broker and the gateway, call a few functions")
    demo.add_argument("--executor", choices=["local", "inline"], default="local")
    return parser


def _flags(ns: argparse.Namespace) -> dict[str, Any]:
    keys: tuple[str, ...] = ("broker", "client_id", "mqtt_version", "executor", "workers", "transport", "functions")
    keys += ("log_level", "log_format", "share_group")
    flags = {key: getattr(ns, key, None) for key in keys}
    if getattr(ns, "mesos_master", None):  # merged into the [mesos] table of the file and the environment
        flags["mesos"] = {"master": ns.mesos_master}
    return flags


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    """One line per event on stderr, as text or JSON (:mod:`gateway.ops.logs`)."""
    from gateway.ops.logs import setup_logging as setup

    setup(level, fmt)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``roost``."""
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "call":
            from gateway.cli.call import call_command

            return call_command(ns)
        if ns.command == "demo":
            from gateway.cli.demo import demo_command

            return demo_command(ns)
        settings = load_settings(ns.config, **_flags(ns))
        if ns.command in ("run", "check") and settings.share_group == AUTO_SHARE_GROUP:
            raise ConfigError(
                "invalid setting 'share_group': \"auto\" names the group after the gateway's password: set password"
                " (ROOST_PASSWORD), or choose a random name"
            )
        if ns.command in ("run", "check", "functions", "acl") and not settings.functions:
            raise ConfigError(NO_FUNCTIONS)
        if ns.command == "status":
            from gateway.cli.status import status_command

            return status_command(settings, ns.url, ns.timeout)
        setup_logging(settings.log_level, settings.log_format)
        from gateway.registry import Registry

        registry = Registry.from_modules(settings.functions)
        if ns.command == "functions":
            from gateway.cli.functions import print_functions

            print_functions(settings, registry)
            return Exit.OK
        if ns.command == "check":
            print(f"ok: {len(registry.specs)} functions, broker {settings.broker}")
            return Exit.OK
        if ns.command == "acl":
            from gateway.cli.acl import render

            print(render(settings, registry, ns.gateway_user, ns.acl_format, ns.devices, ns.devices_from), end="")
            return Exit.OK
        return _run(settings, registry, ns.reload)
    except (ConfigError, RegistryError) as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return Exit.CONFIG
    except TransportError as exc:  # BrokerUnreachable, SubscriptionRefused
        print(f"roost: {exc}", file=sys.stderr)
        return Exit.UNAVAILABLE


def _run(settings: Settings, registry: Any, reload: bool = False) -> int:
    from gateway.app import GatewayFailed, serve

    if settings.executor == "mesos":
        # pymesos installs its SIGINT handler at import: main thread, before the event loop (MESOS_API.md quirk 1).
        import gateway.executors.mesos.cluster  # noqa: F401
    try:
        asyncio.run(serve(settings, registry, reload))
    except (ConfigError, RegistryError, TransportError):
        raise
    except GatewayFailed as exc:  # e.g. the Mesos driver died: say why, exit non-zero
        log.critical("exiting: %s", exc)
        return Exit.ERROR
    except Exception:
        # A crash: one log line (JSON too) for the journal, and exit code 1 for the supervisor.
        log.exception("the gateway crashed")
        return Exit.ERROR
    return Exit.OK


__all__ = ["BrokerAddress", "main"]
