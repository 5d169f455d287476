"""Functions for the integration tests: crashes, hangs, holds, bad results, counters.

A sync function here blocks the process it runs in: the ones that wait (``hold``, ``single``) are for
gateways on the local executor, whose worker processes they hold until the test creates a file.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from gateway.registry import Router
from tests.support.timeouts import scaled

router = Router()


def wait_for_file(path: str) -> None:
    """Block until the file at ``path`` exists: the test creates it to let the call finish."""
    while not Path(path).exists():
        time.sleep(0.01)  # inside the function under test; the function's timeout bounds it


@router.function("devices/{device_id}/crash")
def crash(code: int = 3) -> None:
    """Kill the worker process the way a native extension would."""
    os._exit(code)


@router.function("devices/{device_id}/segfault")
def segfault() -> None:
    """Die of SIGSEGV."""
    os.kill(os.getpid(), signal.SIGSEGV)


@router.function("devices/{device_id}/hang", timeout=1.0)
def hang(seconds: float = 60.0) -> None:
    """Sleep past the one-second timeout."""
    time.sleep(seconds)


class Locked:
    """An argument type built from a string that holds a lock, which pickle refuses."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lock = threading.Lock()

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


@router.function("devices/{device_id}/unpicklable")
def unpicklable(value: Locked) -> str:
    """An argument no worker process can be sent: answered ``internal`` by every executor."""
    return value.text


@router.function("devices/{device_id}/opaque")
def opaque() -> object:
    """Return something msgpack cannot encode."""
    return object()


@router.function("devices/{device_id}/big")
def big(size: int) -> bytes:
    """Return ``size`` bytes (over the result limit when large)."""
    return b"x" * size


@router.function("devices/{device_id}/where")
def where() -> int:
    """The pid of the process that ran the call."""
    return os.getpid()


@router.function("devices/{device_id}/mark")
def mark(path: str, token: str) -> str:
    """Append ``token`` to a file: counts how often a call really ran."""
    with Path(path).open("a") as handle:
        handle.write(token + "\n")
    return token


@router.function("devices/{device_id}/double", idempotent=True)
def double(n: int) -> int:
    """Twice ``n``: safe to run again after a crash."""
    return 2 * n


@router.function("devices/{device_id}/flaky", idempotent=True, retries=3)
def flaky(path: str, failures: int) -> int:
    """Fail the first ``failures`` runs (counted in a file), then return the number of runs."""
    with Path(path).open("a+") as handle:
        handle.write("x")
        handle.seek(0)
        runs = len(handle.read())
    if runs <= failures:
        raise RuntimeError(f"failure {runs}")
    return runs


@router.function("devices/{device_id}/fresh", max_age=scaled(0.5))
def fresh() -> str:
    """Only worth running within half a second (scaled) of the request."""
    return "fresh"


@router.function("devices/{device_id}/hold", timeout=scaled(60.0))
def hold(path: str) -> str:
    """Hold a worker until the test creates the file at ``path``."""
    wait_for_file(path)
    return "released"


@router.function("devices/{device_id}/single", concurrency=1, timeout=scaled(60.0))
def single(path: str) -> str:
    """One call at a time: held until the test creates the file at ``path``."""
    wait_for_file(path)
    return "released"


@router.function("sites/{site}/ping")
def ping(site: str) -> str:
    """Not device-scoped: who may call it is the broker ACL's business (``roost acl`` grants it to no device)."""
    return f"pong from {site}"
