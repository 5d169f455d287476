"""Demo 1 on the Pi: each press of a button calls ``devices/{device_id}/button/pressed``; the LED shows the reply.

Wiring (BCM numbers): a push button between GPIO 17 and GND (gpiozero turns
on the internal pull-up); an LED with a 330 Ω resistor between GPIO 27 and GND.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import Future
from typing import Any

from gpiozero import LED, Button

from device_sdk import Device, SdkError
from examples.raspberry_pi import options

TOPIC = "devices/{device_id}/button/pressed"
BUTTON_PIN = 17
LED_PIN = 27


class ButtonLed:
    """Each press of ``button`` is one call; the ``led`` field of the reply switches ``led``."""

    def __init__(self, device: Device, button: Button, led: LED) -> None:
        self.device = device
        self.led = led
        self.answered = threading.Semaphore(0)  # released once per press that got its reply (or failed)
        button.when_pressed = self.pressed

    def pressed(self) -> None:
        """gpiozero's callback: start the call and return at once; the reply arrives on the network thread."""
        self.device.call_async(TOPIC, timeout=2).add_done_callback(self._replied)

    def _replied(self, future: Future[Any]) -> None:
        try:
            reply = future.result()
        except SdkError as exc:
            options.say(f"pressed → no answer: {exc}")
        else:
            self.led.value = 1 if reply["led"] else 0
            options.say(f"pressed → LED {'on' if reply['led'] else 'off'}")
        self.answered.release()


def simulate_presses(button: Button, demo: ButtonLed, interval: float) -> None:
    """Press the mock button every ``interval`` seconds, each time waiting for the reply."""
    while True:
        button.pin.drive_low()  # pressed: the pull-up is overcome
        button.pin.drive_high()
        demo.answered.acquire(timeout=5)
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    """Run until Ctrl-C."""
    args = options.parser(__doc__ or "").parse_args(argv)
    try:
        with options.device(args) as device:
            button = Button(BUTTON_PIN)
            demo = ButtonLed(device, button, LED(LED_PIN))
            options.say(f"device {device.device_id} connected; press the button (GPIO {BUTTON_PIN})")
            if args.mock:
                simulate_presses(button, demo, args.interval)
            else:
                signal.pause()
    except KeyboardInterrupt:
        pass
    except SdkError as exc:
        options.say(f"error: {exc}")
        return 1
    return 0
