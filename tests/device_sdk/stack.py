"""A private broker with one gateway on it: what device tests and the heap measurement talk to.

Every broker here is private (its own mosquitto on a free port), so no gateway
of another test module ever answers these devices' requests, and a test may
restart or stop its broker without disturbing anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.cli.devbroker import LocalBroker
from tests.support.gateway_process import GatewayProcess

FUNCTIONS = (
    "--functions",
    "functions.examples",
    "--functions",
    "functions.sensors",
    "--functions",
    "tests.device_sdk.funcs",
    "--functions",
    "examples.raspberry_pi.button_led.functions",
)


@dataclass
class Stack:
    """A private broker with one gateway on it."""

    broker: LocalBroker
    gateway: GatewayProcess

    @property
    def port(self) -> int:
        """The broker's port on 127.0.0.1."""
        return self.broker.port


def start_stack(logs: Path, *extra: str, env: dict[str, str] | None = None) -> Stack:
    """Start a private broker and an ``inline`` gateway serving the test functions."""
    broker = LocalBroker().start()
    try:
        gateway = GatewayProcess(broker.address, logs, "--executor", "inline", *FUNCTIONS, *extra, env=env).start()
    except BaseException:
        broker.cleanup()
        raise
    return Stack(broker, gateway)


def stop_stack(stack: Stack) -> None:
    """Stop the gateway and the broker by their pids."""
    try:
        stack.gateway.kill()
    finally:
        stack.broker.cleanup()
