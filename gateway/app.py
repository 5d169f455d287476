"""Wires a transport, a registry and executors together and runs them until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence

from gateway.codec import PayloadLimits
from gateway.config import Settings
from gateway.dispatch import Dispatcher, DispatchOptions
from gateway.durable.queue import DurableQueue
from gateway.durable.store import RequestStore
from gateway.errors import RoostError
from gateway.executors.base import Executor
from gateway.executors.inline import InlineExecutor
from gateway.ops.stats import DispatchStats, ReloadStats
from gateway.registry import Registry
from gateway.topics import TopicTemplate, filter_covers, shared_filter
from gateway.transport import ConnectOptions, Transport, create_transport

log = logging.getLogger(__name__)


def subscriptions(registry: Registry, namespace: Sequence[TopicTemplate]) -> list[str]:
    """Filters to subscribe: the namespace, plus each function filter it does not cover.

    Overlapping subscriptions would make the broker deliver a message once per
    matching filter, so a function under the namespace is not subscribed again.
    """
    filters = [template.mqtt_filter for template in namespace]
    for spec in registry.specs:
        own = spec.template.mqtt_filter
        if not any(filter_covers(outer, own) for outer in filters):
            filters.append(own)
    return filters


class GatewayFailed(RoostError):
    """An executor failed in a way the gateway cannot serve through (e.g. its Mesos driver died)."""


def build_executors(
    settings: Settings, registry: Registry, *, reimport: bool = False, on_fatal: Callable[[str], None] | None = None
) -> dict[str, Executor]:
    """The executors the registered functions need (the default one always).

    ``reimport``: worker processes import the function modules afresh (after a reload).
    ``on_fatal`` is told when an executor can no longer run calls at all (the gateway then exits non-zero).
    """
    warn_mesos_only_options(registry, settings.executor)
    needed = {settings.executor}
    needed.update(spec.options.executor for spec in registry.specs if spec.options.executor != "default")
    executors: dict[str, Executor] = {}
    limits = settings.limits
    if "inline" in needed:
        executors["inline"] = InlineExecutor(limits.max_queue, limits.max_result_bytes)
    if "local" in needed:
        from gateway.executors.local.executor import LocalExecutor

        executors["local"] = LocalExecutor(
            settings.functions, settings.workers, limits.max_queue, limits.max_result_bytes, reimport=reimport
        )
    if "mesos" in needed:
        from gateway.executors.mesos.cluster import MesosExecutor

        executors["mesos"] = MesosExecutor(settings, on_fatal)
    return executors


def warn_mesos_only_options(registry: Registry, default_executor: str) -> None:
    """Log one warning per function that sets ``isolated``, ``cpus`` or ``mem`` but does not run on Mesos.

    Not refused: running the Mesos test functions under the local executor, to
    compare their replies, must keep working.
    """
    for spec in registry.specs:
        executor = default_executor if spec.options.executor == "default" else spec.options.executor
        given = spec.options.mesos_only()
        if given and executor != "mesos":
            log.warning(
                "function %s sets %s, which only the mesos executor honours (it runs on %s)",
                spec.key,
                ", ".join(given),
                executor,
            )


class Gateway:
    """One running gateway: connect, subscribe, serve until :meth:`request_stop`."""

    def __init__(self, settings: Settings, registry: Registry, transport: Transport | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.transport = transport or create_transport(settings.transport_kind, ConnectOptions.from_settings(settings))
        self.failure: str | None = None  # set when an executor failed fatally: the gateway exits non-zero
        self.executors = build_executors(settings, registry, on_fatal=self.fail)
        self.namespace = tuple(TopicTemplate.parse(t) for t in settings.namespace)
        self.filters = subscriptions(registry, self.namespace)
        self.durable = open_durable_queue(settings, self.transport)
        self.dispatcher = Dispatcher(
            registry,
            self.executors,
            settings.executor,
            self.transport,
            DispatchOptions(
                reply_prefix=settings.reply_prefix,
                max_payload_bytes=settings.limits.max_payload_bytes,
                call_timeout=settings.limits.call_timeout,
                namespace=self.namespace,
                dead_letter=TopicTemplate.parse(settings.dead_letter_topic) if settings.dead_letter_topic else None,
                payload_limits=PayloadLimits(
                    max_bytes=settings.limits.max_payload_bytes,
                    max_depth=settings.limits.max_depth,
                    max_items=settings.limits.max_items,
                    max_arguments=settings.limits.max_arguments,
                    max_argument_bytes=settings.limits.max_argument_bytes,
                    max_correlation_bytes=settings.limits.max_correlation_bytes,
                ),
                max_topic_bytes=settings.limits.max_topic_bytes,
                max_topic_levels=settings.limits.max_topic_levels,
                reply_spaces=settings.reply_space_templates(),
                device_rate=settings.limits.device_rate,
                device_burst=settings.limits.device_burst,
                device_concurrency=settings.device_concurrency(),
                max_share_waiting=settings.limits.max_queue,
            ),
            self.filters,
            self.durable,
        )
        self.reloads = ReloadStats()  # bumped by gateway.ops.reload, read by gateway.ops.metrics
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    @property
    def stats(self) -> DispatchStats:
        """The dispatcher's counters (what ``/metrics`` reports per function)."""
        return self.dispatcher.stats

    async def prepare_functions(self) -> tuple[Registry, dict[str, Executor]]:
        """A registry of the function modules as they are imported now, and started executors for it (whose
        workers import the modules afresh); nothing is switched yet. Raises what a module's import raises."""
        registry = Registry.from_modules(self.settings.functions)
        executors = build_executors(self.settings, registry, reimport=True, on_fatal=self.fail)
        try:
            for executor in executors.values():
                await executor.start()
        except BaseException:
            for executor in executors.values():
                await executor.stop(0)
            raise
        return registry, executors

    def switch_functions(self, registry: Registry, executors: dict[str, Executor]) -> tuple[Registry, list[str]]:
        """Serve ``registry`` on ``executors`` from the next request on, in one step on the loop: the previous
        registry (whose executors the caller retires) and the topic filters it adds (to subscribe to)."""
        previous = self.registry
        added = [f for f in subscriptions(registry, self.namespace) if f not in self.filters]
        filters = [*self.filters, *added]
        self.dispatcher.swap(registry, executors, filters)
        self.registry, self.executors, self.filters = registry, executors, filters
        return previous, added

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (safe from a signal handler)."""
        self._stop.set()

    def fail(self, reason: str) -> None:
        """An executor cannot go on: stop, and make :func:`serve` raise :class:`GatewayFailed`."""
        if self.failure is None:
            self.failure = reason
        self._stop.set()

    async def run(self) -> None:
        """Start executors, connect, subscribe and serve until a stop is requested."""
        for executor in self.executors.values():
            await executor.start()
        try:
            if self.durable is not None:
                # Before connecting: what an earlier run stored goes first, ahead of new requests.
                for message, seq, started in self.durable.start():
                    self.dispatcher.run_stored(message, seq, started=started)
            self.transport.set_handler(self.dispatcher.handle)
            await self.transport.connect(self.settings.connect_timeout)
            group = self.settings.share_group
            await self.transport.subscribe([shared_filter(f, group) for f in self.filters], qos=1)
            log.info(
                "serving %d functions on %s (executor %s, transport %s, MQTT %s)",
                len(self.registry.specs),
                self.settings.broker,
                self.settings.executor,
                self.settings.transport_kind,
                self.settings.mqtt_version,
            )
            self.ready.set()
            await self._stop.wait()
            await self._shutdown()
        finally:
            for executor in self.executors.values():
                await executor.stop(0)
            if self.durable is not None:
                self.durable.stop()

    async def _shutdown(self) -> None:
        """Take no new requests, let in-flight calls finish (or get ``unavailable``), then disconnect.

        Requests arriving from now on are left unacknowledged in the transport's
        queue, so the broker delivers them again to the next run.
        """
        self.ready.clear()
        log.info("stopping: finishing in-flight calls (grace %.1f s)", self.settings.shutdown_grace)
        self.transport.set_handler(None)
        for executor in self.executors.values():
            await executor.stop(self.settings.shutdown_grace)
        await asyncio.sleep(0)  # let the futures' callbacks publish their replies
        if self.durable is not None:
            try:  # replies are published after their commit, which may be on the commit thread
                await asyncio.wait_for(self.durable.settle(), timeout=5.0)
            except TimeoutError:
                log.warning("the durable queue's last commit took over 5 s; its replies go out on the next start")
        await self.transport.drain(timeout=2.0)
        await self.transport.close()
        log.info("stopped")


def open_durable_queue(settings: Settings, transport: Transport) -> DurableQueue | None:
    """The durable queue of this gateway (``None`` when turned off)."""
    durable = settings.durable
    if not durable.enabled:
        return None
    path = durable.file_for(settings.client_id)
    store = RequestStore(path, durable.synchronous)
    return DurableQueue(
        store,
        transport,
        durable.result_ttl,
        durable.max_results,
        max_results_bytes=durable.max_results_bytes,
        max_started=durable.max_started,
        max_waiting=10 * settings.limits.max_queue,  # small entries; a restart's backlog arrives at once
    )


async def serve(settings: Settings, registry: Registry, reload: bool = False) -> None:
    """Run a gateway until SIGINT or SIGTERM (with its operations endpoint and function reloading)."""
    from gateway.ops.lifecycle import operations

    gateway = Gateway(settings, registry)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, gateway.request_stop)
    async with operations(gateway, watch=reload):
        await gateway.run()
    if gateway.failure is not None:
        raise GatewayFailed(gateway.failure)
