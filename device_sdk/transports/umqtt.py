"""MQTT 3.1.1 over the vendored ``umqtt.simple``: the only module that imports it. MicroPython only.

Topics go to umqtt as bytes (its length prefix counts characters, so a non-ASCII
``str`` would be framed wrongly). umqtt turns its socket to blocking without a
timeout after the first byte of every packet; :class:`_BoundedSocket` keeps
those reads bounded, so a broker that stalls mid-packet raises ``OSError``
(and the device reconnects) instead of hanging the device.
"""

import select

from device_sdk.vendor.umqtt.simple import MQTTClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class _BoundedSocket:
    """The socket umqtt sees: ``setblocking(True)`` means "block for at most ``timeout`` seconds"."""

    def __init__(self, sock: "Any", timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout

    def read(self, size: int) -> "Any":
        return self._sock.read(size)

    def write(self, *args: "Any") -> "Any":
        return self._sock.write(*args)

    def setblocking(self, flag: bool) -> None:
        self._sock.settimeout(self._timeout if flag else 0)

    def settimeout(self, value: "float | None") -> None:
        self._sock.settimeout(value)

    def close(self) -> None:
        self._sock.close()


class UmqttTransport:
    """What :class:`~device_sdk.polled.PolledDevice` needs from an MQTT client, on umqtt."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        keepalive: int,
        username: "str | None",
        password: "str | None",
        timeout: float,
    ) -> None:
        self._client = MQTTClient(client_id, host, port, username, password, keepalive)
        self._timeout = timeout
        self._poller: Any = None

    def open(self, on_message: "Callable[[bytes, bytes], None]", will: "tuple[bytes, bytes, bool] | None") -> None:
        """Connect with a clean session; ``on_message(topic_bytes, payload)`` gets every PUBLISH."""
        client = self._client
        client.set_callback(on_message)
        if will is not None:
            client.set_last_will(will[0], will[1], will[2], 1)
        client.connect(True, self._timeout)
        raw = client.sock
        # umqtt writes each packet in pieces: without TCP_NODELAY each may wait ~40 ms.
        try:  # noqa: SIM105 - MicroPython has no contextlib
            raw.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (the same numbers on Linux and lwIP)
        except (OSError, AttributeError):  # a TLS socket, or a port without the option
            pass
        client.sock = _BoundedSocket(raw, self._timeout)
        self._poller = select.poll()
        self._poller.register(raw, select.POLLIN)

    def wait(self, ms: int) -> bool:
        """Handle one packet if one arrives within ``ms`` milliseconds; whether one did."""
        if not self._poller.poll(ms):
            return False
        self._client.check_msg()
        return True

    def publish(self, topic: bytes, payload: bytes, qos: int, retain: bool) -> None:
        """Publish; at QoS 1 this reads until the PUBACK (messages on the way are handed on)."""
        self._client.publish(topic, payload, retain, qos)

    def subscribe(self, topic: bytes, qos: int) -> None:
        """Subscribe and wait for the SUBACK."""
        self._client.subscribe(topic, qos)

    def unsubscribe(self, topic: bytes) -> None:
        """Unsubscribe and wait for the UNSUBACK."""
        self._client.unsubscribe(topic)

    def ping(self) -> None:
        """Send PINGREQ (the PINGRESP is read like any packet)."""
        self._client.ping()

    def close(self, disconnect: bool) -> None:
        """Close the socket, after a DISCONNECT packet when ``disconnect`` (then no last will)."""
        client = self._client
        self._poller = None
        if client.sock is None:
            return
        try:
            if disconnect:
                client.disconnect()
            else:
                client.sock.close()
        except OSError:  # already gone: nothing left to release
            pass
        client.sock = None
