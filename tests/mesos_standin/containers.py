"""Executor processes as a Mesos agent runs them: sandbox, clean environment, own session.

Like the Mesos containerizer's POSIX launcher: the process starts in a new session (``setsid``,
so pymesos's ``os.killpg(0, SIGKILL)`` on shutdown only hits the executor's own group), its
working directory is its sandbox, stdout/stderr go to files there, and destroying the container
kills the whole process group. The environment is built from scratch: the Mesos variables, a
basic ``PATH`` and ``CommandInfo.environment``, never the stand-in's own environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.mesos_standin.protocol import Json, format_duration

BASIC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The only inherited-looking variable an executor gets (Mesos's default ``PATH`` for tasks)."""

RECOVERY_TIMEOUT = "15mins"
SUBSCRIPTION_BACKOFF_MAX = "2secs"


@dataclass(frozen=True)
class AgentAddress:
    """How an executor reaches its agent."""

    agent_id: str
    ip: str
    port: int


def sandbox_path(work_dir: Path, agent_id: str, framework_id: str, executor_id: str, container_id: str) -> Path:
    """``<work_dir>/slaves/<agent>/frameworks/<fw>/executors/<exec>/runs/<container>``, as Mesos lays it out."""
    return (
        work_dir / "slaves" / agent_id / "frameworks" / framework_id / "executors" / executor_id / "runs" / container_id
    )


def make_sandbox(path: Path) -> Path:
    """Create the sandbox and point ``runs/latest`` at it."""
    path.mkdir(parents=True, exist_ok=True)
    latest = path.parent / "latest"
    with contextlib.suppress(FileNotFoundError):
        latest.unlink()
    latest.symlink_to(path.name)
    return path


def environment(
    agent: AgentAddress,
    framework_id: str,
    executor_id: str,
    sandbox: Path,
    checkpoint: bool,
    shutdown_grace: float,
    command: Json,
) -> dict[str, str]:
    """The executor's whole environment (MESOS_API.md 5.5); ``CommandInfo.environment`` is applied last."""
    env = {
        "PATH": BASIC_PATH,
        "MESOS_FRAMEWORK_ID": framework_id,
        "MESOS_EXECUTOR_ID": executor_id,
        "MESOS_AGENT_ENDPOINT": f"{agent.ip}:{agent.port}",
        "MESOS_DIRECTORY": str(sandbox),
        "MESOS_SANDBOX": str(sandbox),
        "MESOS_SLAVE_ID": agent.agent_id,
        "MESOS_SLAVE_PID": f"slave(1)@{agent.ip}:{agent.port}",
        "MESOS_CHECKPOINT": "1" if checkpoint else "0",
        "MESOS_HTTP_COMMAND_EXECUTOR": "0",
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": format_duration(shutdown_grace),
        "LIBPROCESS_PORT": "0",
        "LIBPROCESS_IP": agent.ip,
    }
    if checkpoint:
        env["MESOS_RECOVERY_TIMEOUT"] = RECOVERY_TIMEOUT
        env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] = SUBSCRIPTION_BACKOFF_MAX
    variables = command.get("environment", {}).get("variables", [])
    for variable in variables if isinstance(variables, list) else []:
        if isinstance(variable, dict) and isinstance(variable.get("name"), str):
            value = variable.get("value", "")
            env[variable["name"]] = value if isinstance(value, str) else str(value)
    return env


def command_line(command: Json) -> tuple[list[str], str | None]:
    """``(argv, program)`` for a CommandInfo: ``/bin/sh -c value`` by default, exec of ``value`` when not shell."""
    value = str(command.get("value", ""))
    if command.get("shell", True):
        return ["/bin/sh", "-c", value], None
    arguments = [str(a) for a in command.get("arguments", [])]
    return (arguments or [value]), value


def wait_status(returncode: int) -> int:
    """A POSIX wait status (what Mesos puts in ``FAILURE.status``) from a Popen return code."""
    return -returncode if returncode < 0 else returncode << 8


class Container:
    """One process run in its own session and process group, output captured in its sandbox."""

    def __init__(self, container_id: str, sandbox: Path, pid_dir: Path) -> None:
        self.id = container_id
        self.sandbox = sandbox
        self._pid_dir = pid_dir
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The leader's pid (also the process group id), once started."""
        return self._process.pid if self._process is not None else None

    async def start(self, argv: list[str], program: str | None, env: dict[str, str]) -> None:
        """Start the process (``OSError`` when it cannot be executed)."""
        with open(self.sandbox / "stdout", "ab") as out, open(self.sandbox / "stderr", "ab") as err:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                executable=program,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.sandbox,
                env=env,
                start_new_session=True,
            )
        # A pid file per live group lets a test harness clean up even if the stand-in is SIGKILLed.
        self._pid_dir.mkdir(parents=True, exist_ok=True)
        (self._pid_dir / str(self._process.pid)).write_text(str(self.sandbox))

    async def wait(self) -> int:
        """Wait for the leader to exit; returns its wait status."""
        assert self._process is not None
        returncode = await self._process.wait()
        return wait_status(returncode)

    def signal_group(self, signum: int) -> None:
        """Send a signal to the whole process group (no-op once it is gone)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def destroy(self) -> None:
        """Kill every process of the group, as destroying a Mesos container does."""
        self.signal_group(signal.SIGKILL)

    def forget(self) -> None:
        """Drop the pid file once the leader is reaped and the group killed."""
        if self._process is not None:
            with contextlib.suppress(FileNotFoundError):
                (self._pid_dir / str(self._process.pid)).unlink()
