"""``python -m examples.raspberry_pi.temperature``."""

import sys

from examples.raspberry_pi.temperature.device import main

sys.exit(main())
