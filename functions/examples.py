"""Request/reply examples: a device publishes to the topic and gets the result back."""

from __future__ import annotations

import asyncio
import time

from gateway.registry import Router

router = Router()


@router.function("devices/{device_id}/add", idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@router.function("devices/{device_id}/echo", idempotent=True)
def echo(device_id: str, value: str | int | float | bool | bytes | None = None) -> dict[str, object]:
    """Return the value with the calling device's id."""
    return {"device_id": device_id, "value": value}


@router.function("devices/{device_id}/fail")
def fail(reason: str = "something broke") -> None:
    """Always raise, to show how errors reach the device."""
    raise RuntimeError(reason)


# One call at a time: however many devices call it, it holds at most one worker and leaves the
# others to everything else (docs/guarantees.md, "Hostile input"). More are answered overloaded.
@router.function("devices/{device_id}/slow", timeout=30.0, concurrency=1)
def slow(seconds: float = 1.0) -> float:
    """Sleep for ``seconds`` (a stand-in for real work) and return how long it took."""
    started = time.monotonic()
    time.sleep(seconds)
    return round(time.monotonic() - started, 3)


@router.function("devices/{device_id}/wait")
async def wait(seconds: float = 0.1) -> str:
    """An ``async`` function: wait without blocking anyone else."""
    await asyncio.sleep(seconds)
    return "done"
