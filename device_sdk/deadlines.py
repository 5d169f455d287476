"""One timer thread for many deadlines (CPython): expires calls that got no reply in time.

A thread per call (``threading.Timer``) would not do with hundreds of calls in
flight. Entries are never removed early: when a reply wins, the callback finds
nothing left to expire and returns.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Deadlines:
    """Runs ``callback(key)`` on its own thread once each key's deadline has passed."""

    def __init__(self, callback: Callable[[bytes], None]) -> None:
        self._callback = callback
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()  # ties never compare keys
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the timer thread (a daemon: it never keeps the process alive)."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="roost-device-deadlines", daemon=True)
        self._thread.start()

    def add(self, key: bytes, seconds: float) -> None:
        """Call back for ``key`` in ``seconds``."""
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), key))
            self._wake.notify()

    def stop(self) -> None:
        """Stop the thread; pending deadlines are forgotten."""
        with self._wake:
            self._stopping = True
            self._heap.clear()
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._thread = None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                _, _, key = heapq.heappop(self._heap)
            self._callback(key)
