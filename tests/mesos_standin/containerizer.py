"""Running a container to its end: fetch, start, registration timeout, wait.

The role of the Mesos containerizer for the stand-in's agents: it returns the container's wait
status (-1 when it never started) and leaves what that means for tasks to the agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.mesos_standin.command_executor import CommandTask
from tests.mesos_standin.containers import command_line
from tests.mesos_standin.executor_run import ExecutorRun, Phase
from tests.mesos_standin.fetcher import FetchError, fetch_all
from tests.mesos_standin.protocol import Json

Environment = Callable[[ExecutorRun, Json], dict[str, str]]
"""Builds the environment of a run's process from its CommandInfo."""


def _launch_failed(run: ExecutorRun, error: Exception) -> int:
    run.exit_reason = ("REASON_CONTAINER_LAUNCH_FAILED", f"Failed to launch container: {error}")
    return -1


async def run_executor(run: ExecutorRun, command: Json, environment: Environment, registration_timeout: float) -> int:
    """Fetch the URIs, start the executor, arm its registration timeout, wait for it to end."""
    try:
        await fetch_all(command.get("uris"), run.container.sandbox)
        if run.phase is Phase.LAUNCHING:
            argv, program = command_line(command)
            await run.container.start(argv, program, environment(run, command))
    except (FetchError, OSError) as error:
        return _launch_failed(run, error)
    if run.container.pid is None:  # destroyed while fetching
        return -1
    if run.phase is Phase.LAUNCHING:
        run.phase = Phase.RUNNING
        loop = asyncio.get_running_loop()
        run.registration_timer = loop.call_later(registration_timeout, _registration_timeout, run)
    else:  # shut down while starting
        run.container.destroy()
    return await run.container.wait()


def _registration_timeout(run: ExecutorRun) -> None:
    if not run.subscribed and run.alive:
        run.exit_reason = ("REASON_EXECUTOR_REGISTRATION_TIMEOUT", "Executor did not register in time")
        run.phase = Phase.TERMINATING
        run.container.destroy()


async def run_command_task(run: ExecutorRun, task: CommandTask, command: Json, environment: Environment) -> int:
    """Fetch the task's URIs and run its command to the end (the built-in command executor)."""
    try:
        await fetch_all(command.get("uris"), run.container.sandbox)
        run.phase = Phase.RUNNING
        return await task.run(environment(run, command))
    except (FetchError, OSError) as error:
        return _launch_failed(run, error)
