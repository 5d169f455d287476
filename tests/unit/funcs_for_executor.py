"""Functions for the local executor's unit tests: results, errors, hangs, crashes, bad results."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Literal

from gateway.registry import Router

router = Router()


@router.function("t/add")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@router.function("t/raise")
def raise_(message: str = "boom") -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


@router.function("t/sleep")
def sleep(seconds: float) -> float:
    """Block the worker for ``seconds``."""
    time.sleep(seconds)
    return seconds


@router.function("t/exit")
def exit_(code: int = 3) -> None:
    """End the worker process at once, the way a native extension would."""
    os._exit(code)


@router.function("t/segfault")
def segfault() -> None:
    """Die of SIGSEGV."""
    os.kill(os.getpid(), signal.SIGSEGV)


@router.function("t/wait")
async def wait(seconds: float, value: str) -> str:
    """An ``async`` function: wait, then return ``value``."""
    await asyncio.sleep(seconds)
    return value


@router.function("t/opaque")
def opaque() -> object:
    """Return something msgpack cannot encode."""
    return object()


@router.function("t/big")
def big(size: int) -> bytes:
    """Return ``size`` bytes."""
    return b"x" * size


@router.function("t/pid")
def pid() -> int:
    """The pid of the worker that ran the call."""
    return os.getpid()


@router.function("t/mark")
def mark(path: str, token: str, then: Literal["return", "exit", "hang"] = "return") -> str:
    """Append ``token`` to the file at ``path`` (so tests count real runs), then return it, exit or hang."""
    with Path(path).open("a") as handle:
        handle.write(token + "\n")
    if then == "exit":
        os._exit(3)
    if then == "hang":
        time.sleep(60)
    return token


def __getattr__(name: str) -> Router:
    """``gateway_only``: this router, seen by the gateway but not by worker processes (a module that loads
    differently in a worker, to test how the executor reports it)."""
    if name == "gateway_only" and multiprocessing.parent_process() is None:
        return router
    raise AttributeError(name)
