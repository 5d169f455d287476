"""Measure the smallest MicroPython heap at which a device connects and makes one call.

    .venv/bin/python -m tests.device_sdk.heap

prints the figures that ``device_sdk/README.md`` states, for the SDK imported
from source and precompiled with mpy-cross. The program is ``mp/heap_call.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.device_sdk.programs import ROOT, compile_sdk, micropython
from tests.device_sdk.stack import start_stack, stop_stack


def call_works(port: int, heap_kib: int, path: Path = ROOT) -> bool:
    """Whether ``heap_call.py`` gets its result with a heap of ``heap_kib`` KiB."""
    with micropython("heap_call.py", str(port), "pi-1", heap_kib=heap_kib, path=path) as program:
        try:
            program.finish(30)
        except AssertionError:  # MemoryError: a non-zero exit
            return False
    return "result 3" in program.lines


def smallest_heap(port: int, path: Path = ROOT, high: int = 96) -> int:
    """The smallest heap in KiB from which every size up to ``high`` works.

    Scans down one KiB at a time: success is not monotonic in the heap size
    (a heap can fail where a slightly smaller one works), so bisecting could
    report a size that fails one KiB above it.
    """
    size = high
    while size > 1 and call_works(port, size - 1, path):
        size -= 1
    return size


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        stack = start_stack(Path(scratch))
        try:
            print(f"from source:        {smallest_heap(stack.port)} KiB")
            compiled = compile_sdk(Path(scratch) / "mpy")
            print(f"precompiled (.mpy): {smallest_heap(stack.port, compiled)} KiB")
        finally:
            stop_stack(stack)


if __name__ == "__main__":
    main()
