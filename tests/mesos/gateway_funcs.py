"""Functions for the mesos executor's tests: they report where and how they ran.

Their timeouts are stretched by the suite's timeout scale (the gateway runs with the test's
environment; the bundle carries ``tests.support.timeouts`` to the agents).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

import gateway
from gateway.registry import Router
from tests.support.timeouts import scaled

router = Router()


@router.function("devices/{device_id}/whereami")
def whereami() -> dict[str, object]:
    """The process, Mesos executor, sandbox and Python environment this call ran in."""
    env = os.environ
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "executor_id": env.get("MESOS_EXECUTOR_ID"),
        "agent_id": env.get("MESOS_SLAVE_ID"),
        "sandbox": env.get("MESOS_SANDBOX"),
        "virtual_env": env.get("VIRTUAL_ENV"),
        "pythonpath": env.get("PYTHONPATH"),
        "path": env.get("PATH"),
        "module": __file__,
        "gateway": gateway.__file__,
        "pydantic": pydantic.__file__,
        "sys_path": sys.path,
        "isolated": sys.flags.isolated,
        "no_site": sys.flags.no_site,
        "executable": sys.executable,
    }


def _hold(gate: str, limit: float) -> None:
    """Wait until the file ``gate`` exists: the test opens it when it is ready for the call to end.

    A call held for exactly as long as the test wants, not for a duration raced against the gateway's
    timers or the test's own steps. Bounded: after ``limit`` seconds (the test's scaled bound) the call
    fails, so a test whose gate never opens fails instead of hanging.
    """
    deadline = time.monotonic() + limit
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate {gate} stayed closed for {limit:g} s")
        time.sleep(0.01)  # a poll interval inside a bounded wait


def _note_executor(seconds: float, mark: str, gate: str, limit: float) -> str | None:
    """Note the Mesos executor running the call in the file ``mark`` (if given), wait for the ``gate`` (if
    given, see :func:`_hold`), sleep ``seconds``, name the executor."""
    executor = os.environ.get("MESOS_EXECUTOR_ID")
    if mark:
        Path(mark).write_text(str(executor))
    if gate:
        _hold(gate, limit)
    time.sleep(seconds)
    return executor


@router.function("devices/{device_id}/mesos_again", idempotent=True, timeout=scaled(10.0))
def mesos_again(seconds: float = 0.0, mark: str = "", gate: str = "", limit: float = 0.0) -> str | None:
    """:func:`_note_executor`, safe to rerun."""
    return _note_executor(seconds, mark, gate, limit)


@router.function("devices/{device_id}/mesos_once", timeout=scaled(10.0))
def mesos_once(seconds: float = 0.0, mark: str = "", gate: str = "", limit: float = 0.0) -> str | None:
    """The same, for a function that must not run twice."""
    return _note_executor(seconds, mark, gate, limit)


@router.function("devices/{device_id}/mesos_gated", timeout=600.0)
def mesos_gated(gate: str, limit: float) -> str | None:
    """Hold a worker at the ``gate`` (:func:`_hold`), then name the Mesos executor; its timeout is long, for
    calls the test holds while the cluster does something slow (an executor starting)."""
    _hold(gate, limit)
    return os.environ.get("MESOS_EXECUTOR_ID")


def _raise_in_callbacks(spec: str) -> None:
    """Test-only fault, in the gateway's process: the first ``N`` hand-offs of event ``E`` raise (``E:N``)."""
    from gateway.executors.mesos.scheduler_callbacks import SchedulerCallbacks

    event, _, count = spec.partition(":")
    left = [int(count or 1)]
    handoff = SchedulerCallbacks._handoff

    def failing(self: Any, method: Callable[..., None], *args: Any) -> None:
        if method.__name__ == event and left[0] > 0:
            left[0] -= 1
            raise RuntimeError(f"test fault: the {event} callback raises")
        handoff(self, method, *args)

    SchedulerCallbacks._handoff = failing  # type: ignore[method-assign]


if os.environ.get("ROOST_TEST_RAISE_IN_CALLBACK"):
    _raise_in_callbacks(os.environ["ROOST_TEST_RAISE_IN_CALLBACK"])


@router.function("devices/{device_id}/mesos_isolated", isolated=True, cpus=0.5, mem=64, timeout=scaled(1.0))
def mesos_isolated(seconds: float = 0.0) -> dict[str, object]:
    """Run in a Mesos task of its own; sleep (past the timeout if asked); say where it ran."""
    time.sleep(seconds)
    return {"executor_id": os.environ.get("MESOS_EXECUTOR_ID"), "pid": os.getpid()}
