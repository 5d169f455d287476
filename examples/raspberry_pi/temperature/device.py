"""Demo 2 on the Pi: a TMP36 read through an MCP3008 → readings as events → alerts from the gateway.

Wiring (BCM numbers): MCP3008 on SPI0 with CE0 (CLK GPIO 11, DOUT→MISO GPIO 9,
DIN←MOSI GPIO 10, CS GPIO 8), VDD and VREF to 3.3 V, AGND and DGND to GND;
TMP36 Vout to CH0, its other legs to 3.3 V and GND; an LED with a 330 Ω
resistor between GPIO 22 and GND blinks on each alert.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from gpiozero import LED, MCP3008

from device_sdk import Device, SdkError
from examples.raspberry_pi import mock_hardware, options

READINGS = "devices/{device_id}/readings/temperature"  # functions/sensors.py: temperature()
ALERTS = "alerts/{device_id}/temperature"
ALERT_LED_PIN = 22
# What the mock sensor reads, over and over: two of these are above the 30 °C limit of functions/sensors.py.
MOCK_CELSIUS = (21.0, 24.0, 27.0, 31.0, 34.0)


def tmp36_celsius(volts: float) -> float:
    """A TMP36's temperature: 10 mV per °C, 0.5 V at 0 °C."""
    return (volts - 0.5) * 100.0


class TemperatureStation:
    """Publishes readings of ``adc`` as events and blinks ``alert_led`` for each alert that comes back."""

    def __init__(self, device: Device, adc: MCP3008, alert_led: LED) -> None:
        self.device = device
        self.adc = adc
        self.alert_led = alert_led
        device.subscribe(ALERTS, self._alert)

    def send_reading(self) -> float:
        """Read the sensor and publish ``{"celsius": ...}`` (an event: no reply)."""
        celsius = round(tmp36_celsius(self.adc.voltage), 1)
        self.device.publish(READINGS, {"celsius": celsius})
        options.say(f"reading {celsius:.1f} °C")
        return celsius

    def _alert(self, topic: str, alert: Any) -> None:
        options.say(f"ALERT {alert['celsius']:.1f} °C is above {alert['limit']:.1f} °C")
        self.alert_led.blink(on_time=0.2, off_time=0.2, n=3)


def main(argv: list[str] | None = None) -> int:
    """Run until Ctrl-C."""
    args = options.parser(__doc__ or "").parse_args(argv)
    try:
        with options.device(args) as device:
            chip = mock_hardware.MockMCP3008() if args.mock else None
            station = TemperatureStation(device, MCP3008(channel=0), LED(ALERT_LED_PIN))
            options.say(f"device {device.device_id} connected; a reading every {args.interval:g} s")
            mock_readings = itertools.cycle(MOCK_CELSIUS)
            while True:
                if chip is not None:
                    chip.set_celsius_tmp36(0, next(mock_readings))
                station.send_reading()
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    except SdkError as exc:
        options.say(f"error: {exc}")
        return 1
    return 0
