"""Functions for the durable queue's unit tests, each noting in ``RUNS`` that it ran (tests clear it)."""

from __future__ import annotations

import asyncio

from gateway.registry import Router

router = Router()
RUNS: list[str] = []


@router.function("devices/{device_id}/add", idempotent=True)
def add(a: int, b: int) -> int:
    RUNS.append("add")
    return a + b


@router.function("devices/{device_id}/echo", idempotent=True)
def echo(value: str) -> str:
    RUNS.append("echo")
    return value


@router.function("devices/{device_id}/charge")
def charge(amount: int) -> int:
    RUNS.append("charge")
    return amount


@router.function("devices/{device_id}/nap")
async def nap(seconds: float) -> str:
    RUNS.append("nap")
    await asyncio.sleep(seconds)
    return "rested"


@router.function("devices/{device_id}/blob")
def blob(size: int) -> bytes:
    RUNS.append("blob")
    return bytes(size)
