"""Shared fixtures: a real mosquitto per test session and real gateway processes.

The whole run (this process, every gateway, worker and tool it starts) has a scratch
``HOME`` and ``XDG_STATE_HOME``, removed at the end: whatever a default setting writes
into a user's home (the durable queue, the Mesos framework id, caches of libraries)
lands there and not in the real one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.cli.devbroker import LocalBroker, lease_port
from tests.support.gateway_process import GatewayProcess
from tests.support.probe import Probe

_HOME = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Point ``HOME`` and ``XDG_STATE_HOME`` at a scratch directory for the run."""
    home = Path(tempfile.mkdtemp(prefix="roost-test-home-"))
    config.stash[_HOME] = home
    os.environ["HOME"] = str(home)
    os.environ["XDG_STATE_HOME"] = str(home / ".local" / "state")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the scratch home."""
    home = config.stash.get(_HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """A private mosquitto on a free port, with the project's configuration."""
    with LocalBroker() as running:
        yield running


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where gateway logs go."""
    return tmp_path_factory.mktemp("gateway-logs")


TRANSPORTS = ("fast", "paho")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each gateway test runs on every transport."""
    kind: str = request.param
    return kind


@pytest.fixture
def start_gateway(broker: LocalBroker, logs: Path, transport: str) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways (on the test's transport) with extra flags; all are stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def start(*extra: str, **kwargs: object) -> GatewayProcess:
        gateway = GatewayProcess(broker.address, logs, "--transport", transport, *extra, **kwargs)  # type: ignore[arg-type]
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.kill()


@pytest.fixture
def free_port() -> Iterator[int]:
    """A port on 127.0.0.1 leased to this test (nothing listens there until the test starts something)."""
    with lease_port() as lease:
        yield lease.port


@pytest.fixture
def probe(broker: LocalBroker) -> Iterator[Probe]:
    """An MQTT 5 device connection."""
    client = Probe(broker.port)
    yield client
    client.close()
