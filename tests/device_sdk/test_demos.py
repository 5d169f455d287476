"""The Raspberry Pi demos with gpiozero's mock pins (and a mock MCP3008) against a real gateway."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from gpiozero import LED, MCP3008, Button
from gpiozero import Device as GpioDevice

from device_sdk import Device
from examples.raspberry_pi import mock_hardware
from examples.raspberry_pi.button_led.device import BUTTON_PIN, LED_PIN, ButtonLed
from examples.raspberry_pi.temperature.device import ALERT_LED_PIN, TemperatureStation, tmp36_celsius
from tests.device_sdk.programs import Program
from tests.device_sdk.stack import Stack
from tests.support.timeouts import scaled, wait_for


@pytest.fixture
def mock_pins() -> Iterator[None]:
    previous = GpioDevice.pin_factory
    factory = mock_hardware.use_mock_pins()
    yield
    factory.reset()
    GpioDevice.pin_factory = previous


@pytest.fixture
def device(stack: Stack, device_id: str) -> Iterator[Device]:
    with Device("127.0.0.1", stack.port, device_id=device_id) as dev:
        yield dev


def test_each_press_toggles_the_led_through_the_gateway(mock_pins: None, device: Device) -> None:
    button, led = Button(BUTTON_PIN), LED(LED_PIN)
    demo = ButtonLed(device, button, led)
    for expected in (True, False, True):
        button.pin.drive_low()
        button.pin.drive_high()
        assert demo.answered.acquire(timeout=scaled(10)), "no answer to the press"
        assert led.is_lit is expected


def test_tmp36_conversion() -> None:
    assert tmp36_celsius(0.5) == 0.0
    assert tmp36_celsius(0.75) == pytest.approx(25.0)


def test_hot_readings_come_back_as_alerts(mock_pins: None, device: Device) -> None:
    chip = mock_hardware.MockMCP3008()
    alert_led = LED(ALERT_LED_PIN)
    adc = MCP3008(channel=0)
    station = TemperatureStation(device, adc, alert_led)
    try:
        chip.set_celsius_tmp36(0, 22.0)
        assert station.send_reading() == pytest.approx(22.0, abs=0.4)  # 10-bit ADC: ~0.3 °C per step
        chip.set_celsius_tmp36(0, 35.0)
        assert station.send_reading() == pytest.approx(35.0, abs=0.4)
        # The mock pin keeps every change: the blink for the alert of the hot reading, however brief.
        wait_for(lambda: any(change.state for change in alert_led.pin.states), 10, "the alert LED to blink")
    finally:
        alert_led.close()  # from this thread: left to the garbage collector, its blink thread would join itself
        adc.close()


def demo(stack: Stack, device_id: str, name: str) -> Program:
    command = [sys.executable, "-m", f"examples.raspberry_pi.{name}", "--broker", f"127.0.0.1:{stack.port}",
               "--device-id", device_id, "--mock", "--interval", "0.01"]
    return Program(command)


def test_button_demo_runs_as_its_readme_says(stack: Stack, device_id: str) -> None:
    with demo(stack, device_id, "button_led") as program:
        for state in ("on", "off", "on"):
            program.expect_line(f"pressed → LED {state}")
        assert program.interrupt() == 0


def test_temperature_demo_runs_as_its_readme_says(stack: Stack, device_id: str) -> None:
    with demo(stack, device_id, "temperature") as program:
        assert program.expect_line("ALERT").startswith("ALERT 31.1 °C is above 30.0 °C")
        assert program.expect_line("ALERT").startswith("ALERT 34.0 °C")
        assert "reading 27.2 °C" in program.lines
        assert program.interrupt() == 0
