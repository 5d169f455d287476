"""Reload changed function modules into a running gateway, for development (``roost run --reload``, SIGHUP).

A reload imports the configured function modules again (``importlib.reload``:
the modules listed in ``functions``, not what they import), builds a new
registry and new executors, and starts them. Only when all of that worked does
the dispatcher switch to them, in one step on the event loop: requests from
then on run the new code, calls already submitted finish on the old executors,
which are stopped with a grace of the longest function timeout so none of them
is cut short. A module that fails to import leaves the old functions serving
and logs why. New topic filters are subscribed; filters of functions that went
away stay subscribed until a restart (their requests are answered ``not_found``).

The watcher polls the modules' files (mtime and size) twice a second: cheap
for a handful of files and free of a file-notification dependency.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING

from gateway.topics import shared_filter

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.executors.base import Executor

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between looks at the module files


class FunctionReloader:
    """Reloads the gateway's function modules on request or when their files change."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Task[bool]] = set()
        self._seen = self._snapshot()

    def _module_names(self) -> list[str]:
        return [reference.partition(":")[0] for reference in self._gateway.settings.functions]

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        """(mtime, size) of each function module's file."""
        seen: dict[str, tuple[int, int]] = {}
        for name in self._module_names():
            path = getattr(sys.modules.get(name), "__file__", None)
            if path is None:
                continue
            try:
                stat = os.stat(path)
            except OSError:
                continue
            seen[path] = (stat.st_mtime_ns, stat.st_size)
        return seen

    def changed(self) -> bool:
        """Whether a module file changed since the last reload (or the start)."""
        return self._snapshot() != self._seen

    async def watch(self) -> None:
        """Reload whenever a module file changes; runs until cancelled."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            if self.changed():
                await self.reload()

    def request(self) -> None:
        """Reload soon (a signal handler calls this)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def reload(self) -> bool:
        """Reload the function modules; ``False`` (and the old functions still serving) when it failed."""
        async with self._lock:
            gateway = self._gateway
            if not gateway.ready.is_set():
                log.warning("reload skipped: the gateway is not serving")
                gateway.reloads.count("skipped")
                return False
            if "mesos" in gateway.executors:
                log.warning("reload skipped: not supported with the mesos executor")
                gateway.reloads.count("skipped")
                return False
            self._seen = self._snapshot()
            log.info("reloading function modules %s", ", ".join(self._module_names()))
            executors: dict[str, Executor] = {}
            try:
                for name in self._module_names():
                    module = sys.modules.get(name)
                    if module is not None:
                        importlib.reload(module)
                    else:
                        importlib.import_module(name)
                registry, executors = await gateway.prepare_functions()
            except Exception as exc:  # a module's import can raise anything; the old code keeps serving
                log.error("reload failed, still serving the previous functions: %s: %s", type(exc).__name__, exc)
                gateway.reloads.count("failed")
                return False
            if not gateway.ready.is_set():  # stopped while the new executors started
                for executor in executors.values():
                    await executor.stop(0)
                gateway.reloads.count("skipped")
                return False
            old_executors = gateway.executors
            old_registry, added = gateway.switch_functions(registry, executors)
            gateway.reloads.count("reloaded")
            log.info("reloaded: %d functions, %d new topic filters", len(registry.specs), len(added))
            grace = max([gateway.settings.limits.call_timeout, *(s.options.timeout or 0 for s in old_registry.specs)])
            task = asyncio.get_running_loop().create_task(self._retire(old_executors, grace + 1.0))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            if added:
                group = gateway.settings.share_group
                await gateway.transport.subscribe([shared_filter(f, group) for f in added], qos=1)
            return True

    async def _retire(self, executors: dict[str, Executor], grace: float) -> None:
        """Let the old executors finish what they run, then stop them."""
        for executor in executors.values():
            await executor.stop(grace)

    async def close(self) -> None:
        """Cancel pending reloads and wait for the old executors to finish."""
        for task in list(self._requests):
            task.cancel()
        if self._requests:
            await asyncio.wait(set(self._requests))
        if self._retiring:
            await asyncio.wait(set(self._retiring))
