"""Wires a transport, a registry and executors together and runs them until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from gateway.config import Settings
from gateway.dispatch import Dispatcher, DispatchOptions
from gateway.executors.base import Executor
from gateway.executors.inline import InlineExecutor
from gateway.registry import Registry
from gateway.topics import TopicTemplate, filter_covers
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


def build_executors(settings: Settings, registry: Registry) -> dict[str, Executor]:
    """The executors the registered functions need (the default one always)."""
    needed = {settings.executor}
    needed.update(spec.executor for spec in registry.specs if spec.executor != "default")
    executors: dict[str, Executor] = {}
    limits = settings.limits
    if "inline" in needed:
        executors["inline"] = InlineExecutor(limits.max_queue, limits.max_result_bytes)
    if "local" in needed:
        from gateway.executors.local import LocalExecutor

        executors["local"] = LocalExecutor(
            settings.functions, settings.workers, limits.max_queue, limits.max_result_bytes
        )
    return executors


class Gateway:
    """One running gateway: connect, subscribe, serve until :meth:`request_stop`."""

    def __init__(self, settings: Settings, registry: Registry, transport: Transport | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.transport = transport or create_transport(settings.transport_kind, ConnectOptions.from_settings(settings))
        self.executors = build_executors(settings, registry)
        self.namespace = tuple(TopicTemplate.parse(t) for t in settings.namespace)
        self.filters = subscriptions(registry, self.namespace)
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
            ),
            self.filters,
        )
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Start executors, connect, subscribe and serve until a stop is requested."""
        for executor in self.executors.values():
            await executor.start()
        try:
            self.transport.set_handler(self.dispatcher.handle)
            await self.transport.connect(self.settings.connect_timeout)
            await self.transport.subscribe(self.filters, qos=1)
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

    async def _shutdown(self) -> None:
        """Take no new requests, let in-flight calls finish (or get ``unavailable``), then disconnect.

        Requests arriving from now on are left unacknowledged in the transport's
        queue, so the broker delivers them again to the next run.
        """
        log.info("stopping: finishing in-flight calls (grace %.1f s)", self.settings.shutdown_grace)
        self.transport.set_handler(None)
        for executor in self.executors.values():
            await executor.stop(self.settings.shutdown_grace)
        await asyncio.sleep(0)  # let the futures' callbacks publish their replies
        await self.transport.drain(timeout=2.0)
        await self.transport.close()
        log.info("stopped")


async def serve(settings: Settings, registry: Registry) -> None:
    """Run a gateway until SIGINT or SIGTERM."""
    gateway = Gateway(settings, registry)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, gateway.request_stop)
    await gateway.run()
