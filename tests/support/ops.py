"""Helpers for the operations tests: HTTP GETs to a gateway's endpoint, parsed metrics, polling."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.support import timeouts
from tests.support.timeouts import scaled

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """Status and body of ``GET http://127.0.0.1:port/path``; raises ``OSError`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=scaled(timeout)) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, labels) → value."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """:func:`tests.support.timeouts.wait_for`, with an endpoint that does not answer yet (``OSError``) as "not yet"."""
    return timeouts.wait_for(condition, timeout, what, ignore=(OSError,))


def status_of(port: int, path: str) -> int | None:
    """The HTTP status of ``path``, ``None`` when nothing answers."""
    try:
        return get(port, path, timeout=1.0)[0]
    except OSError:
        return None
