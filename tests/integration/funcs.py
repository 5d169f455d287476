"""Functions for the integration tests: crashes, hangs, bad results, counters."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from gateway.registry import Router

router = Router()


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


@router.function("devices/{device_id}/fresh", max_age=0.5)
def fresh() -> str:
    """Only worth running within half a second of the request."""
    return "fresh"


@router.function("devices/{device_id}/single", concurrency=1)
def single(seconds: float) -> float:
    """One call at a time: sleep ``seconds``."""
    time.sleep(seconds)
    return seconds


@router.function("sites/{site}/ping")
def ping(site: str) -> str:
    """Not device-scoped: who may call it is the broker ACL's business (``roost acl`` grants it to no device)."""
    return f"pong from {site}"
