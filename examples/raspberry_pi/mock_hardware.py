"""Stand-ins for the demos' hardware on any computer: gpiozero's mock pins and a mock MCP3008.

gpiozero drives an MCP3008 over software SPI when its pins are mock pins; the
:class:`MockMCP3008` below is the chip's side of that conversation (as in
gpiozero's own test suite), answering with whatever voltage a test sets.
"""

from __future__ import annotations

from gpiozero import Device as GpioDevice
from gpiozero.pins.mock import MockFactory, MockSPIDevice

# SPI0 with chip select CE0, in BCM numbering: the pins gpiozero uses for MCP3008(channel=...).
SPI0_CE0 = {"clock_pin": 11, "mosi_pin": 10, "miso_pin": 9, "select_pin": 8}


def use_mock_pins() -> MockFactory:
    """Make gpiozero use mock pins from now on (the same as ``GPIOZERO_PIN_FACTORY=mock``)."""
    factory = MockFactory()
    GpioDevice.pin_factory = factory
    return factory


class MockMCP3008(MockSPIDevice):  # type: ignore[misc]  # gpiozero has no type hints
    """The chip side of an MCP3008 (10-bit, single-ended reads) with settable channel voltages.

    Create it before gpiozero's ``MCP3008`` so the SPI pins get the mock SPI pin classes.
    """

    def __init__(self, vref: float = 3.3) -> None:
        super().__init__(**SPI0_CE0)
        self.vref = vref
        self.volts = [0.0] * 8
        self._state = "idle"

    def set_celsius_tmp36(self, channel: int, celsius: float) -> None:
        """Put a TMP36's output for ``celsius`` on ``channel`` (10 mV/°C, 0.5 V at 0 °C)."""
        self.volts[channel] = 0.5 + celsius / 100.0

    def on_start(self) -> None:
        super().on_start()
        self._state = "idle"

    def on_bit(self) -> None:
        # Host sends: zeros, a start bit, the single/differential bit, three channel bits.
        if self._state == "idle":
            if self.rx_buf[-1]:
                self._state = "mode"
                self.rx_buf.clear()
        elif self._state == "mode":
            self._state = "channel"
            self.rx_buf.clear()
        elif self._state == "channel":
            if len(self.rx_buf) == 3:
                volts = min(max(self.volts[self.rx_word()], 0.0), self.vref)
                self.tx_word(round(volts / self.vref * 1023), 12)  # a null bit, then 10 data bits
                self._state = "result"
        elif self._state == "result" and not self.tx_buf:
            self._state = "idle"
            self.rx_buf.clear()
