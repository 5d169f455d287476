"""The MicroPython device: one thread, MQTT 3.1.1, driven by :meth:`call` and :meth:`poll`.

Nothing runs in the background. :meth:`call` publishes the request and reads
the connection until its reply arrives; :meth:`poll` reads it for up to a given
time. Both run the handlers of :meth:`subscribe` for messages that arrived, so
a handler may itself call or publish. The network callback only files each
message (a reply into its call's slot, anything else into a short inbox).

A lost connection is not an error the application has to handle: the next
``poll``/``call`` reconnects (with back-off) and subscribes again. A message too
large for the heap raises ``MemoryError`` inside the MQTT client, after which
the stream is out of step; the device drops the connection and reconnects (the
session is clean, so the broker does not send the message again).
"""

import gc

from device_sdk import clock, log, protocol
from device_sdk.codec import decode
from device_sdk.errors import BadReply, CallTimeout, ConnectError, DecodeError, NotConnected

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MIN_BACKOFF_MS = 100
MAX_BACKOFF_MS = 5000
DRAIN = 16  # packets read per step once one arrived, before handlers run


class PolledDevice:
    """A Roost device for MicroPython (and any single-threaded loop), over MQTT 3.1.1.

    ``last_will`` is ``(topic, value)`` or ``(topic, value, retain)``: published by
    the broker when the device vanishes without :meth:`close`. ``transport``
    replaces the umqtt adapter (tests use a fake one).
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        device_id: str,
        client_id: "str | None" = None,
        keepalive: int = 60,
        username: "str | None" = None,
        password: "str | None" = None,
        reply_prefix: str = "roost/replies",
        last_will: "tuple[Any, ...] | None" = None,
        connect_timeout: float = 10,
        max_inbox: int = 8,
        transport: "Any" = None,
    ) -> None:
        self.device_id = protocol.check_device_id(device_id)
        self.reply_topic = reply_prefix + "/" + device_id
        self._reply_topic_b = self.reply_topic.encode()
        if transport is None:
            from device_sdk.transports.umqtt import UmqttTransport

            transport = UmqttTransport(
                host, port, client_id or protocol.client_id(device_id), keepalive, username, password, connect_timeout
            )
        self._transport = transport
        self._will = None
        if last_will is not None:
            retain = len(last_will) > 2 and bool(last_will[2])
            topic = protocol.expand(last_will[0], device_id).encode()
            self._will = (topic, protocol.event_payload(last_will[1]), retain)
        self._keepalive_ms = keepalive * 1000
        self._subs: dict[str, tuple[Any, int]] = {}
        self._inbox: list[tuple[bytes, bytes]] = []
        self._max_inbox = max_inbox
        self._pending = protocol.Pending()
        self._ids = protocol.CorrelationIds()
        self._connected = False
        self._last_send = clock.ticks_ms()
        self._retry_at = self._last_send
        self._backoff = MIN_BACKOFF_MS

    @property
    def connected(self) -> bool:
        """Whether the device believes it has a broker connection."""
        return self._connected

    def connect(self) -> "PolledDevice":
        """Connect and subscribe to the reply topic; raises :class:`ConnectError`."""
        try:
            self._open()
        except MemoryError:
            raise
        except Exception as exc:  # socket errors, MQTTException, refused CONNACK
            self._transport.close(False)
            raise ConnectError("cannot connect to the broker: " + repr(exc)) from None
        return self

    def close(self) -> None:
        """Disconnect cleanly (the broker does not publish the last will)."""
        if self._connected:
            self._connected = False
            self._transport.close(True)

    def __enter__(self) -> "PolledDevice":
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, topic: str, args: "dict[str, Any] | None" = None, timeout: float = 5) -> "Any":
        """Call the function at ``topic`` (``{device_id}`` is replaced) and return its result.

        Raises a :class:`~device_sdk.errors.RemoteError` subclass for an error
        reply, :class:`CallTimeout` when no reply came within ``timeout``
        seconds, :class:`NotConnected` when the request could not be sent.
        """
        cid = self._ids.next()
        payload = protocol.request_payload(args, cid, self.reply_topic)
        slot: list[Any] = [None]
        deadline = clock.ticks_add(clock.ticks_ms(), int(timeout * 1000))
        self._pending.add(cid, slot)
        try:
            self._send(protocol.expand(topic, self.device_id).encode(), payload, 1, False)
            while slot[0] is None:
                left = clock.ticks_diff(deadline, clock.ticks_ms())
                if left <= 0:
                    raise CallTimeout(topic, timeout)
                self._step(left)
        finally:
            self._pending.take(cid)
        return protocol.unwrap(slot[0])

    def publish(self, topic: str, value: "Any" = None, qos: int = 1, retain: bool = False) -> None:
        """Publish ``value`` (msgpack; ``None`` sends an empty payload) as an event; QoS 1 waits for the broker."""
        self._send(protocol.expand(topic, self.device_id).encode(), protocol.event_payload(value), qos, retain)

    def subscribe(self, topic: str, handler: "Any", qos: int = 1) -> None:
        """Run ``handler(topic, value)`` for each message on the filter ``topic`` (in ``poll``/``call``)."""
        mqtt_filter = protocol.expand(topic, self.device_id)
        self._subs[mqtt_filter] = (handler, qos)
        if self._connected:
            try:
                self._transport.subscribe(mqtt_filter.encode(), qos)
            except Exception as exc:  # resubscribed on reconnect
                self._lost("subscribe failed: " + repr(exc))

    def unsubscribe(self, topic: str) -> None:
        """Stop handling the filter ``topic``."""
        mqtt_filter = protocol.expand(topic, self.device_id)
        if self._subs.pop(mqtt_filter, None) is not None and self._connected:
            try:
                self._transport.unsubscribe(mqtt_filter.encode())
            except Exception as exc:
                self._lost("unsubscribe failed: " + repr(exc))

    def poll(self, ms: int = 0) -> int:
        """Read the connection for up to ``ms`` milliseconds and run handlers.

        Returns as soon as handlers ran, with how many messages they handled
        (0 when ``ms`` passed without any). Reconnects when needed.
        """
        deadline = clock.ticks_add(clock.ticks_ms(), ms)
        handled = self._step(ms)
        while not handled:
            left = clock.ticks_diff(deadline, clock.ticks_ms())
            if left <= 0:
                break
            handled = self._step(left)
        return handled

    # -- connection ------------------------------------------------------

    def _open(self) -> None:
        self._transport.open(self._on_message, self._will)
        self._transport.subscribe(self._reply_topic_b, 1)
        for mqtt_filter in self._subs:
            self._transport.subscribe(mqtt_filter.encode(), self._subs[mqtt_filter][1])
        self._connected = True
        self._last_send = clock.ticks_ms()

    def _lost(self, reason: str) -> None:
        log.warning(reason + "; reconnecting")
        self._connected = False
        self._transport.close(False)
        gc.collect()
        self._retry_at = clock.ticks_ms()

    def _reconnect(self) -> bool:
        now = clock.ticks_ms()
        if clock.ticks_diff(self._retry_at, now) > 0:
            return False
        try:
            self._open()
        except Exception as exc:  # MemoryError included: retry after a pause
            self._transport.close(False)
            self._retry_at = clock.ticks_add(now, self._backoff)
            log.warning("reconnect failed (" + repr(exc) + "), next try in " + str(self._backoff) + " ms")
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_MS)
            return False
        self._backoff = MIN_BACKOFF_MS
        log.info("reconnected to the broker")
        return True

    def _send(self, topic: bytes, payload: bytes, qos: int, retain: bool) -> None:
        """Publish; after a failure reconnect at once and try one more time."""
        for _ in range(2):
            if not self._connected and not self._reconnect():
                break
            try:
                self._transport.publish(topic, payload, qos, retain)
            except MemoryError:
                self._lost("out of memory while publishing")
            except Exception as exc:
                self._lost("publish failed: " + repr(exc))
            else:
                self._last_send = clock.ticks_ms()
                return
        raise NotConnected("not connected to the broker")

    # -- reading ---------------------------------------------------------

    def _step(self, wait_ms: int) -> int:
        """Wait up to ``wait_ms`` for traffic, file what arrived, run handlers."""
        if not self._connected and not self._reconnect():
            clock.sleep_ms(max(0, min(wait_ms, clock.ticks_diff(self._retry_at, clock.ticks_ms()))))
            return self._run_handlers()
        if self._keepalive_ms:
            ping_in = self._keepalive_ms // 2 - clock.ticks_diff(clock.ticks_ms(), self._last_send)
            wait_ms = max(0, min(wait_ms, ping_in))
        try:
            if self._transport.wait(wait_ms):
                for _ in range(DRAIN):
                    if not self._transport.wait(0):
                        break
            if self._keepalive_ms and clock.ticks_diff(clock.ticks_ms(), self._last_send) >= self._keepalive_ms // 2:
                self._transport.ping()
                self._last_send = clock.ticks_ms()
        except MemoryError:
            self._lost("a message did not fit in the heap, so the stream is out of step")
        except Exception as exc:
            self._lost("connection lost: " + repr(exc))
        return self._run_handlers()

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        """The MQTT client's callback: file the message, nothing more."""
        if topic == self._reply_topic_b:
            self._on_reply(payload)
        elif len(self._inbox) < self._max_inbox:
            self._inbox.append((topic, payload))
        else:
            log.warning("dropped a message on " + repr(topic) + ": the inbox is full (call poll() more often)")

    def _on_reply(self, payload: bytes) -> None:
        try:
            cid, result = protocol.parse_reply(payload)
        except BadReply as exc:
            log.warning("dropped a reply: " + str(exc))
            return
        slot = self._pending.take(cid)
        if slot is None:
            log.warning(self._pending.why_dropped(cid))
        else:
            slot[0] = result

    def _run_handlers(self) -> int:
        handled = 0
        while self._inbox:
            topic_b, payload = self._inbox.pop(0)
            topic = topic_b.decode()
            try:
                value = decode(payload) if payload else None
            except (DecodeError, MemoryError) as exc:
                log.warning("dropped a message on " + topic + ": " + repr(exc))
                continue
            for mqtt_filter, (handler, _) in list(self._subs.items()):  # a handler may (un)subscribe
                if protocol.matches(mqtt_filter, topic):
                    handled += 1
                    try:
                        handler(topic, value)
                    except Exception as exc:  # a handler's bug must not stop the loop
                        log.warning("handler for " + mqtt_filter + " raised " + repr(exc))
        return handled
