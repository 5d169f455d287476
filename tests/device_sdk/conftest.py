"""Fixtures for the device SDK tests: private brokers and gateways (see ``stack.py``), device ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.device_sdk.stack import Stack, start_stack, stop_stack


@pytest.fixture(scope="session")
def stack(logs: Path) -> Iterator[Stack]:
    """The broker and gateway that most device tests share."""
    shared = start_stack(logs)
    yield shared
    stop_stack(shared)


@pytest.fixture
def make_stack(logs: Path) -> Iterator[Callable[..., Stack]]:
    """Start stacks of one's own (for restarts and special limits); all are stopped after the test."""
    started: list[Stack] = []

    def make(*extra: str, env: dict[str, str] | None = None) -> Stack:
        started.append(start_stack(logs, *extra, env=env))
        return started[-1]

    yield make
    for own in started:
        stop_stack(own)


@pytest.fixture
def device_id() -> str:
    """A device id no other test uses."""
    return f"dev-{uuid.uuid4().hex[:8]}"
