"""A tiny pymesos executor the stand-in tests ship to agents through the fetcher.

Self-contained on purpose (standard library and pymesos only): it runs in the clean environment an
agent gives executors, without the test tree on its path. What it does:

* every launched task gets ``TASK_RUNNING`` whose ``data`` (base64 JSON) reports the process:
  pid, process group, session, cwd, the whole environment, and the pid of a child when the task's
  ``data`` asks for ``{"spawn_child": true}``; ``{"finish": true}`` then sends ``TASK_FINISHED``;
  ``{"exit": N}`` makes the executor exit with status N right after ``TASK_RUNNING``;
* task groups: each task as above;
* kill: ``TASK_KILLED``; shutdown: ``TASK_KILLED`` for every live task;
* framework messages are echoed back unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from typing import Any

from pymesos import Executor, MesosExecutorDriver, encode_data


def _decode(data: object) -> dict[str, Any]:
    if not isinstance(data, str) or not data:
        return {}
    decoded = json.loads(base64.b64decode(data))
    return decoded if isinstance(decoded, dict) else {}


class EchoExecutor(Executor):  # type: ignore[misc]  # pymesos is untyped
    """Reports, echoes and obeys the instructions in each task's data."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.children: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()

    def _status(self, driver: Any, task_id: dict[str, Any], state: str, data: dict[str, Any] | None = None) -> None:
        update: dict[str, Any] = {"task_id": task_id, "state": state}
        if data is not None:
            update["data"] = encode_data(json.dumps(data).encode())
        driver.sendStatusUpdate(update)

    def launchTask(self, driver: Any, task: Any) -> None:
        """Answer TASK_RUNNING with a report about this process; obey the task's instructions."""
        order = _decode(task.get("data"))
        report: dict[str, Any] = {
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
            "sid": os.getsid(0),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "python": sys.executable,
        }
        if order.get("spawn_child"):
            child = subprocess.Popen(["sleep", "300"])  # stays in our process group
            self.children.append(child)
            report["child_pid"] = child.pid
        with self.lock:
            self.live[task["task_id"]["value"]] = task["task_id"]
        self._status(driver, task["task_id"], "TASK_RUNNING", report)
        if order.get("finish"):
            with self.lock:
                self.live.pop(task["task_id"]["value"], None)
            self._status(driver, task["task_id"], "TASK_FINISHED")
        if "exit" in order:
            os._exit(int(order["exit"]))

    def launchTaskGroup(self, driver: Any, tasks: Any) -> None:
        """Each task of a group is handled like a single launch."""
        for task in tasks:
            self.launchTask(driver, task)

    def killTask(self, driver: Any, task_id: Any) -> None:
        """Kill means done: TASK_KILLED."""
        with self.lock:
            self.live.pop(task_id["value"], None)
        self._status(driver, task_id, "TASK_KILLED")

    def frameworkMessage(self, driver: Any, message: Any) -> None:
        """Echo the message back to the scheduler unchanged."""
        driver.sendFrameworkMessage(message)

    def shutdown(self, driver: Any) -> None:
        """Every live task ends as TASK_KILLED."""
        with self.lock:
            live, self.live = list(self.live.values()), {}
        for task_id in live:
            self._status(driver, task_id, "TASK_KILLED")


def main() -> int:
    """Run the driver until shutdown."""
    driver = MesosExecutorDriver(EchoExecutor())
    driver.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
