"""Settings: TOML file, ``ROOST_*`` environment variables and flags, validated once.

Priority, highest first: command-line flags, environment (``ROOST_WORKERS=4``,
nested with ``__`` as in ``ROOST_TLS__CA_FILE``), the TOML file given with
``--config``, defaults. The result is one frozen :class:`Settings`; a bad value
stops the start with one line naming the setting (:class:`ConfigError`).
"""

from __future__ import annotations

import socket
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


Positive = Annotated[int, Field(ge=1)]


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
    namespace: Annotated[tuple[str, ...], NoDecode] = ("devices/{device_id}/{function:path}",)
    reply_prefix: str = "roost/replies"
    # Default: the fast asyncio transport for MQTT 5, paho for MQTT 3.1.1.
    transport: Literal["fast", "paho"] | None = Field(default=None, validate_default=True)
    executor: Literal["local", "inline"] = "local"
    workers: Positive = 2
    limits: Limits = Limits()
    shutdown_grace: float = Field(default=5.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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
