"""MQTT transports behind one interface (:mod:`gateway.transport.base`)."""

from __future__ import annotations

from gateway.transport.base import InboundMessage, OutboundMessage, Transport
from gateway.transport.options import ConnectOptions

__all__ = ["ConnectOptions", "InboundMessage", "OutboundMessage", "Transport", "create_transport"]


def create_transport(kind: str, options: ConnectOptions) -> Transport:
    """The transport named ``kind`` ("fast", "paho", or "memory" for unit tests).

    Imported lazily so only the chosen library loads.
    """
    if kind == "memory":
        from gateway.transport.memory import MemoryTransport

        return MemoryTransport(options.mqtt_version)
    if kind == "fast":
        from gateway.transport.native.transport import NativeTransport

        return NativeTransport(options)
    if kind == "paho":
        from gateway.transport.paho import PahoTransport

        return PahoTransport(options)
    raise ValueError(f"unknown transport {kind!r}")
