"""Settings: TOML file, ``ROOST_*`` environment variables and flags, validated once.

Priority, highest first: command-line flags, environment (``ROOST_WORKERS=4``,
nested with ``__`` as in ``ROOST_TLS__CA_FILE``), the TOML file given with
``--config``, defaults. The result is one frozen :class:`Settings`; a bad value
stops the start with one line naming the setting (:class:`ConfigError`).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from gateway import limits
from gateway.config_sections import (
    BrokerAddress,
    DurableSettings,
    Limits,
    MesosSettings,
    MetricsSettings,
    Positive,
    TlsSettings,
)
from gateway.errors import ConfigError, TemplateError
from gateway.topics import TopicTemplate

__all__ = [
    "ANY_REPLY_TOPIC",
    "AUTO_SHARE_GROUP",
    "DEFAULT_BROKER",
    "DEFAULT_NAMESPACE",
    "DEFAULT_REPLY_PREFIX",
    "EXAMPLE_FUNCTIONS",
    "BrokerAddress",
    "Settings",
    "derived_share_group",
    "load_settings",
]

# The example modules: what `roost demo` serves. Nothing is served unless the settings name it.
EXAMPLE_FUNCTIONS = ("functions.examples", "functions.sensors")
DEFAULT_NAMESPACE = "devices/{device_id}/{function:path}"
DEFAULT_REPLY_PREFIX = "roost/replies"
DEFAULT_BROKER = BrokerAddress(host="127.0.0.1", port=1883)
ANY_REPLY_TOPIC = "#"  # reply_spaces = ["#"]: replies may go to any topic (the check is off)
AUTO_SHARE_GROUP = "auto"  # share_group = "auto": named after the gateways' password


def derived_share_group(password: str) -> str:
    """The share group ``share_group = "auto"`` stands for: a keyed hash of the gateways' broker password."""
    return "roost-" + hmac.new(password.encode(), b"roost share group", hashlib.sha256).hexdigest()[:32]


class Settings(BaseSettings):
    """Every setting of the gateway; frozen once loaded."""

    model_config = SettingsConfigDict(env_prefix="ROOST_", env_nested_delimiter="__", frozen=True, extra="forbid")

    # NoDecode: environment values are "host:port" and "a,b" strings, not JSON.
    broker: Annotated[BrokerAddress, NoDecode] = DEFAULT_BROKER
    client_id: str = Field(default_factory=lambda: f"roost-{socket.gethostname()}", min_length=1, max_length=128)
    username: str | None = None
    password: pydantic.SecretStr | None = None
    tls: TlsSettings = TlsSettings()
    mqtt_version: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(default=30, ge=5, le=65535)
    session_expiry: int = Field(default=3600, ge=0)
    connect_timeout: float = Field(default=30.0, gt=0)
    max_inflight: Positive = 1000
    functions: Annotated[tuple[str, ...], NoDecode] = ()  # function modules to serve; none by default
    namespace: Annotated[tuple[str, ...], NoDecode] = (DEFAULT_NAMESPACE,)
    reply_prefix: str = DEFAULT_REPLY_PREFIX
    # Replies go only to topics at or under one of these, rendered with the requesting device's id
    # ({device_id} only). Default: "{reply_prefix}/{device_id}". "#" alone: any topic (not checked).
    reply_spaces: Annotated[tuple[str, ...], NoDecode]
    # Calls that failed for good (after their retries) are reported here, per device; "" turns it off.
    dead_letter_topic: str = "roost/dead/{device_id}"
    # Default: the fast asyncio transport for MQTT 5, paho for MQTT 3.1.1.
    transport: Literal["fast", "paho"] | None = Field(default=None, validate_default=True)
    executor: Literal["local", "inline", "mesos"] = "local"
    workers: Positive = 2
    mesos: MesosSettings = Field(default_factory=MesosSettings)  # its state_file default reads the environment
    limits: Limits = Limits()
    durable: DurableSettings = DurableSettings()
    shutdown_grace: float = Field(default=5.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # one line per event either way
    metrics: MetricsSettings = MetricsSettings()
    # Gateways with the same group share the requests ($share/<group>/...); None: each gets every request.
    # "auto": a name derived from the password, which no device can guess (docs/operations.md).
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

    @pydantic.model_validator(mode="before")
    @classmethod
    def _secret_share_group(cls, data: Any) -> Any:
        # A device that knows the group's name could ask to join it (docs/operations.md): "auto" names it
        # after the password the gateways log in with. Without one it stays "auto", refused by run and check.
        if isinstance(data, dict) and data.get("share_group") == AUTO_SHARE_GROUP and data.get("password"):
            password = data["password"]
            secret = password.get_secret_value() if isinstance(password, pydantic.SecretStr) else str(password)
            return {**data, "share_group": derived_share_group(secret)}
        return data

    def device_concurrency(self) -> int | None:
        """Calls one device may have under way on worker processes: ``limits.device_share`` of them, at least one
        (``None``: no limit). The workers of the local executor, or of every Mesos executor the pool may grow to.
        """
        if self.limits.device_share is None:
            return None
        workers = self.workers
        if self.executor == "mesos":
            workers = self.mesos.workers * (self.mesos.max_executors or self.mesos.executors)
        return max(1, int(workers * self.limits.device_share))

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
            prefix = data.get("reply_prefix") or DEFAULT_REPLY_PREFIX
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
        templates = []
        for item in value:
            try:
                template = TopicTemplate.parse(item)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
            if set(template.params) != {"device_id"}:
                raise ValueError(f"reply space {item!r} must use {{device_id}} and no other parameter")
            templates.append(template)
        prefix = info.data.get("reply_prefix")
        # else reply_prefix itself is invalid, and says so
        if prefix is not None and limits.reply_space_problem(f"{prefix}/x", "x", tuple(templates)) is not None:
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
