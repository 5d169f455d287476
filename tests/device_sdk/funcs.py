"""Gateway functions the device SDK tests call (load with ``--functions tests.device_sdk.funcs``).

They are ``async`` so the ``inline`` executor, which starts fastest, enforces
their timeouts and counts them against ``limits.max_queue``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.registry import Router

router = Router()


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
