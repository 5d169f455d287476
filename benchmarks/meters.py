"""CPU time and memory of process trees, read with psutil.

CPU is read before and after a measurement and divided by the requests it
answered. Memory is the summed PSS (proportional set size) of a set of
processes, sampled by a background thread: PSS splits shared pages between the
processes sharing them, so forked workers are not counted twice.

What a target's set is belongs to the target (:meth:`benchmarks.targets.TargetProcess.processes`):
usually a process and its descendants; for the mesos executor also the
executors under the Mesos stand-in, without the stand-in itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import psutil

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
Processes = Callable[[], list[psutil.Process]]


def tree(pid: int, include_root: bool = True) -> list[psutil.Process]:
    """A process and its live descendants (only the descendants when ``include_root`` is false)."""
    root = psutil.Process(pid)
    try:
        children = root.children(recursive=True)
    except _GONE:
        children = []
    return [root, *children] if include_root else children


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of the processes (and of the children they reaped)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(*_GONE):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (and of the children they reaped)."""
    return cpu_seconds(tree(pid))


def pss_bytes(processes: list[psutil.Process]) -> int:
    """Summed PSS of the processes, in bytes."""
    total = 0
    for process in processes:
        with contextlib.suppress(*_GONE):
            total += process.memory_full_info().pss
    return total


class PeakMemory:
    """Samples the summed PSS of ``processes()`` every ``interval`` seconds on a thread and keeps the peak."""

    def __init__(self, processes: Processes, interval: float = 0.2, max_seconds: float = 3600.0) -> None:
        self.processes = processes
        self.interval = interval
        self.max_samples = int(max_seconds / interval)
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss", daemon=True)

    def _run(self) -> None:
        for _ in range(self.max_samples):
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        """Take one sample now."""
        try:
            value = pss_bytes(self.processes())
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
