"""Message in → invocation → executor → reply out.

:meth:`Dispatcher.handle` runs on the event loop for every inbound message, in
order of arrival. It never raises and never waits for a function: the call is
submitted to an executor and the reply is published from the future's
callback. Every failure a device can cause becomes an error reply when a
reply address is known, and a log line otherwise.

With a :class:`~gateway.durable.DurableQueue`, ``handle`` stages QoS 1/2
requests (stored and acknowledged at the end of the loop turn) and handles
them at once under their sequence number ``seq``: idempotent calls start now,
others once recorded as started. Their replies (and the end of calls without
one) go back through the queue, which stores them before publishing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway import codec, limits, protocol, retry
from gateway.config import DEFAULT_REPLY_PREFIX
from gateway.durable import Duplicate, DurableQueue
from gateway.errors import BadPayload, CallTimeout, InternalError, NotFound, Unavailable, WireError
from gateway.executors.base import Call, Executor
from gateway.protocol import ReplyAddress
from gateway.registry import FunctionSpec, Registry
from gateway.reply_guard import ReplyGuard
from gateway.stats import DispatchStats
from gateway.topics import TopicTemplate
from gateway.transport.base import InboundMessage, OutboundMessage, Transport

log = logging.getLogger(__name__)

NIL = b"\xc0"  # msgpack encoding of None


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    """The settings the dispatcher needs."""

    reply_prefix: str = DEFAULT_REPLY_PREFIX
    max_payload_bytes: int = 256 * 1024
    call_timeout: float = 10.0
    namespace: tuple[TopicTemplate, ...] = ()
    dead_letter: TopicTemplate | None = None  # where calls that failed for good are reported
    payload_limits: codec.PayloadLimits | None = None  # None: only max_payload_bytes
    max_topic_bytes: int = 1024
    max_topic_levels: int = 32
    # Replies go only inside the requesting device's own space; None: anywhere (Settings decides).
    reply_spaces: tuple[TopicTemplate, ...] | None = None
    device_rate: float = 0.0  # requests per second per device; 0: unlimited
    device_burst: int = 20


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
        durable: DurableQueue | None = None,
    ) -> None:
        self._registry = registry
        self._executors = executors
        self._default = default_executor
        self._transport = transport
        self._options = options
        self._guard = ReplyGuard(options.reply_spaces, options.namespace, registry, subscribed)
        self._durable = durable
        self._limits = options.payload_limits or codec.PayloadLimits(max_bytes=options.max_payload_bytes)
        self._rate = limits.DeviceRateLimit(options.device_rate, options.device_burst) if options.device_rate else None
        self._concurrency = limits.Concurrency()
        #: Outcomes and latencies for the metrics endpoint (plain counters: see gateway.stats).
        self.stats = DispatchStats([spec.key for spec in registry.specs])

    def swap(self, registry: Registry, executors: Mapping[str, Executor], subscribed: Sequence[str]) -> None:
        """Serve ``registry`` on ``executors`` from now on (a reload); calls already submitted finish where they run."""
        for spec in registry.specs:
            self.stats.function(spec.key)
        self._registry = registry
        self._executors = executors
        self._guard.rebuild(registry, subscribed)

    def executor_for(self, spec: FunctionSpec) -> Executor:
        """The executor that runs ``spec``."""
        return self._executors[self._default if spec.executor == "default" else spec.executor]

    def handle(self, message: InboundMessage) -> None:
        """Handle one inbound message; never raises."""
        if message.qos:
            durable = self._durable
            if durable is not None:
                # Stored and acknowledged at the end of this loop turn; non-idempotent calls start after that.
                self.run_stored(message, durable.stage(message), False)
                return
            # Acknowledge at hand-off: a slow function must not hold the broker's window.
            self._transport.ack(message)
        self.run_stored(message, None, False)

    def run_stored(self, message: InboundMessage, seq: int | None, started: bool) -> None:
        """Handle a message the durable queue has stored as ``seq``.

        ``started``: an earlier run had started it when it crashed (the call may have run).
        """
        try:
            self._handle(message, seq, started)
        except Exception:
            log.exception("internal error handling a message on %r", message.topic)
            address = protocol.early_reply_address(message)
            if address is not None:
                self._send_error(address, InternalError("internal gateway error"), message.topic, seq)
            else:
                self._end(seq)

    def _handle(self, message: InboundMessage, seq: int | None = None, started: bool = False) -> None:
        topic = message.topic
        resolved = self._registry.resolve(topic)
        params = resolved[1] if resolved else self._namespace_params(topic)
        device_id = params.get("device_id")
        if device_id is None and resolved is not None:
            # A function whose template names no device, on a topic in the namespace: the namespace's device.
            device_id = self._namespace_params(topic).get("device_id")
            if device_id is not None:
                params = {**params, "device_id": device_id}
        try:
            options = self._options
            if len(topic) > options.max_topic_bytes or topic.count("/") >= options.max_topic_levels:
                limit = f"{options.max_topic_bytes} characters or {options.max_topic_levels} levels"
                raise BadPayload(f"topic is over the limits of {limit}")
            request = protocol.parse_request(message, device_id, options.reply_prefix, self._limits)
        except WireError as exc:
            address = protocol.early_reply_address(message)
            if address is None:
                log.warning("dropped a request on %r with no reply address: %s", topic, exc.message)
                self.stats.drop("no_reply_address")
                self._end(seq)
            elif self._reply_allowed(address, topic, params, seq):
                self._send_error(address, exc, topic, seq)
            return
        reply = request.reply
        if reply is not None and not self._reply_allowed(reply, topic, params, seq):
            return
        if seq is not None and reply is not None and self._durable is not None:
            key = dedup_key(device_id or topic, reply)
            duplicate = self._durable.claim(seq, key) if key is not None else None
            if duplicate is not None:
                self._answer_duplicate(seq, reply, duplicate, topic)
                return
        if resolved is None:
            self._fail(reply, NotFound(f"no function is registered at {topic!r}"), topic, seq)
            return
        spec = resolved[0]
        if self._rate is not None and device_id is not None:
            try:
                self._rate.take(device_id)
            except WireError as exc:
                self._fail(reply, exc, topic, seq)
                return
        if started and not spec.idempotent:
            # It may have run before the crash: at most once beats a double effect.
            error = Unavailable("the gateway restarted while this call was pending; it was not run again")
            self._fail(reply, error, topic, seq)
            return
        timeout = spec.timeout or self._options.call_timeout
        expires_at = retry.deadline(spec, message.received_at, message.message_expiry)
        if expires_at is not None:
            remaining = expires_at - time.monotonic()
            if remaining <= 0:
                self._fail(reply, CallTimeout("the request expired before it could run"), topic, seq)
                return
            timeout = min(timeout, remaining)
        received = message.received_at
        try:
            call = Call(spec, spec.bind(params, request.args), timeout, expires_at)
            if seq is not None and self._durable is not None:
                # In order of arrival; a non-idempotent call is recorded as started first (at most once).
                start = functools.partial(self._submit, call, params, reply, topic, seq, received)
                self._durable.start_in_order(seq, start, record=not spec.idempotent)
                return
        except WireError as exc:
            self._fail(reply, exc, topic, seq)
            return
        self._submit(call, params, reply, topic, seq, received)

    def _submit(
        self,
        call: Call,
        params: dict[str, str],
        reply: ReplyAddress | None,
        topic: str,
        seq: int | None,
        received: float,
    ) -> None:
        spec = call.spec
        try:
            self._concurrency.enter(spec)
        except WireError as exc:
            self._fail(reply, exc, topic, seq)
            return
        try:
            future = retry.submit_with_retries(self.executor_for(spec), call)
        except WireError as exc:
            self._concurrency.leave(spec)
            self._fail(reply, exc, topic, seq)
            return
        if future.done():  # inline sync functions: reply in this loop turn, without a callback hop
            self._finish(future, spec, params, reply, topic, seq, received)
        else:
            future.add_done_callback(lambda done: self._finish(done, spec, params, reply, topic, seq, received))

    def _namespace_params(self, topic: str) -> dict[str, str]:
        for template in self._options.namespace:
            params = template.match(topic)
            if params is not None:
                return params
        return {}

    def _reply_allowed(self, reply: ReplyAddress, topic: str, params: dict[str, str], seq: int | None) -> bool:
        """Whether the reply to a request on ``topic`` may go to ``reply.topic``; a refusal is logged and ends it."""
        device_id = params.get("device_id")
        refusal = self._guard.check(reply.topic, topic, device_id)
        if refusal is None:
            return True
        log.warning("refused a request on %r: its reply topic %r %s", topic, reply.topic, refusal.problem)
        self.stats.drop(refusal.reason)
        if refusal.dead_letter and self._within_rate(device_id):  # a flood of refusals is not one of dead letters
            self._dead_letter(params, topic, BadPayload(f"reply topic {reply.topic[:200]!r} {refusal.problem}"))
        self._end(seq)
        return False

    def _within_rate(self, device_id: str | None) -> bool:
        """Take one of ``device_id``'s rate tokens; False when it is over its rate (always True without a limit)."""
        if self._rate is None or device_id is None:
            return True
        try:
            self._rate.take(device_id)
        except WireError:
            return False
        return True

    def _dead_letter(self, params: dict[str, str], topic: str, error: WireError) -> None:
        """Report a request that failed for good on the dead-letter topic (if one is set)."""
        if self._options.dead_letter is not None:
            letter = retry.dead_letter(self._options.dead_letter, params, topic, error)
            if letter is not None:
                self.stats.dead_lettered += 1
                self._publish(letter)

    def _answer_duplicate(self, seq: int, reply: ReplyAddress, duplicate: Duplicate, topic: str) -> None:
        if duplicate.reply is None:
            log.info("request on %r delivered again while its first copy runs; that one will answer", topic)
            self._end(seq)
            return
        log.info("request on %r delivered again; answered with the stored reply", topic)
        self._publish(OutboundMessage(reply.topic, duplicate.reply.payload, reply.qos, reply.correlation_data), seq)

    def _end(self, seq: int | None) -> None:
        """A stored request is settled without a reply."""
        if seq is not None and self._durable is not None:
            self._durable.finish(seq, None)

    def _fail(self, reply: ReplyAddress | None, error: WireError, topic: str, seq: int | None = None) -> None:
        if reply is None:
            log.warning("event on %r failed: %s: %s", topic, error.code, error.message)
            self._count_error(topic, error)
            self._end(seq)
        else:
            self._send_error(reply, error, topic, seq)

    def _send_error(self, reply: ReplyAddress, error: WireError, topic: str, seq: int | None = None) -> None:
        log.info("request on %r answered %s: %s", topic, error.code, error.message)
        self._count_error(topic, error)
        self._publish(protocol.error_reply(reply, error), seq)

    def _count_error(self, topic: str, error: WireError) -> None:
        # Resolved again rather than passed down every error path: errors are the rare case.
        resolved = self._registry.resolve(topic)
        self.stats.failed(resolved[0].key if resolved is not None else "", error.code)

    def _publish(self, message: OutboundMessage, seq: int | None = None) -> None:
        if seq is not None and self._durable is not None:
            self._durable.finish(seq, message)  # stored first, published after the commit
            return
        try:
            self._transport.publish(message)
        except (ValueError, TypeError, OSError) as exc:
            log.warning("could not publish to %r: %s", message.topic, exc)
            self.stats.drop("publish_failed")

    def _finish(
        self,
        future: asyncio.Future[bytes],
        spec: FunctionSpec,
        params: dict[str, str],
        reply: ReplyAddress | None,
        topic: str,
        seq: int | None = None,
        received_at: float | None = None,
    ) -> None:
        """Publish the outcome of a call (runs as a future callback on the loop)."""
        if spec.concurrency is not None:
            self._concurrency.leave(spec)
        try:
            if future.cancelled():
                raise Unavailable("the call was cancelled")
            error = future.exception()
            if error is not None:
                if not isinstance(error, WireError):
                    log.error("executor failed on %r", topic, exc_info=error)
                    error = InternalError("internal gateway error")
                if received_at is not None:
                    self.stats.functions[spec.template.template].ran(received_at)
                self._dead_letter(params, topic, error)
                self._fail(reply, error, topic, seq)
                return
            encoded: bytes = future.result()
            if received_at is not None:
                # Every registered key is in stats.functions (swap() adds new ones); .template.template is spec.key
                # without the property call, on every request.
                self.stats.functions[spec.template.template].answered(received_at)
            if reply is not None:
                self._publish(protocol.result_reply(reply, encoded), seq)
                return
            if spec.publish is not None and encoded != NIL:
                self._publish(OutboundMessage(spec.publish.render(params), encoded, qos=1))
            self._end(seq)
        except WireError as exc:
            self._fail(reply, exc, topic, seq)
        except Exception:
            log.exception("internal error finishing a call on %r", topic)
            if reply is not None:
                self._send_error(reply, InternalError("internal gateway error"), topic, seq)
            else:
                self._end(seq)


def dedup_key(device: str, reply: ReplyAddress) -> str | None:
    """The identity of a request for duplicate detection: device and correlation id (``None`` without one)."""
    cid = reply.correlation_data if reply.correlation_data is not None else reply.cid
    if cid is None:
        return None
    return f"{device}\x00{cid!r}"

