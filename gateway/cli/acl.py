"""``roost acl``: the broker configuration that keeps each device in its own topics.

Devices log in with their device id as username. From the registered templates and
the settings, both outputs grant the same:

* each device: publish on every call template with ``{device_id}`` (its own id in
  place of it, ``+``/``#`` for the other parameters); read, and subscribe to, its
  reply spaces (``reply_spaces``; by default ``{reply_prefix}/{device_id}``, the 3.1.1
  convention's topic) and its dead-letter topic (``dead_letter_topic``);
* the gateway (``--gateway-user``): read, and subscribe to, the call topics (plain or
  ``$share/<group>/…``); publish on reply spaces, ``publish=`` targets and the
  dead-letter topic of every device.

``--format dynsec`` (what ``deploy/mosquitto.conf`` loads, and what docs/guarantees.md
rests on) is a configuration file for mosquitto's dynamic-security plugin. Only a
plugin decides *subscriptions* on mosquitto 2.0: the acl_file check returns success
for every SUBSCRIBE (``security_default.c``: "FIXME - implement ACL subscription
strings"), so with an acl_file a device may subscribe to ``$share/<group>/devices/+/#``;
the broker's round robin then hands it other devices' requests, the read ACL drops them,
and they are lost. The plugin of mosquitto 2.0 has no ``%u``, so each device gets a
role of its own: the devices are listed (``--devices-from`` the password file). Its
default is deny for everything but unsubscribing, and no acl_file decides after it, so
a device missing from the file can log in but do nothing: it fails closed. Passwords
stay in mosquitto's password file; the plugin's clients have none and leave the login
to it.

``--format acl-file`` (the default) is mosquitto's acl_file with ``%u`` patterns. It
confines what devices publish and read, not what they subscribe to: enough for one
gateway, not for a share group (docs/operations.md).

Templates without ``{device_id}`` are not granted to devices of their own (a comment
says so): nothing says which device may call them. One that lies under a
device-scoped namespace (``devices/{name}/status``) is still reachable by the device
whose namespace topic it is, and the gateway treats it as that device's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.registry import Registry
from gateway.topics import TopicTemplate

GATEWAY_ROLE = "roost-gateway"
DEVICE_ROLE = "roost-device-{device}"
_READ = ("publishClientReceive", "subscribePattern")  # a device subscribes to what it may read
# The plugin's defaults: nothing unless a role grants it (unsubscribing harms nobody).
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}


def acl_filter(template: TopicTemplate, device: str) -> str:
    """``template`` as an ACL topic: ``{device_id}`` → ``device``, ``{x}`` → ``+``, ``{x:path}`` → ``#``."""
    parts = []
    for level in template.levels:
        if level.literal is not None:
            parts.append(level.literal)
        elif level.param == "device_id":
            parts.append(device)
        else:
            parts.append("#" if template.has_path and level is template.levels[-1] else "+")
    return "/".join(parts)


def reply_templates(settings: Settings) -> list[TopicTemplate]:
    """Where replies to a device may go: its reply spaces (with "#": the 3.1.1 default reply topic)."""
    spaces = settings.reply_space_templates()
    return list(spaces) if spaces is not None else [TopicTemplate.parse(f"{settings.reply_prefix}/{{device_id}}")]


@dataclass(frozen=True)
class Grants:
    """What the gateway and each device may do, as ACL topics; ``device`` stands for a device's id."""

    gateway_reads: list[str]  # also subscribed to, plain or under $share/<group>/
    gateway_writes: list[str]
    device_writes: list[str]
    device_reads: list[str]  # also subscribed to
    not_granted: list[str]  # call templates without {device_id}


def grants(settings: Settings, registry: Registry, device: str) -> Grants:
    """The grants of ``roost acl``, with ``device`` for the device's id (``%u`` in an acl_file)."""
    calls = [TopicTemplate.parse(item) for item in settings.namespace] + [spec.template for spec in registry.specs]
    writes = reply_templates(settings) + [spec.publish for spec in registry.specs if spec.publish is not None]
    dead = TopicTemplate.parse(settings.dead_letter_topic) if settings.dead_letter_topic else None
    if dead is not None:
        writes.append(dead)
    device_writes = _unique(acl_filter(t, device) for t in calls if "device_id" in t.params)
    device_reads = [topic for t in reply_templates(settings) for topic in _and_below(acl_filter(t, device))]
    if dead is not None and "device_id" in dead.params:  # a dead-letter topic shared by every device is not granted
        device_reads.append(acl_filter(dead, device))
    return Grants(
        gateway_reads=_unique(t.mqtt_filter for t in calls),
        gateway_writes=_unique(topic for t in writes for topic in _and_below(acl_filter(t, "+"))),
        device_writes=device_writes,
        device_reads=_unique(device_reads),
        not_granted=[t.template for t in calls if "device_id" not in t.params],
    )


