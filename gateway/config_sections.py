"""The sections of the settings: broker address, TLS, limits, durable queue, metrics, Mesos.

Each is a frozen pydantic model that validates its own fields; :mod:`gateway.config`
puts them together into :class:`~gateway.config.Settings` and loads them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

Positive = Annotated[int, Field(ge=1)]


class BrokerAddress(BaseModel):
    """``HOST:PORT`` of the MQTT broker."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int = Field(ge=1, le=65535)

    @classmethod
    def parse(cls, text: str) -> BrokerAddress:
        """Parse ``host:port`` (``[v6]:port`` too); the port defaults to 1883."""
        text = text.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.lstrip(":") or "1883"
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, "1883"
        if not host:
            raise ValueError(f"broker address {text!r} has no host")
        if not port.isdigit():
            raise ValueError(f"broker port must be a number, got {port!r}")
        return cls(host=host, port=int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class TlsSettings(BaseModel):
    """TLS to the broker. Server verification is on whenever TLS is."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip host name verification (test setups only)

    @pydantic.model_validator(mode="after")
    def _check(self) -> TlsSettings:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def active(self) -> bool:
        """TLS is used when enabled or when any file is given."""
        return self.enabled or self.ca_file is not None or self.cert_file is not None


class Limits(BaseModel):
    """Bounds that keep one device from hurting the others."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_payload_bytes: int = Field(default=256 * 1024, ge=16)
    max_result_bytes: int = Field(default=256 * 1024, ge=16)
    call_timeout: float = Field(default=10.0, gt=0)
    max_queue: int = Field(default=1000, ge=1)
    max_depth: int = Field(default=32, ge=1)  # arrays and maps nested in a request payload
    max_items: int = Field(default=10_000, ge=1)  # elements of one array or map in a request payload
    max_arguments: int = Field(default=64, ge=1)  # named arguments of one request
    max_argument_bytes: int = Field(default=64 * 1024, ge=1)  # one str or bin argument
    max_topic_bytes: int = Field(default=1024, ge=16)  # characters of a request topic
    max_topic_levels: int = Field(default=32, ge=2)  # levels of a request topic
    # Correlation Data or $cid of one request: echoed in its reply and kept with it for duplicates.
    # Clients send 8-16 bytes (the device SDK 8, UUIDs 16); 1 KiB leaves room for a structured id.
    max_correlation_bytes: int = Field(default=1024, ge=16, le=65535)
    device_rate: float = Field(default=0.0, ge=0)  # requests per second per {device_id}; 0: unlimited
    device_burst: int = Field(default=20, ge=1)  # requests a device may send at once before its rate applies
    # The share of the workers one device's calls may hold; past it they wait their turn (device_burst of them),
    # then overloaded. None: no such limit (a device may queue up to max_queue calls). deploy/roost.toml: 0.5.
    device_share: float | None = Field(default=None, gt=0, le=1)


class DurableSettings(BaseModel):
    """The durable queue: QoS 1/2 requests are stored before they are acknowledged (docs/guarantees.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    # Default: $XDG_STATE_HOME/roost/<client_id>.queue.sqlite3 (~/.local/state/...), one file per gateway identity.
    path: Path | None = None
    # normal: survives a crash of the gateway (not of the machine) at ~0.1 ms per commit; full: fsync each commit.
    synchronous: Literal["normal", "full"] = "normal"
    result_ttl: float = Field(default=300.0, gt=0)  # seconds a reply answers duplicates of its request
    max_results: int = Field(default=20_000, ge=1)  # replies kept for duplicates, at most
    max_results_bytes: int = Field(default=64 * 1024 * 1024, ge=65536)  # bytes of those replies, at most
    # Non-idempotent calls handed to executors at a time; after a crash these (only) are answered unavailable.
    max_started: int = Field(default=16, ge=1)

    def file_for(self, client_id: str) -> Path:
        """The sqlite file of the gateway with this client id."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in client_id)
        return self.path or _state_home() / f"{safe}.queue.sqlite3"


class MetricsSettings(BaseModel):
    """The operations endpoint: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``; off unless enabled."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = False
    # Loopback by default: the endpoint has no authentication.
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=9108, ge=0, le=65535)  # 0 picks a free port (tests)
    # Connections served at once; more wait in the kernel's listen backlog (docs/operations.md).
    max_connections: int = Field(default=32, ge=1, le=1000)
    idle_timeout: float = Field(default=5.0, gt=0)  # seconds a connection has to send its request and take the answer


def _state_home() -> Path:
    """Where a gateway keeps its state by default: ``$XDG_STATE_HOME/roost``, else ``~/.local/state/roost``."""
    base = os.environ.get("XDG_STATE_HOME", "")
    # The XDG base directory spec: a relative path is invalid and is ignored.
    return (Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state") / "roost"


class MesosSettings(BaseModel):
    """The ``mesos`` executor: where the cluster is, what to ask it for, how executors reach the gateway.

    Addresses are ``HOST:PORT``; a port of 0 picks a free one. ``advertise_host``
    is the name agents use to reach the gateway's channel and bundle server
    (default: the listen host, or this machine's name when listening on all
    addresses). See docs/mesos.md.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    master: str = Field(default="127.0.0.1:5050", min_length=1)  # HOST:PORT or zk://HOST:PORT,.../mesos
    framework_name: str = Field(default="roost", min_length=1)
    user: str | None = None  # default: the user running the gateway
    role: str = "*"
    principal: str | None = None
    secret: pydantic.SecretStr | None = None
    executors: Positive = 2  # warm executors to keep running (one per agent while agents last)
    workers: Positive = 2  # warm worker processes in each executor
    cpus: float = Field(default=1.0, gt=0)  # per executor, covering its workers
    mem: float = Field(default=256.0, ge=32)  # megabytes per executor
    failover_timeout: float = Field(default=604800.0, gt=0)  # seconds Mesos keeps the framework while we are away
    give_up_after: float = Field(default=86400.0, gt=0)  # seconds of unreachable master before the gateway exits
    state_file: Path = Field(default_factory=lambda: _state_home() / "mesos-framework.json")
    python: str = f"python{sys.version_info.major}.{sys.version_info.minor}"  # interpreter on the agents
    bundle_uri: str | None = None  # fetch this bundle instead of building and serving one
    bundle_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "roost" / "bundles")
    bundle_distributions: tuple[str, ...] = ()  # extra distributions the function modules import
    bundle_listen: str = "127.0.0.1:0"
    channel_listen: str = "127.0.0.1:0"
    advertise_host: str | None = None
    start_timeout: float = Field(default=60.0, gt=0)  # seconds to wait for the executors at start
    heartbeat: float = Field(default=1.0, gt=0)  # seconds between channel heartbeats
    channel_timeout: float = Field(default=10.0, gt=0)  # a channel silent this long is closed
    reconnect_grace: float = Field(default=5.0, ge=0)  # calls wait this long for a disconnected executor
    orphan_timeout: float = Field(default=60.0, gt=0)  # an executor without its gateway this long exits
    # Failures (docs/mesos.md, "What survives what"):
    master_heartbeat: float = Field(default=15.0, gt=0)  # seconds between the master's heartbeats (Mesos: 15)
    missed_heartbeats: Positive = 5  # a master silent this many heartbeats gets a new driver (failover)
    resubscribe_pause: float = Field(default=2.0, ge=0)  # seconds to wait out a master that keeps refusing
    retry_budget: int = Field(default=2, ge=0)  # reruns of an idempotent call whose executor was lost
    fallback: Literal["none", "local"] = "none"  # where calls go while no Mesos executor is reachable
    unreachable_after: float = Field(default=10.0, ge=0)  # seconds without an executor before that applies
    # Elastic pool: from `executors` up to this many while calls wait (None: a fixed pool).
    max_executors: Positive | None = None
    idle_timeout: float = Field(default=60.0, gt=0)  # an executor above `executors` idle this long is stopped

    @field_validator("bundle_listen", "channel_listen")
    @classmethod
    def _check_address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"must be HOST:PORT, got {value!r}")
        return value

    @pydantic.model_validator(mode="after")
    def _check_pace(self) -> MesosSettings:
        if self.channel_timeout <= 2 * self.heartbeat:
            raise ValueError("channel_timeout must be more than twice the heartbeat")
        if self.max_executors is not None and self.max_executors < self.executors:
            raise ValueError("max_executors must be at least executors")
        return self
