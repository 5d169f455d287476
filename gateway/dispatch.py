"""Message in → invocation → executor → reply out.

:meth:`Dispatcher.handle` runs on the event loop for every inbound message, in
order of arrival. It never raises and never waits for a function: the call is
submitted to an executor and the reply is published from the future's
callback. Every failure a device can cause becomes an error reply when a
reply address is known, and a log line otherwise.

Each message becomes a :class:`~gateway.request.Request` that carries it to the
end: :meth:`Dispatcher._admit` decides whether it may run (and where its reply
goes), :meth:`Dispatcher._invoke` runs it, :meth:`Dispatcher._finish` answers.
With a :class:`~gateway.durable.queue.DurableQueue`, ``handle`` stages QoS 1/2
requests (stored and acknowledged at the end of the loop turn) under a sequence
number: idempotent calls start now, others once recorded as started, and their
replies (and the end of calls without one) are stored before they are published.
Other requests go through a :class:`~gateway.request.VolatileQueue` with the
same interface, so both take the same path.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway import codec, limits, protocol, retry
from gateway.config import DEFAULT_REPLY_PREFIX
from gateway.durable.queue import Duplicate, DurableQueue
from gateway.errors import (
    BadPayload,
    BadResult,
    CallTimeout,
    InternalError,
    NotFound,
    RateLimited,
    Unavailable,
    WireError,
)
from gateway.executors.base import Call, Executor
from gateway.ops.stats import DispatchStats
from gateway.protocol import ReplyAddress
from gateway.registry import FunctionSpec, Registry
from gateway.reply_guard import ReplyGuard
from gateway.request import Request, RequestQueue, VolatileQueue
from gateway.topics import TopicTemplate, publish_problem
from gateway.transport.base import InboundMessage, OutboundMessage, Transport

log = logging.getLogger(__name__)

NIL = b"\xc0"  # msgpack encoding of None
# A publish whose payload and topic (4 bytes a character at most) are this far within the broker's Maximum Packet
# Size fits it whatever its correlation data (at most 65,535 bytes): no need to add up (Dispatcher._fits_broker).
_FAR_WITHIN = protocol.PUBLISH_ROOM + 65_535

_Route = tuple[tuple[FunctionSpec, dict[str, str]] | None, dict[str, str]]
"""What a request's topic calls: the function and its parameters (``None`` if none), and the parameters
(with the namespace's ``device_id``) to report against."""


class _Admission(enum.Enum):
    ADMITTED = "admitted"  # it may run
    SETTLED = "settled"  # answered or dropped during admission: nothing more to do


ADMITTED, SETTLED = _Admission.ADMITTED, _Admission.SETTLED


def _held(count: int) -> str:
    """The tail of a log line that follows ``count`` held back by a device's :class:`~gateway.limits.Notices`."""
    return f" ({count} more like it from this device were not logged)" if count else ""


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
    device_concurrency: int | None = None  # calls one device may have under way on worker processes; None: any
    max_share_waiting: int = 1000  # calls waiting for their device's share, of all devices together, at most


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
        self._guard = ReplyGuard(
            options.reply_spaces, options.namespace, registry, subscribed, options.max_topic_levels
        )
        self._durable = durable
        # Requests nothing stores go through the same steps: started at once, their replies published at once.
        self._volatile = VolatileQueue(transport, lambda: self.stats.drop("publish_failed"))
        self._limits = options.payload_limits or codec.PayloadLimits(max_bytes=options.max_payload_bytes)
        self._rate = limits.DeviceRateLimit(options.device_rate, options.device_burst) if options.device_rate else None
        self._concurrency = limits.Concurrency()
        limit = options.device_concurrency
        # Past its share a device's calls wait, as many as it may send at once (its burst).
        shares = limits.DeviceConcurrency(limit, options.device_burst, options.max_share_waiting) if limit else None
        self._device_calls = shares
        self._notices = limits.Notices()  # per-device allowance of log lines and rate_limited replies
        #: Outcomes and latencies for the metrics endpoint (plain counters: see gateway.ops.stats).
        self.stats = DispatchStats([spec.key for spec in registry.specs])
        transport.on_given_up = self._given_up

    def swap(self, registry: Registry, executors: Mapping[str, Executor], subscribed: Sequence[str]) -> None:
        """Serve ``registry`` on ``executors`` from now on (a reload); calls already submitted finish where they run."""
        for spec in registry.specs:
            self.stats.function(spec.key)
        self._registry = registry
        self._executors = executors
        self._guard.rebuild(registry, subscribed)

    def executor_for(self, spec: FunctionSpec) -> Executor:
        """The executor that runs ``spec``."""
        return self._executors[self._default if spec.options.executor == "default" else spec.options.executor]

    def handle(self, message: InboundMessage) -> None:
        """Handle one inbound message; never raises."""
        route: _Route | None = None
        try:
            route = self._route(message.topic)
        except Exception:
            log.exception("internal error routing a message on %r", message.topic)  # run_stored answers it
        if route is not None:
            try:
                # The rate first, for every request; then a retained one is refused, not run.
                if self._rate is not None and not self._within_rate_first(message, route):
                    return
                if message.retain:
                    self._refuse_retained(message, route)
                    return
            except Exception:
                log.exception("internal error admitting a message on %r; dropped", message.topic)
                if message.qos:
                    self._transport.ack(message)  # a second ack of one delivery is ignored
                self.stats.drop("internal_error")
                return
        if message.qos:
            durable = self._durable
            if durable is not None:
                # Stored and acknowledged at the end of this loop turn; non-idempotent calls start after that.
                self.run_stored(message, durable.stage(message), route=route)
                return
            # Acknowledge at hand-off: a slow function must not hold the broker's window.
            self._transport.ack(message)
        self.run_stored(message, None, route=route)

    def _route(self, topic: str) -> _Route:
        """The function ``topic`` calls (if any) and its parameters, with the namespace's ``device_id``."""
        resolved = self._registry.resolve(topic)
        params = resolved[1] if resolved else self._namespace_params(topic)
        if "device_id" not in params and resolved is not None:
            # A function whose template names no device, on a topic in the namespace: the namespace's device.
            device_id = self._namespace_params(topic).get("device_id")
            if device_id is not None:
                params = {**params, "device_id": device_id}
        return resolved, params

    def _within_rate_first(self, message: InboundMessage, route: _Route) -> bool:
        """Take the device's rate token before anything else is done for the request; False when it is over.

        Over its rate, a request is not stored, parsed or run: acknowledged and counted. While the device's
        :class:`~gateway.limits.Notices` allowance lasts it is also answered ``rate_limited`` and logged,
        so a device that is a little over learns why, and a flood costs neither replies nor log lines.
        """
        assert self._rate is not None
        resolved, params = route
        device_id = params.get("device_id")
        if device_id is None:
            return True  # no device to hold to a rate (the ACL keeps devices to their own topics)
        if self._rate.try_take(device_id):
            return True
        if message.qos:
            self._transport.ack(message)
        self.stats.failed(resolved[0].key if resolved is not None else "", RateLimited.code)
        held = self._notices.allow(device_id)
        if held is not None:  # the error is made only for those told: a flood makes none
            exc = self._rate.refusal(device_id)
            log.warning("request on %r answered rate_limited: %s%s", message.topic, exc.message, _held(held))
            address = protocol.early_reply_address(message)
            if address is not None and self._guard.check(address.topic, message.topic, device_id) is None:
                self._volatile.publish(protocol.error_reply(address, exc))
        return False

    def _refuse_retained(self, message: InboundMessage, route: _Route) -> None:
        """A retained request is not run: the broker would hand it to the gateway again at every start.

        Acknowledged without being stored, logged, counted and dead-lettered (the device can be told).
        """
        if message.qos:
            self._transport.ack(message)
        topic, params = message.topic, route[1]
        self.stats.drop("retained")
        if self._note(params, "refused a retained request on %r: requests must not be retained", topic):
            self._dead_letter(params, topic, BadPayload("requests must not be retained: it was not run"))

    def run_stored(
        self, message: InboundMessage, seq: int | None, *, started: bool = False, route: _Route | None = None
    ) -> None:
        """Handle a message, stored by the durable queue as ``seq`` (``None``: not stored).

        ``started``: an earlier run had started it when it stopped (the call may have run).
        """
        queue: RequestQueue = self._volatile if seq is None or self._durable is None else self._durable
        request = Request(message, message.topic, queue, seq=seq or 0, started=started)
        try:
            resolved, params = route or self._route(message.topic)
            request.params, request.device_id = params, params.get("device_id")
            request.spec = resolved[0] if resolved else None
            admission = self._admit(request)
            if admission is ADMITTED:
                self._invoke(request)
            elif isinstance(admission, WireError):
                self._fail(request, admission)
        except Exception:
            log.exception("internal error handling a message on %r", message.topic)
            address = request.reply or protocol.early_reply_address(message)
            if address is not None:
                request.reply = address
                self._send_error(request, InternalError("internal gateway error"))
            else:
                request.end()

    # -- admission: whether the request may run, and where its reply goes --------------------------

    def _admit(self, request: Request) -> WireError | _Admission:
        """Parse and check ``request``: :data:`ADMITTED` when it may run, :data:`SETTLED` when it was answered or
        dropped here, or the error to answer it with."""
        message, params, options = request.message, request.params, self._options
        topic = message.topic
        try:
            if len(topic) > options.max_topic_bytes or topic.count("/") >= options.max_topic_levels:
                limit = f"{options.max_topic_bytes} characters or {options.max_topic_levels} levels"
                raise BadPayload(f"topic is over the limits of {limit}")
            parsed = protocol.parse_request(
                message, request.device_id, options.reply_prefix, self._limits, options.max_topic_levels
            )
        except WireError as exc:
            request.reply = protocol.fallback_reply_address(message, request.device_id, options.reply_prefix,
                                                            self._limits)  # fmt: skip
            if request.reply is None:
                self._note(params, "dropped a request on %r with no reply address: %s", topic, exc.message)
                self.stats.drop("no_reply_address")
                request.end()
                return SETTLED
            return exc if self._reply_allowed(request) else SETTLED
        request.reply = parsed.reply
        if parsed.reply is not None and not self._reply_allowed(request):
            return SETTLED
        if request.queue is not self._volatile and parsed.reply is not None:
            key = dedup_key(request.device_id or topic, message, parsed.reply)
            duplicate = request.queue.claim(request.seq, key) if key is not None else None
            if duplicate is not None:
                self._answer_duplicate(request, duplicate)
                return SETTLED
        spec = request.spec
        if spec is None:
            return NotFound(f"no function is registered at {topic!r}")
        if request.started and not spec.options.idempotent:
            # It may have run before the gateway stopped: at most once beats a double effect.
            return Unavailable("the gateway restarted while this call was pending; it was not run again")
        request.expires_at = retry.deadline(spec, message.received_at, message.message_expiry)
        if request.expires_at is not None and request.expires_at <= time.monotonic():
            return CallTimeout("the request expired before it could run")
        request.args = parsed.args
        return ADMITTED

    # -- invocation: the call on its executor, then its reply ---------------------------------------

    def _invoke(self, request: Request) -> None:
        spec = request.spec
        assert spec is not None
        timeout = spec.options.timeout or self._options.call_timeout
        if request.expires_at is not None:
            timeout = min(timeout, request.expires_at - time.monotonic())
        try:
            call = Call(spec, spec.bind(request.params, request.args or {}), timeout, request.expires_at)
        except WireError as exc:
            self._fail(request, exc)
            return
        shares = self._device_calls
        if shares is not None and self.executor_for(spec).name != "inline":  # inline has no workers to share
            request.share_device = request.device_id
        if shares is not None and request.share_device is not None:
            # Within the device's share of the workers, or it waits (before it is recorded as started, so
            # waiting calls hold none of the durable queue's window) for one of the device's calls to finish.
            try:
                if not shares.admit(request.share_device, functools.partial(self._begin, request, call)):
                    return  # _device_leave begins it
            except WireError as exc:
                self._fail(request, exc)
                return
        self._begin(request, call)

    def _begin(self, request: Request, call: Call) -> None:
        # In order of arrival; a non-idempotent call is recorded as started first (at most once).
        try:
            request.queue.start_in_order(request.seq, functools.partial(self._start, request, call),
                                         record=not call.spec.options.idempotent)  # fmt: skip
        except Exception as exc:  # called later too (a device's turn): nothing above it would catch this
            self._device_leave(request.share_device)
            self._fail(request, self._wire_error(exc, request))

    def _start(self, request: Request, call: Call) -> None:
        spec = call.spec
        if spec.options.concurrency is not None:
            try:
                self._concurrency.enter(spec)
            except WireError as exc:
                self._device_leave(request.share_device)
                self._fail(request, exc)
                return
        try:
            # The executor as it is now: a call that waited its turn across a reload runs on the new one.
            future = retry.submit_with_retries(self.executor_for(spec), call)
        except Exception as exc:  # called after a commit too: nothing above it would catch this
            self._concurrency.leave(spec)
            self._device_leave(request.share_device)
            self._fail(request, self._wire_error(exc, request))
            return
        if future.done():  # inline sync functions: reply in this loop turn, without a callback hop
            self._finish(future, request)
        else:
            future.add_done_callback(lambda done: self._finish(done, request))

    @staticmethod
    def _wire_error(exc: Exception, request: Request) -> WireError:
        """``exc`` as the error a device is told: itself if it is a wire error, else ``internal`` (logged)."""
        if isinstance(exc, WireError):
            return exc
        log.error("internal error starting a call on %r", request.topic, exc_info=exc)
        return InternalError("internal gateway error")

    def _device_leave(self, device: str | None) -> None:
        if device is not None and self._device_calls is not None:
            waiting = self._device_calls.leave(device)
            if waiting is not None:  # the device's next call takes the place: on the next turn, not nested here
                asyncio.get_running_loop().call_soon(waiting)

    def _namespace_params(self, topic: str) -> dict[str, str]:
        for template in self._options.namespace:
            params = template.match(topic)
            if params is not None:
                return params
        return {}

    def _note(self, params: dict[str, str], message: str, *args: object, level: int = logging.WARNING) -> bool:
        """Log a line about a device's request, within the device's allowance (a flood cannot fill the log);
        whether it was logged (what else the line goes with, a dead letter, follows it)."""
        held = self._notices.allow(params.get("device_id"))
        if held is None:
            return False
        log.log(level, message + "%s", *args, _held(held))
        return True

    def _note_for(self, topic: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """:meth:`_note` for a topic that is not a request's (its parameters are looked up: rare paths)."""
        self._note(self._route(topic)[1], message, *args, level=level)

    def _reply_allowed(self, request: Request) -> bool:
        """Whether the request's reply may go to its reply topic; a refusal is logged and ends the request."""
        reply, topic, params = request.reply, request.topic, request.params
        assert reply is not None
        refusal = self._guard.check(reply.topic, topic, request.device_id)
        if refusal is None:
            return True
        self.stats.drop(refusal.reason)
        # Within the device's allowance only: a flood of refusals is neither one of log lines nor of dead letters.
        shown = reply.topic[:200]
        noted = self._note(params, "refused a request on %r: its reply topic %r %s", topic, shown, refusal.problem)
        if noted and refusal.dead_letter:
            self._dead_letter(params, topic, BadPayload(f"reply topic {shown!r} {refusal.problem}"))
        request.end()
        return False

    def _dead_letter(self, params: dict[str, str], topic: str, error: WireError) -> None:
        """Report a request that failed for good on the dead-letter topic (if one is set)."""
        if self._options.dead_letter is not None:
            letter = retry.dead_letter(self._options.dead_letter, params, topic, error)
            if letter is not None and self._publishable(letter.topic, "dead letter"):
                self.stats.dead_lettered += 1
                self._volatile.publish(letter)

    def _publishable(self, target: str, what: str) -> bool:
        """Whether a topic filled in from a request's parameters (``publish=``, dead letters) may be published to.

        The parameters come from a topic the broker accepted, but a ``{name:path}`` one can add levels
        past ``max_topic_levels``: such a publish is dropped with a log line, never sent.
        """
        problem = publish_problem(target, self._options.max_topic_levels)
        if problem is None:
            return True
        self._note_for(target, "dropped the %s for %r: the topic %s", what, target[:200], problem)
        self.stats.drop("unpublishable_topic")
        return False

    def _fits_broker(self, message: OutboundMessage, params: dict[str, str], topic: str) -> bool:
        """Whether ``message`` is within the broker's Maximum Packet Size; if not, it is dead-lettered (and counted).

        A broker drops a larger publish, or the connection: the device would never hear of its call.
        """
        limit = self._transport.broker_max_packet_size
        if limit is None or len(message.payload) + 4 * len(message.topic) < limit - _FAR_WITHIN:
            return True  # no limit, or far within it whatever the correlation data: no need to add up
        if protocol.publish_size(message) <= limit:
            return True
        self.stats.drop("too_large_for_broker")
        # Within the device's allowance only, like every refusal: a flood of them is neither log lines nor letters.
        if self._note(params, "a result for %r does not fit the broker's Maximum Packet Size of %d bytes", topic,
                      limit):  # fmt: skip
            self._dead_letter(params, topic, self._too_large(message))
        return False

    def _too_large(self, message: OutboundMessage) -> BadResult:
        size, limit = len(message.payload), self._transport.broker_max_packet_size
        return BadResult(f"the reply is {size} bytes, over the broker's limit of {limit} bytes a packet")

    def _given_up(self, message: OutboundMessage, why: str) -> None:
        """The transport gave up a publish the broker kept refusing: count it, and tell the device it was for."""
        self.stats.drop("publish_given_up")
        device_id = self._device_of_reply(message.topic)
        dead = self._options.dead_letter
        if device_id is None or dead is None or dead.match(message.topic) is not None:
            return  # nobody to tell, or it was a dead letter itself
        self._dead_letter({"device_id": device_id}, message.topic, Unavailable(f"the reply was not delivered: {why}"))

    def _device_of_reply(self, topic: str) -> str | None:
        """The device whose reply space ``topic`` lies in (``None`` outside every space, or without spaces)."""
        parts = topic.split("/")
        for space in self._options.reply_spaces or ():
            size = len(space.levels)
            params = space.match_levels(parts[:size]) if len(parts) >= size else None
            if params is not None and "device_id" in params:
                return params["device_id"]
        return None

    def _answer_duplicate(self, request: Request, duplicate: Duplicate) -> None:
        topic, reply = request.topic, request.reply
        assert reply is not None
        if duplicate.reply is None:
            self._note(request.params, "request on %r delivered again while its first copy runs; that one will"
                       " answer", topic, level=logging.INFO)  # fmt: skip
            request.end()
            return
        again = "request on %r delivered again; answered with the stored reply"
        self._note(request.params, again, topic, level=logging.INFO)
        request.end(OutboundMessage(reply.topic, duplicate.reply.payload, reply.qos, reply.correlation_data))

    def _fail(self, request: Request, error: WireError) -> None:
        if request.reply is None:
            topic = request.topic
            self._note(request.params, "event on %r failed: %s: %s", topic, error.code, error.message)
            self.stats.failed(request.key, error.code)
            request.end()
        else:
            self._send_error(request, error)

    def _send_error(self, request: Request, error: WireError) -> None:
        assert request.reply is not None
        self._note(request.params, "request on %r answered %s: %s", request.topic, error.code, error.message,
                   level=logging.INFO)  # fmt: skip
        self.stats.failed(request.key, error.code)
        request.end(protocol.error_reply(request.reply, error))

    def _finish(self, future: asyncio.Future[bytes], request: Request) -> None:
        """Publish the outcome of a call (runs as a future callback on the loop)."""
        spec, params, topic, reply = request.spec, request.params, request.topic, request.reply
        assert spec is not None
        if spec.options.concurrency is not None:
            self._concurrency.leave(spec)
        if request.share_device is not None:
            self._device_leave(request.share_device)
        try:
            if future.cancelled():
                raise Unavailable("the call was cancelled")
            error = future.exception()
            received_at = request.message.received_at
            if error is not None:
                if not isinstance(error, WireError):
                    log.error("executor failed on %r", topic, exc_info=error)
                    error = InternalError("internal gateway error")
                self.stats.functions[spec.template.template].ran(received_at)
                self._dead_letter(params, topic, error)
                self._fail(request, error)
                return
            encoded: bytes = future.result()
            # Every registered key is in stats.functions (swap() adds new ones); .template.template is spec.key
            # without the property call, on every request.
            stats = self.stats.functions[spec.template.template]
            if reply is not None:
                answer = protocol.result_reply(reply, encoded)
                # _fits_broker's first test, made here too: on every reply, a method call saved.
                limit = self._transport.broker_max_packet_size
                far = limit is None or len(answer.payload) + 4 * len(answer.topic) < limit - _FAR_WITHIN
                if far or self._fits_broker(answer, params, topic):
                    stats.answered(received_at)
                    request.end(answer)
                else:
                    stats.ran(received_at)  # counted bad_result by _fail
                    self._fail(request, self._too_large(answer))
                return
            stats.answered(received_at)
            if spec.publish is not None and encoded != NIL:
                target = spec.publish.render(params)
                event = OutboundMessage(target, encoded, qos=1)
                if self._publishable(target, f"result of {spec.key}") and self._fits_broker(event, params, topic):
                    self._volatile.publish(event)
            request.end()
        except WireError as exc:
            self._fail(request, exc)
        except Exception:
            log.exception("internal error finishing a call on %r", topic)
            if reply is not None:
                self._send_error(request, InternalError("internal gateway error"))
            else:
                request.end()


def dedup_key(device: str, message: InboundMessage, reply: ReplyAddress) -> bytes | None:
    """The identity of a request for duplicate detection (``None`` without a correlation id).

    A 16-byte BLAKE2b digest of the device, the topic, the correlation id (Correlation Data, else
    ``$cid``) and the payload as it arrived (its length and CRC-32): a resend of a request, by the
    broker or the device, has the same key; an id reused for other arguments or another function
    does not. Fixed-size whatever the request, so each entry of the index costs the same.

    The payload goes in as length and CRC-32, not whole into BLAKE2b: 0.2 ns a byte instead of 1.1
    (13 µs instead of 70 for 64 KiB). Two different payloads of one device, topic and id collide
    with a chance of 2^-32; a device that forges such a pair only gets its own earlier reply back.
    Devices and topics stay apart by the cryptographic hash.
    """
    cid = reply.correlation_data if reply.correlation_data is not None else reply.cid
    if cid is None:
        return None
    if isinstance(cid, str):
        cid = cid.encode(errors="surrogatepass")
    payload = message.payload
    # Topics hold no NUL (MQTT forbids it) and the id's length is given: the fields cannot run into each other.
    digest = hashlib.blake2b(f"{device}\0{message.topic}\0{len(cid)}\0".encode(), digest_size=16)
    digest.update(cid)
    digest.update((zlib.crc32(payload) << 32 | len(payload)).to_bytes(8, "little"))
    return digest.digest()
