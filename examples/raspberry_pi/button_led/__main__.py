"""``python -m examples.raspberry_pi.button_led``."""

import sys

from examples.raspberry_pi.button_led.device import main

sys.exit(main())
