"""The gateway side of the button demo: load with ``--functions examples.raspberry_pi.button_led.functions``."""

from __future__ import annotations

from gateway.registry import Router

router = Router()

# Inline: the state must live in one process (the gateway's), not in one of several workers.
_lit: dict[str, bool] = {}


@router.function("devices/{device_id}/button/pressed", executor="inline")
def pressed(device_id: str) -> dict[str, bool]:
    """Flip the device's LED state and return it as ``{"led": bool}``."""
    _lit[device_id] = not _lit.get(device_id, False)
    return {"led": _lit[device_id]}
