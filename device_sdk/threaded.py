"""The CPython device (a Raspberry Pi, a laptop): paho, MQTT 5, background threads, futures.

Three threads besides the caller's: paho's network thread (keeps the
connection, reconnects, files each message), one handler thread (runs the
handlers of :meth:`ThreadedDevice.subscribe` in arrival order, so a slow handler
never delays replies), and one timer thread (fails calls whose reply did not
come in time). Replies resolve their call's future directly on the network
thread, so ``add_done_callback`` callbacks run there and must be quick.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, Literal

from device_sdk import codec, protocol
from device_sdk.deadlines import Deadlines
from device_sdk.errors import BadReply, CallTimeout, DecodeError, NotConnected
from device_sdk.transports.paho import PahoTransport, Received, Will

log = logging.getLogger("device_sdk")

Handler = Callable[[str, Any], None]


class ThreadedDevice:
    """A Roost device for CPython: several calls in flight, handlers in the background, reconnects.

    ``last_will`` is ``(topic, value)`` or ``(topic, value, retain)``, published by
    the broker when the device vanishes without :meth:`close`.
    ``mqtt_version="3.1.1"`` uses the ``$cid`` convention instead of MQTT 5
    properties, for brokers without MQTT 5.
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        device_id: str,
        client_id: str | None = None,
        keepalive: int = 60,
        username: str | None = None,
        password: str | None = None,
        reply_prefix: str = "roost/replies",
        last_will: tuple[Any, ...] | None = None,
        connect_timeout: float = 10.0,
        mqtt_version: Literal["5", "3.1.1"] = "5",
        session_expiry: int = 60,
        reconnect_delay: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.device_id = protocol.check_device_id(device_id)
        self.reply_topic = f"{reply_prefix}/{device_id}"
        if mqtt_version not in ("5", "3.1.1"):
            raise ValueError(f"mqtt_version must be '5' or '3.1.1', got {mqtt_version!r}")
        self._mqtt5 = mqtt_version == "5"
        self._will = None
        if last_will is not None:
            retain = len(last_will) > 2 and bool(last_will[2])
            self._will = Will(self.expand(last_will[0]), protocol.event_payload(last_will[1]), retain)
        self._connect_timeout = connect_timeout
        self._transport = PahoTransport(
            host,
            port,
            client_id or protocol.client_id(device_id),
            mqtt5=self._mqtt5,
            keepalive=keepalive,
            username=username,
            password=password,
            session_expiry=session_expiry,
            reconnect_delay=reconnect_delay,
        )
        self._lock = threading.Lock()  # guards _pending and _subs
        self._pending = protocol.Pending()
        self._ids = protocol.CorrelationIds()
        self._subs: dict[str, tuple[Handler, int]] = {}
        self._inbox: queue.SimpleQueue[Received | None] = queue.SimpleQueue()
        self._handled = threading.Condition()
        self._handled_count = 0
        self._deadlines = Deadlines(self._expire)
        self._handler_thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        """Connected and subscribed (``False`` while paho reconnects)."""
        return self._transport.connected

    def expand(self, topic: str) -> str:
        """``topic`` with ``{device_id}`` replaced."""
        return protocol.expand(topic, self.device_id)

    # -- life cycle -------------------------------------------------------

    def connect(self) -> ThreadedDevice:
        """Connect, subscribe to the reply topic, start the background threads; raises :class:`ConnectError`."""
        self._deadlines.start()
        self._handler_thread = threading.Thread(target=self._run_handlers, name="roost-device-handlers", daemon=True)
        self._handler_thread.start()
        try:
            self._transport.start(self._on_message, self._filters, self._will, self._connect_timeout)
        except BaseException:
            self._stop_threads()
            raise
        return self

    def close(self) -> None:
        """Disconnect (no last will), stop the threads, fail calls still waiting with :class:`NotConnected`."""
        self._transport.stop()
        self._stop_threads()
        with self._lock:
            waiting = self._pending.clear()
        for future, _, _ in waiting:
            _resolve(future, (False, NotConnected("the device was closed")))

    def _stop_threads(self) -> None:
        self._deadlines.stop()
        thread = self._handler_thread
        self._handler_thread = None
        if thread is not None:
            self._inbox.put(None)
            if thread is not threading.current_thread():
                thread.join(5.0)

    def __enter__(self) -> ThreadedDevice:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- calls ------------------------------------------------------------

    def call(self, topic: str, args: dict[str, Any] | None = None, timeout: float = 5) -> Any:
        """Call the function at ``topic`` (``{device_id}`` is replaced) and return its result.

        Raises a :class:`~device_sdk.errors.RemoteError` subclass for an error
        reply and :class:`CallTimeout` when no reply came within ``timeout`` seconds.
        """
        cid, future = self._start_call(topic, args, timeout)
        try:
            return future.result(timeout)
        except FutureTimeout:
            self._expire(cid)
            return future.result(0)

    def call_async(self, topic: str, args: dict[str, Any] | None = None, timeout: float = 5) -> Future[Any]:
        """Like :meth:`call`, but return at once with a future (it cannot be cancelled)."""
        return self._start_call(topic, args, timeout)[1]

    def _start_call(self, topic: str, args: dict[str, Any] | None, timeout: float) -> tuple[bytes, Future[Any]]:
        if self._handler_thread is None:
            raise NotConnected("the device is not connected: call connect() first")
        cid = self._ids.next()
        if self._mqtt5:
            payload = protocol.request_payload(args)
        else:
            payload = protocol.request_payload(args, cid, self.reply_topic)
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()  # only a reply or the deadline finishes it
        with self._lock:
            self._pending.add(cid, (future, topic, timeout))
        self._deadlines.add(cid, timeout)
        try:
            self._transport.publish(
                self.expand(topic),
                payload,
                1,
                response_topic=self.reply_topic if self._mqtt5 else None,
                correlation_data=cid if self._mqtt5 else None,
            )
        except BaseException:
            with self._lock:
                self._pending.take(cid)
            raise
        return cid, future

    def _expire(self, cid: bytes) -> None:
        with self._lock:
            waiting = self._pending.take(cid)
        if waiting is not None:
            future, topic, timeout = waiting
            _resolve(future, (False, CallTimeout(topic, timeout)))

    # -- events and subscriptions ------------------------------------------

    def publish(self, topic: str, value: Any = None, qos: int = 1, retain: bool = False, timeout: float = 5) -> None:
        """Publish ``value`` (msgpack; ``None`` sends an empty payload); QoS 1/2 wait for the broker's ack.

        Raises :class:`NotConnected` when the broker did not acknowledge within
        ``timeout`` (paho keeps the message queued and sends it after reconnecting).
        """
        info = self._transport.publish(self.expand(topic), protocol.event_payload(value), qos, retain)
        if qos and not _wait_published(info, timeout):
            raise NotConnected(f"the broker has not acknowledged the message to {self.expand(topic)!r} yet")

    def subscribe(self, topic: str, handler: Handler, qos: int = 1, timeout: float = 5) -> None:
        """Run ``handler(topic, value)`` on the handler thread for each message on the filter ``topic``.

        Returns once the broker has confirmed the subscription (or, when
        disconnected, at once: it is made on reconnection).
        """
        mqtt_filter = self.expand(topic)
        with self._lock:
            self._subs[mqtt_filter] = (handler, qos)
        try:
            self._transport.subscribe([(mqtt_filter, qos)], timeout)
        except NotConnected as exc:
            log.info("subscription to %r deferred until reconnected (%s)", mqtt_filter, exc)

    def unsubscribe(self, topic: str) -> None:
        """Stop handling the filter ``topic``."""
        mqtt_filter = self.expand(topic)
        with self._lock:
            removed = self._subs.pop(mqtt_filter, None)
        if removed is not None:
            self._transport.unsubscribe(mqtt_filter)

    def poll(self, ms: int = 0) -> int:
        """Wait up to ``ms`` milliseconds for handlers to run; how many messages they handled meanwhile.

        Handlers run on their own thread anyway; ``poll`` lets code written for
        MicroPython's :class:`~device_sdk.polled.PolledDevice` run unchanged.
        """
        with self._handled:
            start = self._handled_count
            self._handled.wait_for(lambda: self._handled_count != start, ms / 1000)
            return self._handled_count - start

    # -- network thread: file messages -------------------------------------

    def _filters(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(self.reply_topic, 1)] + [(f, qos) for f, (_, qos) in self._subs.items()]

    def _on_message(self, message: Received) -> None:
        if message.topic != self.reply_topic:
            self._inbox.put(message)
            return
        cid: bytes | str | None = message.correlation_data
        try:
            payload_cid, result = protocol.parse_reply(message.payload)
            cid = cid if cid is not None else payload_cid
        except BadReply as exc:
            if cid is None:
                log.warning("dropped a reply: %s", exc)
                return
            result = (False, exc)
        with self._lock:
            waiting = self._pending.take(cid)
            why = None if waiting is not None else self._pending.why_dropped(cid)
        if waiting is None:
            log.warning("%s", why)
            return
        _resolve(waiting[0], result)

    # -- handler thread ------------------------------------------------------

    def _run_handlers(self) -> None:
        while (message := self._inbox.get()) is not None:
            try:
                value = codec.decode(message.payload) if message.payload else None
            except DecodeError as exc:
                log.warning("dropped a message on %r: %s", message.topic, exc)
                continue
            with self._lock:
                handlers = [h for f, (h, _) in self._subs.items() if protocol.matches(f, message.topic)]
            for handler in handlers:
                try:
                    handler(message.topic, value)
                except Exception:  # a handler's bug must not stop the others
                    log.exception("handler for %r raised", message.topic)
            with self._handled:
                self._handled_count += len(handlers)
                self._handled.notify_all()


def _resolve(future: Future[Any], result: tuple[bool, Any]) -> None:
    if result[0]:
        future.set_result(result[1])
    else:
        future.set_exception(result[1])


def _wait_published(info: Any, timeout: float) -> bool:
    try:
        info.wait_for_publish(timeout)
    except RuntimeError:  # paho: "message was not queued" while disconnected
        return False
    return bool(info.is_published())
