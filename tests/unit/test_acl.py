"""``roost acl``: templates become mosquitto ACL patterns keyed by the device's username, or dynsec roles."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import build_parser
from gateway.cli.acl import render, render_acl
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.registry import Registry, Router

router = Router()


@router.function("devices/{device_id}/add")
def add(a: int, b: int) -> int:
    return a + b


@router.function("sites/{site}/reset")
def reset(site: str) -> None:
    """Not device-scoped: no device may call it."""


def test_devices_get_their_own_call_topics_and_reply_space_only() -> None:
    settings = load_settings(reply_spaces="roost/replies/{device_id}")
    text = render_acl(settings, Registry.from_specs(router.specs), "gw")
    lines = text.splitlines()
    assert "pattern write devices/%u/#" in lines
    assert "pattern write devices/%u/add" in lines
    assert "pattern read roost/replies/%u" in lines and "pattern read roost/replies/%u/#" in lines
    assert "# sites/{site}/reset: no {device_id}, not granted to devices (except under a namespace)" in lines
    assert not any(line.startswith("pattern") and "sites/" in line for line in lines)
    gateway = lines[lines.index("user gw") : lines.index("# Every other user is a device: its own topics only.")]
    assert "topic read devices/+/#" in gateway and "topic write roost/replies/+" in gateway


def test_devices_may_read_their_own_dead_letters() -> None:
    lines = render_acl(load_settings(), Registry.from_specs(router.specs), "gw").splitlines()
    assert "pattern read roost/dead/%u" in lines
    gateway = lines[lines.index("user gw") : lines.index("# Every other user is a device: its own topics only.")]
    assert "topic write roost/dead/+" in gateway
    # A dead-letter topic shared by every device would show each device the others' failures: not granted.
    shared = render_acl(load_settings(dead_letter_topic="roost/dead"), Registry.from_specs(router.specs), "gw")
    assert not any(line.startswith("pattern") and "roost/dead" in line for line in shared.splitlines())


def _roles(config: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    return {role["rolename"]: {(acl["acltype"], acl["topic"]) for acl in role["acls"]} for role in config["roles"]}


def test_dynsec_gives_each_device_a_role_of_its_own_and_denies_the_rest(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    passwords.write_text("gw:$7$101$salt$hash\nd1:$7$101$salt$hash\n\nd2:$7$101$salt$hash\n")
    text = render(load_settings(), Registry.from_specs(router.specs), "gw", "dynsec", ["d3"], passwords)
    config = json.loads(text)
    assert config["defaultACLAccess"] == {
        "publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True
    }  # fmt: skip
    clients = {client["username"]: client for client in config["clients"]}
    assert sorted(clients) == ["d1", "d2", "d3", "gw"]  # the gateway's user is not a device
    assert all("password" not in client for client in clients.values())  # the password file logs them in
    assert clients["d1"]["roles"] == [{"rolename": "roost-device-d1"}]
    roles = _roles(config)
    read = {"roost/replies/d1", "roost/replies/d1/#", "roost/dead/d1"}
    assert roles["roost-device-d1"] == (
        {("publishClientSend", "devices/d1/#"), ("publishClientSend", "devices/d1/add")}
        | {("publishClientReceive", topic) for topic in read}
        | {("subscribePattern", topic) for topic in read}
    )  # nothing of $share/..., of the call topics or of another device's
    gateway = roles["roost-gateway"]
    assert {("subscribePattern", "devices/+/#"), ("subscribePattern", "$share/+/devices/+/#")} <= gateway
    assert {("publishClientReceive", "devices/+/add"), ("publishClientSend", "roost/replies/+/#")} <= gateway
    assert ("publishClientSend", "roost/dead/+") in gateway
    assert ("subscribePattern", "sites/+/reset") in gateway  # no {device_id}: the gateway's alone
    assert not any("sites/" in topic for name, role in roles.items() if name != "roost-gateway" for _, topic in role)


def test_dynsec_refuses_what_it_cannot_confine(tmp_path: Path) -> None:
    settings, registry = load_settings(), Registry.from_specs(router.specs)
    with pytest.raises(ConfigError, match=r"--format dynsec lists every device .*--devices-from"):
        render(settings, registry, "gw", "dynsec", ["gw"], None)  # no device but the gateway
    with pytest.raises(ConfigError, match=r"device 'a/b' cannot be a topic level: it holds '/'"):
        render(settings, registry, "gw", "dynsec", ["a/b"], None)
    with pytest.raises(ConfigError, match=r"device '#' cannot be a topic level: it holds '#'"):
        render(settings, registry, "gw", "dynsec", ["#"], None)
    blank = tmp_path / "blank"
    blank.write_text(":$7$101$salt$hash\n")  # a password file line without a user
    with pytest.raises(ConfigError, match=r"device '' cannot be a topic level: empty"):
        render(settings, registry, "gw", "dynsec", [], blank)
    with pytest.raises(ConfigError, match=r"cannot read the devices from '.*missing': \[Errno 2\]"):
        render(settings, registry, "gw", "dynsec", [], tmp_path / "missing")


def test_roost_acl_reads_the_devices_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = build_parser().parse_args(["acl", "--format", "dynsec", "--devices-from", "-", "--device", "pi-2"])
    monkeypatch.setattr("sys.stdin", io.StringIO("roost:x\npi-1:x\n"))
    text = render(load_settings(), Registry.from_specs(router.specs), ns.gateway_user, ns.acl_format, ns.devices,
                  ns.devices_from)  # fmt: skip
    assert [client["username"] for client in json.loads(text)["clients"]] == ["roost", "pi-1", "pi-2"]
