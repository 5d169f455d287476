"""The load generator's fleet: many simulated devices on plain asyncio sockets, and the ledger of their requests.

Each :class:`Device` is one MQTT 5 connection with its own client id, request
topic ``devices/{device_id}/add`` and reply topic. :class:`Fleet` numbers every
request with a unique 8-byte Correlation Data, remembers when it was sent and
what the answer must be, and matches each reply against it. How requests are
paced (closed loop, fixed rate, window) is :mod:`benchmarks.scenarios`' job: it
sets :attr:`Fleet.on_answer` and calls :meth:`Fleet.send`.

Cheapness matters more than elegance here: the generator shares two cores with
the broker and the target, so there is no task or future per request, replies
are timed once per received chunk, and everything a callback wants to send
leaves in one write per connection (:meth:`Fleet.flush`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import msgpack

from benchmarks import mqtt_wire
from benchmarks.mqtt_wire import ConnAckPacket, PubAckPacket, PublishPacket, SubAckPacket

# Operands stay below 100 so every request payload is 7 bytes of msgpack (a fixmap of two fixints),
# which lets a device splice requests from one template; answers are looked up, not encoded.
OPERANDS = 100
PAYLOAD_SIZE = 7
ANSWERS = [msgpack.packb({"result": value}) for value in range(2 * OPERANDS)]


@dataclass(slots=True)
class Tally:
    """What happened to the requests of one measurement."""

    latencies_ns: list[int] = field(default_factory=list)
    sent: int = 0
    answered: int = 0
    errors: int = 0  # error replies, wrong results, failed PUBACKs
    stray: int = 0  # replies to requests of an earlier measurement or probe
    first_send_ns: int = 0
    last_reply_ns: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        """Count an error and keep the first few descriptions."""
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


class Device(asyncio.Protocol):
    """One simulated device: an MQTT 5 connection that publishes requests and receives replies."""

    def __init__(self, fleet: Fleet, index: int, run_id: str) -> None:
        self.fleet = fleet
        self.index = index
        self.device_id = f"dev{index:03d}"
        self.client_id = f"bench-{run_id}-{self.device_id}"
        self.request_topic = f"devices/{self.device_id}/add"
        self.reply_topic = f"roost/replies/{self.device_id}/bench-{run_id}"  # inside the reply space
        self.b = index % OPERANDS
        self.payloads = [msgpack.packb({"a": a, "b": self.b}) for a in range(OPERANDS)]
        self.templates = [
            mqtt_wire.RequestTemplate(self.request_topic, self.reply_topic, qos, PAYLOAD_SIZE) for qos in (0, 1)
        ]
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.receive_max = 65535
        self.out: list[bytes] = []
        self._reader = mqtt_wire.FrameReader()
        self._transport: asyncio.Transport | None = None
        self._next_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # create_connection makes a stream transport
        self._transport.write(mqtt_wire.connect(self.client_id))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.client_id}: connection lost: {exc}"))
        self._transport = None
        self.fleet.lost_connections += 1

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        fleet = self.fleet
        for packet in self._reader.feed(data):
            if isinstance(packet, PublishPacket):
                if packet.packet_id is not None and int(packet.qos):
                    self.queue(mqtt_wire.puback(packet.packet_id))
                fleet.on_reply(self, packet, now)
            elif isinstance(packet, PubAckPacket):
                if mqtt_wire.ack_failed(packet):
                    fleet.tally.error(f"PUBACK {packet.reason_code!r} on {self.request_topic}")
            elif isinstance(packet, ConnAckPacket):
                self._on_connack(packet)
            elif isinstance(packet, SubAckPacket) and not self.ready.done():
                if int(packet.reason_codes[0]) >= 0x80:
                    self.ready.set_exception(ConnectionError(f"SUBACK refused: {packet.reason_codes!r}"))
                else:
                    self.ready.set_result(None)
        if fleet.dirty:
            fleet.flush()

    def _on_connack(self, packet: ConnAckPacket) -> None:
        if not mqtt_wire.connect_ok(packet):
            self.ready.set_exception(ConnectionError(f"{self.client_id}: CONNACK {packet.reason_code!r}"))
            return
        self.receive_max = packet.receive_max
        self.queue(mqtt_wire.subscribe(1, self.reply_topic, qos=1))
        self.fleet.flush()

    def queue(self, data: bytes) -> None:
        """Queue bytes for the next :meth:`Fleet.flush`."""
        if not self.out:
            self.fleet.dirty.append(self)
        self.out.append(data)

    def next_packet_id(self) -> int:
        """The next QoS 1 packet identifier (windows stay far below 65535, so no reuse in flight)."""
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def write_out(self) -> None:
        """Write the queued bytes in one call."""
        if self._transport is not None and self.out:
            self._transport.write(b"".join(self.out))
        self.out.clear()

    def close(self) -> None:
        """Send DISCONNECT and close."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(mqtt_wire.disconnect())
            self._transport.close()


