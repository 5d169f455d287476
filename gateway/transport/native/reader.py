"""Split a byte stream from the broker into MQTT 5 packets, decoded by the ``mqtt5`` codec.

TCP delivers arbitrary slices of the stream; :class:`PacketReader` keeps the
incomplete tail between calls and decodes every complete packet of a chunk in
one :meth:`PacketReader.feed`. Whatever the codec rejects becomes
:class:`MalformedPacket`, the one error the connection answers with a reset; so
does a packet growing past ``max_packet_size`` (the Maximum Packet Size the
gateway announced in CONNECT, which a broker must respect): it is not buffered.
"""

from __future__ import annotations

import mqtt5

from gateway.errors import TransportError


class MalformedPacket(TransportError):
    """The broker sent bytes that are not a valid MQTT 5 packet; the connection must be reset."""


def is_codec_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic surfaced by pyo3 (a ``BaseException``, not an ``Exception``).

    mqtt5 0.8 panics instead of raising on some inputs (a topic that is not
    UTF-8, a payload over 256 MiB); those are bad packets, not reasons to stop.
    """
    return type(exc).__module__ == "pyo3_runtime"


class PacketReader:
    """Incremental decoder: bytes in, complete packets out, in stream order."""

    __slots__ = ("_limit", "_pending")

    def __init__(self, max_packet_size: int | None = None) -> None:
        self._pending = bytearray()
        self._limit = max_packet_size

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet held for the next :meth:`feed`."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[mqtt5.Packet]:
        """Decode every complete packet in the pending bytes plus ``data``; raise :class:`MalformedPacket`."""
        pending = self._pending
        buffer: bytes | bytearray
        if pending:
            pending += data
            buffer = pending
        else:
            buffer = data  # the common case: no copy of the chunk at all
        packets: list[mqtt5.Packet] = []
        end = len(buffer)
        offset = 0
        read = mqtt5.read
        with memoryview(buffer) as view:
            try:
                while offset < end:
                    packet, size = read(view[offset:])
                    packets.append(packet)
                    offset += size
            except IndexError:
                pass  # the codec's "not enough bytes": the rest of the packet is still on the wire
            except (ValueError, TypeError, OverflowError) as exc:
                raise MalformedPacket(f"malformed packet at byte {offset} of the chunk: {exc}") from None
            except BaseException as exc:
                if not is_codec_panic(exc):
                    raise
                raise MalformedPacket(f"malformed packet at byte {offset} of the chunk (codec panic: {exc})") from None
        if buffer is pending:
            del pending[:offset]  # the view is released, so the bytearray may shrink
        elif offset < end:
            pending += data[offset:]
        if self._limit is not None and len(pending) > self._limit:
            size = len(pending)
            pending.clear()
            raise MalformedPacket(f"a packet of more than {size} bytes, over our Maximum Packet Size of {self._limit}")
        return packets

    def reset(self) -> None:
        """Forget a partial packet (a new connection starts a new stream)."""
        self._pending.clear()
