"""What the durable queue's unit tests share: functions that note in ``RUNS`` that they ran (tests clear it),
the requests they send, and a few loop turns for what runs on the loop to settle."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack

from gateway.registry import Router
from gateway.transport.base import InboundMessage

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


def request(topic: str, args: dict[str, Any], cid: bytes, qos: int = 1) -> InboundMessage:
    """A request with Response Topic ``r/t`` and Correlation Data ``cid`` (also its ack token)."""
    return InboundMessage(topic, msgpack.packb(args), qos, time.monotonic(), "r/t", cid, ack_token=cid)


async def settle() -> None:
    """Five turns of the loop (counted turns, not time), for steps scheduled on it with call_soon."""
    for _ in range(5):
        await asyncio.sleep(0)
