"""A millisecond clock that works on MicroPython and CPython.

MicroPython has ``time.ticks_ms`` (wrapping) but no ``time.monotonic``; CPython
has the opposite. Always compare ticks with :func:`ticks_diff`, never with ``<``.
"""

import time

try:
    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
except AttributeError:  # CPython

    def ticks_ms() -> int:
        """Milliseconds from an arbitrary start."""
        return int(time.monotonic() * 1000)

    def ticks_add(ticks: int, delta: int) -> int:
        """``ticks`` moved by ``delta`` milliseconds."""
        return ticks + delta

    def ticks_diff(later: int, earlier: int) -> int:
        """Signed milliseconds from ``earlier`` to ``later``."""
        return later - earlier

    def sleep_ms(ms: int) -> None:
        """Sleep ``ms`` milliseconds."""
        time.sleep(ms / 1000)
