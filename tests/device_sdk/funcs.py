"""Gateway functions the device SDK tests call (load with ``--functions tests.device_sdk.funcs``).

They are ``async`` so the ``inline`` executor, which starts fastest, enforces
their timeouts and counts them against ``limits.max_queue``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.registry import Router
from tests.support.timeouts import scaled

router = Router()
_gatherings: dict[str, tuple[list[int], asyncio.Event]] = {}  # device id → (calls arrived, all of them here)


@router.function("devices/{device_id}/hang", timeout=0.5)
async def hang(seconds: float = 30.0) -> None:
    """Run past the half-second timeout (the reply is the ``timeout`` error)."""
    await asyncio.sleep(seconds)


@router.function("devices/{device_id}/opaque")
async def opaque() -> object:
    """Return something msgpack cannot encode (``bad_result``)."""
    return object()


@router.function("devices/{device_id}/park", timeout=60.0)
async def park(path: str, seconds: float = 30.0) -> str:
    """Create ``path`` (so a test knows the call is running), then wait ``seconds``."""
    Path(path).write_text("running")
    await asyncio.sleep(seconds)
    return "finished"


@router.function("devices/{device_id}/gather", timeout=scaled(30.0), idempotent=True)
async def gather(device_id: str, size: int) -> int:
    """Answer only once ``size`` calls of this device wait here together: proof that they were all in flight.

    Idempotent, so the durable queue's cap on non-idempotent calls under way (``max_started``) does not apply.
    """
    arrived, everyone = _gatherings.setdefault(device_id, ([0], asyncio.Event()))
    arrived[0] += 1
    if arrived[0] >= size:
        everyone.set()
    await everyone.wait()
    return arrived[0]
