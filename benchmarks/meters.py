"""CPU time and memory of process trees, read with psutil.

CPU is read before and after a measurement and divided by the requests it
answered. Memory is the summed PSS (proportional set size) of a process and
all its children, sampled by a background thread: PSS splits shared pages
between the processes sharing them, so forked workers are not counted twice.
"""

from __future__ import annotations

import contextlib
import threading

import psutil

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    try:
        return [root, *root.children(recursive=True)]
    except _GONE:
        return [root]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (and of the children they reaped)."""
    total = 0.0
    for process in _tree(pid):
        with contextlib.suppress(*_GONE):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def tree_pss_bytes(pid: int) -> int:
    """Summed PSS of a process and its descendants, in bytes."""
    total = 0
    for process in _tree(pid):
        with contextlib.suppress(*_GONE):
            total += process.memory_full_info().pss
    return total


class PeakMemory:
    """Samples a process tree's summed PSS every ``interval`` seconds on a thread and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2, max_seconds: float = 3600.0) -> None:
        self.pid = pid
        self.interval = interval
        self.max_samples = int(max_seconds / interval)
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pss-{pid}", daemon=True)

    def _run(self) -> None:
        for _ in range(self.max_samples):
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        """Take one sample now."""
        try:
            value = tree_pss_bytes(self.pid)
        except _GONE:
            return
        self.samples += 1
        self.peak_bytes = max(self.peak_bytes, value)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.sample()
