"""The program Mesos runs on agents: warm workers, the channel to the gateway, pymesos's executor driver.

Started by the bundle's ``boot.py`` (``python -I -S``) in the sandbox, with its
configuration in ``ROOST_EXECUTOR``. It subscribes to its agent through
pymesos's ``MesosExecutorDriver``; when its pool task arrives it starts the warm
workers (a :class:`~gateway.executors.local.executor.LocalExecutor`: the function modules
imported once in a fork server, workers forked from it), connects back to the
gateway (:class:`~gateway.executors.mesos.call_server.CallServer`), and only
then reports ``TASK_RUNNING``. Calls never touch Mesos.

Ending, by cause:

* ``KILL`` of the task (the gateway stopping, or a newer gateway cleaning up):
  say ``DRAIN``, let running calls finish within the grace period, stop the
  workers, report ``TASK_KILLED``, exit 0.
* ``SHUTDOWN`` from the agent: ``TASK_KILLED`` is sent at once from the callback
  (pymesos stops its driver right after it, and SIGKILLs the process group when
  the grace period ends), then the same drain.
* The gateway unreachable for ``orphan_timeout``, or refusing us: ``TASK_FAILED``, exit 1.
* The workers cannot start (a function module fails to import): ``TASK_FAILED``
  with the error, exit 1.
* pymesos's driver dying by itself: logged, exit 1.

Callbacks only hand off to the event loop; status updates (blocking HTTP in
pymesos) are sent from a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import threading
from typing import Any

import pymesos
from pymesos.utils import parse_duration

from gateway.executors.local.executor import LocalExecutor
from gateway.executors.mesos.call_server import CallServer
from gateway.executors.mesos.tasks import CONFIG_VARIABLE, ExecutorConfig
from gateway.registry import FunctionSpec, routers_of

log = logging.getLogger("roost.executor")

MAX_LOCAL_QUEUE = 1 << 20  # the gateway bounds what it sends; the local queue never refuses it
DEFAULT_RECOVERY = 15 * 60.0


class _Callbacks(pymesos.Executor):  # type: ignore[misc]  # pymesos is untyped
    """pymesos callbacks reduced to hand-offs; none may raise."""

    def __init__(self, loop: asyncio.AbstractEventLoop, program: WarmExecutor) -> None:
        self._loop = loop
        self._program = program

    def _handoff(self, method: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(method, *args)
        except RuntimeError:  # the loop is closed: we are exiting
            pass
        except Exception:
            log.exception("cannot hand a Mesos event to the event loop")

    def registered(self, driver: Any, executor_info: Any, framework_info: Any, agent_info: Any) -> None:
        """Subscribed to the agent."""
        log.info("registered with agent %s", agent_info.get("hostname", "?"))

    def launchTask(self, driver: Any, task: Any) -> None:
        """The pool task."""
        self._handoff(self._program.launch, str(task["task_id"]["value"]))

    def killTask(self, driver: Any, task_id: Any) -> None:
        """The gateway wants the executor gone."""
        self._handoff(self._program.kill, str(task_id.get("value")))

    def shutdown(self, driver: Any) -> None:
        """Report the task killed now: pymesos stops the driver as soon as this returns."""
        self._program.shutting_down = True
        try:
            if self._program.task_id is not None:
                driver.sendStatusUpdate(self._program.status("TASK_KILLED", "the agent shut the executor down"))
        except Exception as exc:
            log.warning("could not report the task killed: %s", exc)
        self._handoff(self._program.kill, self._program.task_id or "")

    def error(self, driver: Any, message: Any) -> None:
        """Logged."""
        log.error("the agent sent an error: %s", message)

    def frameworkMessage(self, driver: Any, data: Any) -> None:
        """Not used: calls travel on the direct channel."""


class WarmExecutor:
    """One executor's life: see the module docstring."""

    def __init__(self, config: ExecutorConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._loop = loop
        env = os.environ
        self._grace = parse_duration(env.get("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"))
        recovery = env.get("MESOS_RECOVERY_TIMEOUT")
        # pymesos ignores MESOS_RECOVERY_TIMEOUT and would retry a lost agent for a day (quirk 18).
        timeout = parse_duration(recovery) if recovery else DEFAULT_RECOVERY
        self._driver = pymesos.MesosExecutorDriver(_Callbacks(loop, self), use_addict=False, timeout=timeout)
        self._local = LocalExecutor(config.functions, config.workers, MAX_LOCAL_QUEUE, config.max_result_bytes)
        self._server: CallServer | None = None
        self._stopping = False
        self.shutting_down = False  # set from pymesos's thread: its driver is about to stop
        self.task_id: str | None = None
        self.exit_code: asyncio.Future[int] = loop.create_future()

    async def run(self) -> int:
        """Start the driver and serve until the task ends; the exit code."""
        self._driver.start()
        threading.Thread(target=self._supervise, name="roost-executor-supervisor", daemon=True).start()
        code = await self.exit_code
        self._driver.stop()
        await asyncio.to_thread(self._driver.join)
        return code

    def status(self, state: str, message: str) -> dict[str, Any]:
        """A TaskStatus for the pool task."""
        return {"task_id": {"value": self.task_id}, "state": state, "message": message}

    def launch(self, task_id: str) -> None:
        """Start serving the pool task (one per executor)."""
        if self.task_id is not None:
            log.error("a second task %s was launched on this executor; refusing it", task_id)
            return
        self.task_id = task_id
        self._loop.create_task(self._serve())

    def kill(self, task_id: str) -> None:
        """Drain and end with ``TASK_KILLED``."""
        if not self._stopping:
            self._stopping = True
            self._loop.create_task(self._drain())

    async def _serve(self) -> None:
        config = self._config
        try:
            await self._local.start()
            specs: dict[str, FunctionSpec] = {}
            for reference in config.functions:
                specs.update((spec.key, spec) for spec in routers_of(reference))
        except Exception as exc:
            log.error("the workers could not start: %s", exc)
            await self._update("TASK_FAILED", f"the workers could not start: {exc}")
            await self._local.stop(0)
            self._finish(1)
            return
        hello = {
            "executor_id": os.environ.get("MESOS_EXECUTOR_ID", ""),
            "token": config.token,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "agent_id": os.environ.get("MESOS_SLAVE_ID", ""),
            "workers": config.workers,
        }
        self._server = CallServer(config, self._local, specs, hello)
        serving = self._loop.create_task(self._server.run())
        ticking = self._loop.create_task(self._tick())
        welcomed = self._loop.create_task(self._server.welcomed.wait())
        await asyncio.wait([serving, welcomed], return_when=asyncio.FIRST_COMPLETED)
        if welcomed.done():
            log.info("%d workers warm; connected to the gateway at %s", config.workers, config.channel)
            await self._update("TASK_RUNNING", f"{config.workers} workers warm")
        why = await serving
        ticking.cancel()
        welcomed.cancel()
        if not self._stopping:
            self._stopping = True
            log.error("%s; ending the task", why)
            await self._local.stop(0)
            await self._update("TASK_FAILED", why)
            self._finish(1)

    async def _drain(self) -> None:
        log.info("stopping: finishing running calls (grace %.1f s)", self._grace / 2)
        if self._server is not None:
            self._server.drain()
        # Half the grace period: the other half is for reporting and exiting before the agent's SIGKILL.
        await self._local.stop(self._grace / 2)
        if self._server is not None:
            await asyncio.sleep(0)  # let the last results' callbacks queue their frames
            await self._server.close()
        if not self.shutting_down and self.task_id is not None:
            await self._update("TASK_KILLED", "killed by the gateway")
        self._finish(0)

    async def _tick(self) -> None:
        while self._server is not None:
            self._server.tick()
            await asyncio.sleep(self._config.heartbeat)  # the heartbeat period, not synchronisation

    async def _update(self, state: str, message: str) -> None:
        if self.shutting_down or self.task_id is None:
            return
        try:
            await asyncio.to_thread(self._driver.sendStatusUpdate, self.status(state, message))
        except Exception as exc:  # not subscribed, or the agent refused it: nothing more to do here
            log.warning("could not send %s: %s", state, exc)

    def _finish(self, code: int) -> None:
        if not self.exit_code.done():
            self.exit_code.set_result(code)

    def _supervise(self) -> None:
        self._driver.join()
        if not self.exit_code.done() and not self.shutting_down:
            log.critical("the Mesos executor driver stopped unexpectedly")
            self._loop.call_soon_threadsafe(self._finish, 1)


def main() -> int:
    """Entry point (called by the bundle's ``boot.py``)."""
    try:
        config = ExecutorConfig.from_json(os.environ[CONFIG_VARIABLE])
    except (KeyError, ValueError, TypeError) as exc:
        sys.stderr.write(f"roost executor: no valid {CONFIG_VARIABLE} in the environment: {exc}\n")
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    pymesos_log = logging.getLogger("pymesos")  # its own stderr handler would print every line twice
    for handler in list(pymesos_log.handlers):
        pymesos_log.removeHandler(handler)
    log.info("roost executor %s starting: %s", os.environ.get("MESOS_EXECUTOR_ID"), json.dumps(config.functions))
    return asyncio.run(_main(config))


async def _main(config: ExecutorConfig) -> int:
    program = WarmExecutor(config, asyncio.get_running_loop())
    return await program.run()
