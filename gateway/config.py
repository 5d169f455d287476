"""Settings: TOML file, ``ROOST_*`` environment variables and flags, validated once.

Priority, highest first: command-line flags, environment (``ROOST_WORKERS=4``,
nested with ``__`` as in ``ROOST_TLS__CA_FILE``), the TOML file given with
``--config``, defaults. The result is one frozen :class:`Settings`; a bad value
stops the start with one line naming the setting (:class:`ConfigError`).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from gateway.errors import ConfigError, TemplateError
from gateway.topics import TopicTemplate

DEFAULT_FUNCTIONS = ("functions.examples", "functions.sensors")
DEFAULT_NAMESPACE = "devices/{device_id}/{function:path}"
ANY_REPLY_TOPIC = "#"  # reply_spaces = ["#"]: replies may go to any topic (the check is off)


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
    device_rate: float = Field(default=0.0, ge=0)  # requests per second per {device_id}; 0: unlimited
    device_burst: int = Field(default=20, ge=1)  # requests a device may send at once before its rate applies


class DurableSettings(BaseModel):
    """The durable queue: QoS 1/2 requests are stored before they are acknowledged (docs/guarantees.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    # Default: ~/.local/state/roost/<client_id>.queue.sqlite3, one file per gateway identity.
    path: Path | None = None
    # normal: survives a crash of the gateway (not of the machine) at ~0.1 ms per commit; full: fsync each commit.
    synchronous: Literal["normal", "full"] = "normal"
    result_ttl: float = Field(default=300.0, gt=0)  # seconds a reply answers duplicates of its request
    max_results: int = Field(default=20_000, ge=1)  # replies kept for duplicates, at most
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


Positive = Annotated[int, Field(ge=1)]


def _state_home() -> Path:
    return Path.home() / ".local" / "state" / "roost"


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


class Settings(BaseSettings):
    """Every setting of the gateway; frozen once loaded."""

    model_config = SettingsConfigDict(env_prefix="ROOST_", env_nested_delimiter="__", frozen=True, extra="forbid")

    # NoDecode: environment values are "host:port" and "a,b" strings, not JSON.
    broker: Annotated[BrokerAddress, NoDecode] = BrokerAddress(host="127.0.0.1", port=1883)
    client_id: str = Field(default_factory=lambda: f"roost-{socket.gethostname()}", min_length=1, max_length=128)
    username: str | None = None
    password: pydantic.SecretStr | None = None
    tls: TlsSettings = TlsSettings()
    mqtt_version: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(default=30, ge=5, le=65535)
    session_expiry: int = Field(default=3600, ge=0)
    connect_timeout: float = Field(default=30.0, gt=0)
    max_inflight: Positive = 1000
    functions: Annotated[tuple[str, ...], NoDecode] = DEFAULT_FUNCTIONS
    namespace: Annotated[tuple[str, ...], NoDecode] = (DEFAULT_NAMESPACE,)
    reply_prefix: str = "roost/replies"
    # Replies go only to topics at or under one of these, rendered with the requesting device's id
    # ({device_id} only). Default: "{reply_prefix}/{device_id}". "#" alone: any topic (not checked).
    reply_spaces: Annotated[tuple[str, ...], NoDecode]
    # Calls that failed for good (after their retries) are reported here, per device; "" turns it off.
    dead_letter_topic: str = "roost/dead/{device_id}"
    # Default: the fast asyncio transport for MQTT 5, paho for MQTT 3.1.1.
    transport: Literal["fast", "paho"] | None = Field(default=None, validate_default=True)
    executor: Literal["local", "inline", "mesos"] = "local"
    workers: Positive = 2
    mesos: MesosSettings = MesosSettings()
    limits: Limits = Limits()
    durable: DurableSettings = DurableSettings()
    shutdown_grace: float = Field(default=5.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # one line per event either way
    metrics: MetricsSettings = MetricsSettings()
    # Gateways with the same group share the requests ($share/<group>/...); None: each gets every request.
    share_group: str | None = Field(default=None, min_length=1, pattern=r"^[^/+#$\x00]+$")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shared_session(cls, data: Any) -> Any:
        # mosquitto keeps routing a share group's messages to a member whose session outlives its
        # connection, so a dead gateway would swallow its share: shared gateways end their session
        # with the connection unless session_expiry is set explicitly (docs/operations.md).
        if isinstance(data, dict) and data.get("share_group") and data.get("session_expiry") is None:
            return {**data, "session_expiry": 0}
        return data

    def reply_space_templates(self) -> tuple[TopicTemplate, ...] | None:
        """The reply spaces as templates; ``None`` when replies may go to any topic."""
        if self.reply_spaces == (ANY_REPLY_TOPIC,):
            return None
        return tuple(TopicTemplate.parse(space) for space in self.reply_spaces)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _default_reply_space(cls, data: Any) -> Any:
        # The default space follows reply_prefix, so the 3.1.1 default reply topic is always inside it.
        if isinstance(data, dict) and data.get("reply_spaces") is None:
            prefix = data.get("reply_prefix") or "roost/replies"
            return {**data, "reply_spaces": (f"{prefix}/{{device_id}}",)}
        return data

    @field_validator("broker", mode="before")
    @classmethod
    def _parse_broker(cls, value: Any) -> Any:
        return BrokerAddress.parse(value) if isinstance(value, str) else value

    @field_validator("transport")
    @classmethod
    def _pick_transport(cls, value: str | None, info: ValidationInfo) -> str:
        version = info.data.get("mqtt_version", "5")
        if value is None:
            return "paho" if version == "3.1.1" else "fast"
        if value == "fast" and version == "3.1.1":
            raise ValueError('the fast transport speaks MQTT 5 only; use transport = "paho" for MQTT 3.1.1')
        return value

    @field_validator("functions", "namespace", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("namespace")
    @classmethod
    def _check_templates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                TopicTemplate.parse(item)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("reply_spaces", mode="before")
    @classmethod
    def _split_spaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("reply_spaces")
    @classmethod
    def _check_spaces(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value:
            raise ValueError('name at least one reply space, or "#" to let replies go to any topic')
        if ANY_REPLY_TOPIC in value:
            if len(value) > 1:
                raise ValueError('"#" (any topic) cannot be combined with other reply spaces')
            return value
        for item in value:
            try:
                template = TopicTemplate.parse(item)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
            if set(template.params) != {"device_id"}:
                raise ValueError(f"reply space {item!r} must use {{device_id}} and no other parameter")
        prefix = info.data.get("reply_prefix")
        if prefix is not None:  # else reply_prefix itself is invalid, and says so
            default = f"{prefix}/x"
            roots = [TopicTemplate.parse(item).render({"device_id": "x"}) for item in value]
            if not any(default == root or default.startswith(root + "/") for root in roots):
                raise ValueError(
                    f"no reply space holds {prefix}/{{device_id}}, where MQTT 3.1.1 devices and roost call get"
                    " their replies: add it"
                )
        return value

    @field_validator("dead_letter_topic")
    @classmethod
    def _check_dead_letter(cls, value: str) -> str:
        if value:
            try:
                TopicTemplate.parse(value)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("reply_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or "+" in value or "#" in value or value.endswith("/"):
            raise ValueError("must be a topic without wildcards or a trailing '/'")
        return value

    @property
    def transport_kind(self) -> str:
        """The transport in use (the validator has replaced a missing one)."""
        return self.transport or "fast"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init), then environment, then the TOML file of :func:`load_settings`."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file") is not None:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Load and validate settings; raise :class:`ConfigError` with one line naming the bad one."""
    flags = {key: value for key, value in flags.items() if value is not None}
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {str(config_file)!r} does not exist")
    source_cls: type[Settings] = Settings
    if config_file is not None:
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})
        source_cls = type("FileSettings", (Settings,), {"model_config": config})
    try:
        loaded = source_cls(**flags)
    except pydantic.ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    except ValueError as exc:  # e.g. a TOML syntax error
        raise ConfigError(f"cannot read settings: {exc}") from None
    return loaded


def _one_line(exc: pydantic.ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    name = ".".join(str(part) for part in err["loc"]) or "settings"
    msg = str(err["msg"]).removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    tail = f" (and {more} more)" if more else ""
    return f"invalid setting {name!r}: {msg}{tail}"
