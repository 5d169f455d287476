"""Fixtures for the Mesos tests: a stand-in per test, pymesos drivers, a bundle served over HTTP."""

from __future__ import annotations

import contextlib
import functools
import http.server
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.devbroker import lease_port
from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn
from tests.mesos_standin.recorder import RecordedFramework
from tests.support.timeouts import scaled

EXECUTOR_SCRIPT = Path(__file__).with_name("standin_executor.py")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    """A stand-in master with two agents and fast timers; stopped (with its executors) by pid."""
    with StandIn(tmp_path / "work", agents=2) as running:
        yield running


@pytest.fixture
def control(standin: StandIn) -> Control:
    """The stand-in's control client."""
    return standin.control


@pytest.fixture
def frameworks(standin: StandIn) -> Iterator[Callable[..., RecordedFramework]]:
    """Build frameworks against the stand-in; every driver is stopped (failover) at the end."""
    made: list[RecordedFramework] = []

    def make(start: bool = True, implicit_acknowledgements: bool = True, **info: Any) -> RecordedFramework:
        framework = RecordedFramework(standin.master, implicit_acknowledgements, **info)
        made.append(framework)
        return framework.start() if start else framework

    yield make
    for framework in made:
        framework.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture
def bundle_url(tmp_path: Path) -> Iterator[str]:
    """The test executor packed as ``executor.tar.gz``, served by a local HTTP server on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "executor.tar.gz", "w:gz") as tar:
        tar.add(EXECUTOR_SCRIPT, arcname="bundle/standin_executor.py")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/executor.tar.gz"
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(RuntimeError):
            thread.join(scaled(5))


@pytest.fixture
def metrics_port() -> Iterator[int]:
    """A port on 127.0.0.1 leased to this test for a gateway's operations endpoint (``/metrics``).

    Leased like ``free_port`` (tests/conftest.py), and beside it: a test may need both (a master's port too).
    """
    with lease_port() as lease:
        yield lease.port
