"""The null responder: the cheapest correct MQTT 5 responder, the floor every target is compared with.

It subscribes to ``devices/+/add`` and answers each request ``{"a": x, "b": y}``
with ``{"result": x + y}`` on the request's Response Topic, echoing its
Correlation Data, at the request's QoS, like the gateway does. One asyncio
protocol on one socket, no queue, no task per message: replies produced from
one chunk of received bytes leave in one write.

Run as ``python -m benchmarks.null_responder --broker 127.0.0.1:PORT --client-id ID``;
it serves until SIGTERM or SIGINT, or until the broker closes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
from typing import Any, cast

import msgpack

from benchmarks import mqtt_wire
from benchmarks.mqtt_wire import ConnAckPacket, PubAckPacket, PublishPacket, SubAckPacket

REQUEST_FILTER = "devices/+/add"
CONNECT_TIMEOUT = 10.0


def answer(payload: bytes) -> bytes:
    """The msgpack reply to an ``add`` request payload (an error reply when it is not two numbers)."""
    try:
        args: Any = msgpack.unpackb(payload)
        return msgpack.packb({"result": args["a"] + args["b"]})  # type: ignore[no-any-return]
    except Exception as exc:  # any malformed request becomes an error reply, as in the gateway
        return msgpack.packb(  # type: ignore[no-any-return]
            {"error": {"code": "bad_request", "message": f"{type(exc).__name__}: {exc}"}}
        )


class NullResponder(asyncio.Protocol):
    """One MQTT 5 connection answering ``add`` requests."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.answered = 0
        self._reader = mqtt_wire.FrameReader()
        self._transport: asyncio.Transport | None = None
        self._next_id = 0
        self._in_flight: set[int] = set()
        self._receive_max = 65535
        self._backlog: collections.deque[tuple[str, bytes, bytes | None]] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # create_connection makes a stream transport
        self._transport.write(mqtt_wire.connect(self.client_id))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before subscribing: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        out: list[bytes] = []
        for packet in self._reader.feed(data):
            if isinstance(packet, PublishPacket):
                self._on_request(packet, out)
            elif isinstance(packet, PubAckPacket):
                self._in_flight.discard(packet.packet_id)
                while self._backlog and len(self._in_flight) < self._receive_max:
                    self._send_qos1(*self._backlog.popleft(), out)
            elif isinstance(packet, ConnAckPacket):
                if not mqtt_wire.connect_ok(packet):
                    self.ready.set_exception(ConnectionError(f"CONNACK refused: {packet.reason_code!r}"))
                    return
                self._receive_max = packet.receive_max
                out.append(mqtt_wire.subscribe(1, REQUEST_FILTER, qos=1))
            elif isinstance(packet, SubAckPacket) and not self.ready.done():
                if int(packet.reason_codes[0]) >= 0x80:
                    self.ready.set_exception(ConnectionError(f"SUBACK refused: {packet.reason_codes!r}"))
                else:
                    self.ready.set_result(None)
        if out and self._transport is not None:
            self._transport.write(b"".join(out))

    def _on_request(self, packet: PublishPacket, out: list[bytes]) -> None:
        qos = int(packet.qos)
        if qos and packet.packet_id is not None:
            out.append(mqtt_wire.puback(packet.packet_id))
        topic = packet.response_topic
        if not topic:
            return
        reply = answer(packet.payload)
        self.answered += 1
        if qos == 0:
            out.append(mqtt_wire.publish(topic, reply, 0, correlation_data=packet.correlation_data))
        elif len(self._in_flight) < self._receive_max:
            self._send_qos1(topic, reply, packet.correlation_data, out)
        else:  # the broker's Receive Maximum is reached: hold the reply until a PUBACK frees a slot
            self._backlog.append((topic, reply, packet.correlation_data))

    def _send_qos1(self, topic: str, reply: bytes, correlation: bytes | None, out: list[bytes]) -> None:
        packet_id = self._next_id
        for _ in range(65535):  # bounded search for a free packet identifier
            packet_id = packet_id % 65535 + 1
            if packet_id not in self._in_flight:
                break
        self._next_id = packet_id
        self._in_flight.add(packet_id)
        out.append(mqtt_wire.publish(topic, reply, 1, packet_id, correlation_data=correlation))

    def close(self) -> None:
        """Send DISCONNECT and close the socket."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(mqtt_wire.disconnect())
            self._transport.close()


async def serve(host: str, port: int, client_id: str, lifetime: float) -> int:
    """Connect, subscribe, answer until a signal, the end of the connection or ``lifetime`` seconds.

    Returns the number of requests answered. The lifetime only guards against
    an orphan: the runner always stops the responder by its pid.
    """
    loop = asyncio.get_running_loop()
    _, responder = await asyncio.wait_for(
        loop.create_connection(lambda: NullResponder(client_id), host, port), CONNECT_TIMEOUT
    )
    await asyncio.wait_for(responder.ready, CONNECT_TIMEOUT)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, responder.close)
    try:
        await asyncio.wait_for(asyncio.shield(responder.closed), lifetime)
    except TimeoutError:
        responder.close()
    return responder.answered


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.null_responder", description=__doc__)
    parser.add_argument("--broker", required=True, help="HOST:PORT of the broker (127.0.0.1 only)")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds at the latest")
    ns = parser.parse_args(argv)
    host, _, port = ns.broker.rpartition(":")
    try:
        asyncio.run(serve(host, int(port), ns.client_id, ns.lifetime))
    except (OSError, ConnectionError, TimeoutError) as exc:
        print(f"null responder: {exc}", file=sys.stderr)
        return 69
    return 0


if __name__ == "__main__":
    sys.exit(main())