class Fleet:
    """The simulated devices and the ledger of requests in flight."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.devices: list[Device] = []
        self.dirty: list[Device] = []
        self.pending: dict[bytes, tuple[int, bytes, Device]] = {}
        self.tally = Tally()
        self.on_answer: Callable[[Device], None] | None = None
        self.lost_connections = 0
        self._seq = 0

    async def connect(self, host: str, port: int, count: int, timeout: float) -> None:
        """Open ``count`` device connections and wait until each has subscribed to its reply topic."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            for index in range(count):
                _, device = await loop.create_connection(
                    functools.partial(Device, self, index, self.run_id), host, port
                )
                self.devices.append(device)
            await asyncio.gather(*(device.ready for device in self.devices))

    def reset(self) -> Tally:
        """Start a new measurement: forget requests in flight and return the previous tally."""
        previous = self.tally
        self.tally = Tally()
        self.pending.clear()
        return previous

    def send(self, device: Device, qos: int) -> None:
        """Queue one ``add`` request from ``device`` (call :meth:`flush` to write it)."""
        self._seq += 1
        seq = self._seq
        a = seq % OPERANDS
        correlation = seq.to_bytes(mqtt_wire.CORRELATION_BYTES, "big")
        payload = device.payloads[a]
        packet_id = device.next_packet_id() if qos else 0
        device.queue(device.templates[qos].build(packet_id, correlation, payload))
        expected = ANSWERS[a + device.b]
        now = time.perf_counter_ns()
        self.pending[correlation] = (now, expected, device)
        tally = self.tally
        if not tally.sent:
            tally.first_send_ns = now
        tally.sent += 1

    def flush(self) -> None:
        """Write what every device has queued."""
        for device in self.dirty:
            device.write_out()
        self.dirty.clear()

    def on_reply(self, device: Device, packet: PublishPacket, now: int) -> None:
        """Match a reply with its request, time it and check the result."""
        correlation = packet.correlation_data
        entry = self.pending.pop(correlation, None) if correlation is not None else None
        tally = self.tally
        if entry is None:
            tally.stray += 1
            return
        sent_ns, expected, sender = entry
        tally.latencies_ns.append(now - sent_ns)
        tally.answered += 1
        tally.last_reply_ns = now
        if packet.payload != expected and msgpack.unpackb(packet.payload) != msgpack.unpackb(expected):
            tally.error(f"reply {msgpack.unpackb(packet.payload)!r} != {msgpack.unpackb(expected)!r}")
        if sender is not device:
            tally.error(f"reply for {sender.device_id} arrived at {device.device_id}")
        if self.on_answer is not None:
            self.on_answer(sender)

    @property
    def outstanding(self) -> int:
        """Requests of the current measurement still waiting for a reply."""
        return len(self.pending)

    def close(self) -> None:
        """Disconnect every device."""
        for device in self.devices:
            device.close()
