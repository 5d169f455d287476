"""Subscriptions of the fast transport: SUBSCRIBE, SUBACK reason codes, renewal after a lost session.

Filters are remembered once the broker grants them. A reconnect that resumes
the session keeps them at the broker; one that does not renews them all in one
SUBSCRIBE (a refusal then can only be logged). A :meth:`Subscriptions.subscribe`
interrupted by a dropped connection is sent again on the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import mqtt5
from mqtt5 import QoS, RetainHandling, SubAckPacket, SubAckReasonCode, TopicFilter

from gateway.errors import BrokerUnreachable, SubscriptionRefused
from gateway.transport.native.outbound import OutboundSession

log = logging.getLogger(__name__)

_QOS = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
_NO_RETAINED = RetainHandling.SEND_NEVER
SUBACK_TIMEOUT = 10.0

_Filters = list[tuple[str, int]]
_Waiter = asyncio.Future[list[SubAckReasonCode]]


class Subscriptions:
    """The granted filters and the SUBSCRIBEs waiting for their SUBACK."""

    def __init__(self, ids: OutboundSession) -> None:
        self._ids = ids  # packet ids are shared with outbound publishes
        self._send: Callable[[bytes], None] | None = None
        self._up = asyncio.Event()
        self.granted: dict[str, int] = {}
        self._waiting: dict[int, tuple[_Filters, _Waiter | None]] = {}

    def connected(self, session_present: bool, send: Callable[[bytes], None]) -> None:
        """Write through ``send``; renew every granted filter if the broker lost the session."""
        self._send = send
        if not session_present and self.granted:
            self._subscribe(list(self.granted.items()), None)
        self._up.set()

    def disconnected(self) -> None:
        """Fail the SUBSCRIBEs in flight so that :meth:`subscribe` sends them again."""
        self._send = None
        self._up.clear()
        for packet_id, (_, waiter) in self._waiting.items():
            self._ids.release_id(packet_id)
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost before SUBACK"))
        self._waiting.clear()

    def _subscribe(self, filters: _Filters, waiter: _Waiter | None) -> None:
        send = self._send
        if send is None:
            raise ConnectionResetError("not connected")
        # Retained messages are not sent on subscribing, and a live one keeps its retain flag: the gateway
        # refuses retained requests (run again at every start, they would be poison that outlives a restart).
        wanted = [
            TopicFilter(f, max_qos=_QOS[qos], retain_as_published=True, retain_handling=_NO_RETAINED)
            for f, qos in filters
        ]
        packet_id = self._ids.reserve_id()
        try:
            data = mqtt5.SubscribePacket(packet_id, wanted).write()
        except BaseException:
            self._ids.release_id(packet_id)
            raise
        self._waiting[packet_id] = (filters, waiter)
        send(data)

    def on_suback(self, packet: SubAckPacket) -> None:
        """Resolve the waiting :meth:`subscribe`, or log refusals of a renewal."""
        self._ids.release_id(packet.packet_id)
        entry = self._waiting.pop(packet.packet_id, None)
        if entry is None:
            log.debug("SUBACK for unknown packet id %d", packet.packet_id)
            return
        filters, waiter = entry
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(list(packet.reason_codes))
            return
        for (topic_filter, _), code in zip(filters, packet.reason_codes, strict=False):
            if code.value >= 0x80:
                log.error(
                    "the broker refused to renew the subscription to %r: %s (%#04x)",
                    topic_filter,
                    code.name,
                    code.value,
                )

    async def subscribe(self, filters: Sequence[str], qos: int, where: str) -> None:
        """Subscribe in one SUBSCRIBE and check every reason code; raise :class:`SubscriptionRefused`."""
        wanted = [(f, qos) for f in filters]
        if not wanted:
            return
        for f in filters:
            if not f or "\x00" in f:  # mosquitto answers these with DISCONNECT, which would repeat forever
                raise SubscriptionRefused(f"invalid topic filter {f!r}")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(SUBACK_TIMEOUT):
                while True:
                    await self._up.wait()
                    waiter: _Waiter = loop.create_future()
                    try:
                        self._subscribe(wanted, waiter)
                        codes = await waiter
                        break
                    except ConnectionResetError:
                        continue  # the connection dropped: send it again on the next one
                    except ValueError as exc:
                        raise SubscriptionRefused(f"cannot subscribe to {list(filters)!r}: {exc}") from None
        except TimeoutError:
            raise BrokerUnreachable(f"no SUBACK from the broker at {where} within {SUBACK_TIMEOUT:g} s") from None
        refused = [(f, code) for (f, _), code in zip(wanted, codes, strict=False) if code.value >= 0x80]
        for f, granted in zip(filters, codes, strict=False):
            if granted.value < 0x80:
                self.granted[f] = qos
        if refused:
            topic_filter, code = refused[0]
            raise SubscriptionRefused(
                f"the broker refused the subscription to {topic_filter!r}: {code.name} (reason code {code.value:#04x})"
            )
