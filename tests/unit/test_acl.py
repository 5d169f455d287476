"""``roost acl``: templates become mosquitto ACL patterns keyed by the device's username."""

from __future__ import annotations

from gateway.acl import render_acl
from gateway.config import load_settings
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