def render_acl(settings: Settings, registry: Registry, gateway_user: str) -> str:
    """The text of a mosquitto acl_file (``--format acl-file``)."""
    granted = grants(settings, registry, "%u")
    lines = [
        "# Generated by `roost acl`: devices log in with their device id as username.",
        "# An acl_file does not stop subscriptions (to $share/<group>/... either): see `roost acl --format dynsec`.",
        "",
        f"user {gateway_user}",
    ]
    lines += [f"topic read {topic}" for topic in granted.gateway_reads]
    lines += [f"topic write {topic}" for topic in granted.gateway_writes]
    lines += ["", "# Every other user is a device: its own topics only."]
    for template in granted.not_granted:
        lines.append(f"# {template}: no {{device_id}}, not granted to devices (except under a namespace)")
    lines += [f"pattern write {topic}" for topic in granted.device_writes]
    lines += [f"pattern read {topic}" for topic in granted.device_reads]
    return "\n".join(lines) + "\n"


def render_dynsec(settings: Settings, registry: Registry, gateway_user: str, devices: list[str]) -> str:
    """The dynamic-security plugin's configuration file (``--format dynsec``), JSON."""
    gateway = grants(settings, registry, "+")
    subscriptions = [f for topic in gateway.gateway_reads for f in (topic, f"$share/+/{topic}")]
    gateway_acls = [_acl("subscribePattern", topic) for topic in subscriptions]
    gateway_acls += [_acl("publishClientReceive", topic) for topic in gateway.gateway_reads]
    gateway_acls += [_acl("publishClientSend", topic) for topic in gateway.gateway_writes]
    clients: list[dict[str, Any]] = [{"username": gateway_user, "roles": [{"rolename": GATEWAY_ROLE}]}]
    roles: list[dict[str, Any]] = [{"rolename": GATEWAY_ROLE, "acls": gateway_acls}]
    for device in sorted(set(devices) - {gateway_user}):
        _check_device(device)
        own = grants(settings, registry, device)
        acls = [_acl("publishClientSend", topic) for topic in own.device_writes]
        acls += [_acl(kind, topic) for topic in own.device_reads for kind in _READ]
        role = DEVICE_ROLE.format(device=device)
        clients.append({"username": device, "roles": [{"rolename": role}]})
        roles.append({"rolename": role, "acls": acls})
    config = {"defaultACLAccess": DEFAULT_ACCESS, "clients": clients, "groups": [], "roles": roles}
    return json.dumps(config, indent=1) + "\n"


def device_names(devices: list[str], devices_from: Path | None) -> list[str]:
    """The devices of ``--device`` and ``--devices-from`` (a name a line, or a password file; ``-``: stdin)."""
    names = list(devices)
    if devices_from is not None:
        try:
            text = sys.stdin.read() if str(devices_from) == "-" else devices_from.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the devices from {str(devices_from)!r}: {exc}") from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.append(line.split(":", 1)[0])
    return names


def render(
    settings: Settings, registry: Registry, gateway_user: str, kind: str, devices: list[str], devices_from: Path | None
) -> str:
    """What ``roost acl --format kind`` prints."""
    if kind == "acl-file":
        return render_acl(settings, registry, gateway_user)
    names = device_names(devices, devices_from)
    if not set(names) - {gateway_user}:
        raise ConfigError(
            "--format dynsec lists every device (there is no %u in mosquitto 2.0's plugin): give --devices-from"
            " /etc/mosquitto/roost.passwd or --device NAME"
        )
    return render_dynsec(settings, registry, gateway_user, names)


def _check_device(name: str) -> None:
    bad = next((c for c in ("/", "+", "#", "\x00") if c in name), None)
    if bad is not None or not name:
        raise ConfigError(f"device {name!r} cannot be a topic level: " + (f"it holds {bad!r}" if bad else "empty"))


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "allow": True}


def _and_below(topic: str) -> tuple[str, str]:
    return topic, f"{topic}/#"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
