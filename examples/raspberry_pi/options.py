"""What the demos share: command-line options (broker, device, mock hardware) and their output lines."""

from __future__ import annotations

import argparse
import sys
import threading

from device_sdk import Device
from examples.raspberry_pi import mock_hardware


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--broker``, ``--device-id``, ``--mock`` and ``--interval``."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker HOST:PORT (default %(default)s)")
    result.add_argument("--device-id", default="pi-1", help="this device's id in topics (default %(default)s)")
    result.add_argument("--mock", action="store_true", help="simulate the hardware with gpiozero's mock pins")
    result.add_argument("--interval", type=float, default=1.0, help="seconds between steps (default %(default)s)")
    return result


def device(args: argparse.Namespace) -> Device:
    """The SDK device for ``--broker`` and ``--device-id``; installs mock pins first when ``--mock``."""
    if args.mock:
        mock_hardware.use_mock_pins()
    host, _, port = args.broker.rpartition(":")
    return Device(host or "127.0.0.1", int(port or 1883), device_id=args.device_id)


_output = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: replies and alerts arrive on the SDK's thread, and ``print`` from two
    threads can interleave its text with the other's newline."""
    with _output:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
