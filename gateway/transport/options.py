"""Connection options shared by every transport, built from the settings once."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from gateway.config import Settings


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """What a transport needs to connect; independent of the MQTT library."""

    host: str
    port: int
    client_id: str
    mqtt_version: int = 5
    keepalive: int = 30
    clean_start: bool = False
    session_expiry: int = 3600
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None
    max_inflight: int = 1000
    receive_maximum: int = 1000
    max_reconnect_delay: int = 30
    will_topic: str | None = None
    will_payload: bytes = b""
    #: The Maximum Packet Size announced in CONNECT (MQTT 5): the broker sends nothing larger. None: no limit.
    max_packet_size: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectOptions:
        """The gateway's connection: persistent session, TLS and credentials from the settings."""
        return cls(
            host=settings.broker.host,
            port=settings.broker.port,
            client_id=settings.client_id,
            mqtt_version=5 if settings.mqtt_version == "5" else 4,
            keepalive=settings.keepalive,
            clean_start=False,
            session_expiry=settings.session_expiry,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            ssl_context=tls_context(settings) if settings.tls.active else None,
            max_inflight=settings.max_inflight,
            receive_maximum=settings.limits.max_queue,
            max_packet_size=inbound_packet_limit(settings),
        )


PACKET_ROOM = 4 * 1024  # the fixed header, packet id and the small properties of a PUBLISH


def inbound_packet_limit(settings: Settings) -> int:
    """The largest PUBLISH the gateway takes: a payload at ``max_payload_bytes``, a topic at ``max_topic_bytes``
    (UTF-8: up to 4 bytes a character), a Response Topic at MQTT's 65,535 bytes, Correlation Data at
    ``max_correlation_bytes``, and :data:`PACKET_ROOM` (329 KiB with the defaults). A larger request is
    never sent to the gateway (MQTT 5), so it is never stored."""
    limits = settings.limits
    return limits.max_payload_bytes + 4 * limits.max_topic_bytes + 65_535 + limits.max_correlation_bytes + PACKET_ROOM


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: server verification on, optional client certificate."""
    tls = settings.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure:
        context.check_hostname = False
    return context
