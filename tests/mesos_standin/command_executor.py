"""The built-in command executor, run inside the agent for tasks with ``TaskInfo.command``.

Real Mesos starts a separate ``mesos-executor`` process that runs the command; the stand-in runs
the command directly as the container's process and sends the updates that executor would:
``TASK_STARTING``, ``TASK_RUNNING``, then ``TASK_FINISHED`` (exit 0), ``TASK_FAILED`` (otherwise)
or ``TASK_KILLED`` (after a kill: SIGTERM to the process group, SIGKILL after the kill policy's
grace period, default 3 s). All of them are reliable (uuid, ``SOURCE_EXECUTOR``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from tests.mesos_standin.containers import Container, command_line
from tests.mesos_standin.protocol import Json, nanoseconds, task_status

DEFAULT_KILL_GRACE = 3.0


def command_executor_info(task: Json) -> Json:
    """The ExecutorInfo an agent generates for a command task (id = task id, 0.1 cpus, 32 MB)."""
    task_id = str(task["task_id"]["value"])
    resources = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}, "role": "*"},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}, "role": "*"},
    ]
    return {
        "executor_id": {"value": task_id},
        "name": f"Command Executor (Task: {task_id})",
        "source": task_id,
        "command": task.get("command", {}),
        "resources": resources,
    }


class CommandTask:
    """One command task and its process."""

    def __init__(self, task: Json, agent_id: str, container: Container, send_update: Callable[[Json], None]) -> None:
        self.task = task
        self.task_id = str(task["task_id"]["value"])
        self._agent_id = agent_id
        self._container = container
        self._send_update = send_update
        self._killed = False
        self._kill_timer: asyncio.TimerHandle | None = None

    def _update(self, state: str, message: str | None = None, reason: str | None = None) -> None:
        status = task_status(
            self.task_id,
            state,
            source="SOURCE_EXECUTOR",
            message=message,
            reason=reason,
            agent_id=self._agent_id,
            executor_id=self.task_id,
            reliable=True,
        )
        self._send_update(status)

    async def run(self, env: dict[str, str]) -> int:
        """Run the command to its end; returns the wait status. ``OSError`` if it cannot start."""
        self._update("TASK_STARTING")
        argv, program = command_line(self.task.get("command", {}))
        await self._container.start(argv, program, env)
        if self._killed:  # a kill arrived while starting
            self._container.signal_group(signal.SIGTERM)
        else:
            self._update("TASK_RUNNING")
        status = await self._container.wait()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if self._killed:
            self._update("TASK_KILLED", "Command terminated by a kill")
        elif status == 0:
            self._update("TASK_FINISHED", "Command exited with status 0")
        elif status & 0x7F:
            self._update("TASK_FAILED", f"Command terminated with signal {status & 0x7F}")
        else:
            self._update("TASK_FAILED", f"Command exited with status {status >> 8}")
        return status

    def kill(self, kill_policy: object) -> None:
        """SIGTERM the command's process group now and SIGKILL it after the grace period."""
        if self._killed:
            return
        self._killed = True
        grace = nanoseconds(
            kill_policy.get("grace_period") if isinstance(kill_policy, dict) else None, DEFAULT_KILL_GRACE
        )
        self._container.signal_group(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        self._kill_timer = loop.call_later(grace, self._container.signal_group, signal.SIGKILL)
