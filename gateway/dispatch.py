"""Message in → invocation → executor → reply out.

:meth:`Dispatcher.handle` runs on the event loop for every inbound message, in
order of arrival. It never raises and never waits for a function: the call is
submitted to an executor and the reply is published from the future's
callback. Every failure a device can cause becomes an error reply when a
reply address is known, and a log line otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway import protocol
from gateway.errors import CallTimeout, InternalError, NotFound, Unavailable, WireError
from gateway.executors.base import Call, Executor
from gateway.protocol import ReplyAddress
from gateway.registry import FunctionSpec, Registry
from gateway.topics import TopicTemplate, filter_matches
from gateway.transport.base import InboundMessage, OutboundMessage, Transport

log = logging.getLogger(__name__)

NIL = b"\xc0"  # msgpack encoding of None
REPLY_TOPIC_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    """The settings the dispatcher needs."""

    reply_prefix: str = "roost/replies"
    max_payload_bytes: int = 256 * 1024
    call_timeout: float = 10.0
    namespace: tuple[TopicTemplate, ...] = ()


class Dispatcher:
    """Routes inbound requests to functions and publishes their replies."""

    def __init__(
        self,
        registry: Registry,
        executors: Mapping[str, Executor],
        default_executor: str,
        transport: Transport,
        options: DispatchOptions,
        subscribed: Sequence[str],
    ) -> None:
        self._registry = registry
        self._executors = executors
        self._default = default_executor
        self._transport = transport
        self._options = options
        self._subscribed = tuple(subscribed)
        self._checked_replies: dict[str, str | None] = {}  # reply topic → problem, None when fine

    def executor_for(self, spec: FunctionSpec) -> Executor:
        """The executor that runs ``spec``."""
        return self._executors[self._default if spec.executor == "default" else spec.executor]

    def handle(self, message: InboundMessage) -> None:
        """Handle one inbound message; never raises."""
        if message.qos:
            # Acknowledge at hand-off: a slow function must not hold the broker's window.
            self._transport.ack(message)
        try:
            self._handle(message)
        except Exception:
            log.exception("internal error handling a message on %r", message.topic)
            address = protocol.early_reply_address(message)
            if address is not None:
                self._send_error(address, InternalError("internal gateway error"), message.topic)

    def _handle(self, message: InboundMessage) -> None:
        topic = message.topic
        resolved = self._registry.resolve(topic)
        params = resolved[1] if resolved else self._namespace_params(topic)
        device_id = params.get("device_id")
        try:
            request = protocol.parse_request(
                message, device_id, self._options.reply_prefix, self._options.max_payload_bytes
            )
        except WireError as exc:
            address = protocol.early_reply_address(message)
            if address is None:
                log.warning("dropped a request on %r with no reply address: %s", topic, exc.message)
            else:
                self._send_error(address, exc, topic)
            return
        reply = request.reply
        if reply is not None and not self._reply_topic_ok(reply, topic):
            return
        if resolved is None:
            self._fail(reply, NotFound(f"no function is registered at {topic!r}"), topic)
            return
        spec = resolved[0]
        timeout = spec.timeout or self._options.call_timeout
        expires_at = None
        if message.message_expiry is not None:
            expires_at = message.received_at + message.message_expiry
            remaining = expires_at - time.monotonic()
            if remaining <= 0:
                self._fail(reply, CallTimeout("the request expired before it could run"), topic)
                return
            timeout = min(timeout, remaining)
        try:
            kwargs = spec.bind(params, request.args)
            future = self.executor_for(spec).submit(Call(spec, kwargs, timeout, expires_at))
        except WireError as exc:
            self._fail(reply, exc, topic)
            return
        if future.done():  # inline sync functions: reply in this loop turn, without a callback hop
            self._finish(future, spec, params, reply, topic)
        else:
            future.add_done_callback(lambda done: self._finish(done, spec, params, reply, topic))

    def _namespace_params(self, topic: str) -> dict[str, str]:
        for template in self._options.namespace:
            params = template.match(topic)
            if params is not None:
                return params
        return {}

    def _reply_topic_ok(self, reply: ReplyAddress, topic: str) -> bool:
        """Refuse reply topics that are not publishable or would loop back to us; log each refusal.

        Devices reuse their reply topics, so the verdict is cached (bounded).
        """
        target = reply.topic
        problem = self._checked_replies.get(target, "?")
        if problem == "?":
            if len(self._checked_replies) >= REPLY_TOPIC_CACHE:
                self._checked_replies.clear()
            problem = self._checked_replies[target] = self._reply_topic_problem(target)
        if problem is None:
            return True
        log.warning("dropped a request on %r: its reply topic %r %s", topic, target, problem)
        return False

    def _reply_topic_problem(self, target: str) -> str | None:
        if "+" in target or "#" in target or "\x00" in target or target.startswith("$"):
            return "is not a valid topic to publish to"
        for mqtt_filter in self._subscribed:
            if filter_matches(mqtt_filter, target):
                return f"matches the gateway's subscription {mqtt_filter!r} (reply loop)"
        return None

    def _fail(self, reply: ReplyAddress | None, error: WireError, topic: str) -> None:
        if reply is None:
            log.warning("event on %r failed: %s: %s", topic, error.code, error.message)
        else:
            self._send_error(reply, error, topic)

    def _send_error(self, reply: ReplyAddress, error: WireError, topic: str) -> None:
        log.info("request on %r answered %s: %s", topic, error.code, error.message)
        self._publish(protocol.error_reply(reply, error))

    def _publish(self, message: OutboundMessage) -> None:
        try:
            self._transport.publish(message)
        except (ValueError, TypeError, OSError) as exc:
            log.warning("could not publish to %r: %s", message.topic, exc)

    def _finish(
        self,
        future: asyncio.Future[bytes],
        spec: FunctionSpec,
        params: dict[str, str],
        reply: ReplyAddress | None,
        topic: str,
    ) -> None:
        """Publish the outcome of a call (runs as a future callback on the loop)."""
        try:
            if future.cancelled():
                raise Unavailable("the call was cancelled")
            error = future.exception()
            if error is not None:
                if not isinstance(error, WireError):
                    log.error("executor failed on %r", topic, exc_info=error)
                    error = InternalError("internal gateway error")
                self._fail(reply, error, topic)
                return
            encoded: bytes = future.result()
            if reply is not None:
                self._publish(protocol.result_reply(reply, encoded))
            elif spec.publish is not None and encoded != NIL:
                self._publish(OutboundMessage(spec.publish.render(params), encoded, qos=1))
        except WireError as exc:
            self._fail(reply, exc, topic)
        except Exception:
            log.exception("internal error finishing a call on %r", topic)
            if reply is not None:
                self._send_error(reply, InternalError("internal gateway error"), topic)
