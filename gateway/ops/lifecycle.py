"""What runs beside a serving gateway for its operators: the HTTP endpoint and function reloading.

:func:`operations` wraps :meth:`Gateway.run <gateway.app.Gateway.run>`: the
endpoint answers ``/healthz`` before the broker is even reached (a supervisor
sees a live process that is not ready yet), SIGHUP reloads the function modules,
and with ``watch`` so does a change to one of their files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gateway.errors import ConfigError
from gateway.ops.http import OperationsEndpoint
from gateway.ops.reload import FunctionReloader

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def operations(gateway: Gateway, watch: bool = False) -> AsyncIterator[FunctionReloader]:
    """Run the operations endpoint (when enabled) and the reloader around the gateway."""
    endpoint: OperationsEndpoint | None = None
    metrics = gateway.settings.metrics
    if metrics.enabled:
        endpoint = OperationsEndpoint(gateway, metrics.host, metrics.port)
        try:
            await endpoint.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {metrics.host}:{metrics.port} for metrics: {exc}") from None
    reloader = FunctionReloader(gateway)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    watcher = loop.create_task(_watch(gateway, reloader), name="roost-reload-watch") if watch else None
    try:
        yield reloader
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await reloader.close()
        if endpoint is not None:
            await endpoint.close()


async def _watch(gateway: Gateway, reloader: FunctionReloader) -> None:
    await gateway.ready.wait()
    log.info("watching the function modules for changes (--reload)")
    await reloader.watch()
