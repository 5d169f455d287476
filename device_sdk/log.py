"""Log lines from the MicroPython-safe core: ``logging`` on CPython, ``print`` on MicroPython."""

try:
    import logging

    _logger = logging.getLogger("device_sdk")

    def warning(text: str) -> None:
        """Log a warning."""
        _logger.warning("%s", text)

    def info(text: str) -> None:
        """Log an informational line."""
        _logger.info("%s", text)

except ImportError:  # MicroPython without micropython-lib's logging
    import sys

    def warning(text: str) -> None:
        """Print a warning to stderr."""
        print("device_sdk WARNING:", text, file=sys.stderr)

    def info(text: str) -> None:
        """Print an informational line to stderr."""
        print("device_sdk INFO:", text, file=sys.stderr)
