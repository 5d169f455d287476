"""Event handlers: readings come in without a reply; alerts go out on another topic."""

from __future__ import annotations

from gateway.registry import Router

router = Router()

ALERT_ABOVE_C = 30.0


# A comparison of two numbers: runs inline, on no worker process (and so outside a device's share of them).
@router.function(
    "devices/{device_id}/readings/temperature", publish="alerts/{device_id}/temperature", executor="inline"
)
def temperature(device_id: str, celsius: float) -> dict[str, object] | None:
    """Turn a temperature reading into an alert when it is too hot; ``None`` publishes nothing."""
    if celsius <= ALERT_ABOVE_C:
        return None
    return {"device_id": device_id, "celsius": celsius, "limit": ALERT_ABOVE_C}
