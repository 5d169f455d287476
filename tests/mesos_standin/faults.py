"""Fault injection: the switches tests flip through the master's ``/standin/...`` endpoints.

This module holds the switches' state, consulted by the master on the hot paths; the endpoints
that flip them are in ``fault_api``.
"""

from __future__ import annotations

import random
import time


class Faults:
    """Active faults of one stand-in."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.subscribe_503_remaining = 0
        self.drop_fraction = 0.0
        self.stall_until = 0.0  # monotonic: no heartbeats before this
        self.silence_until = 0.0  # monotonic: no events at all (held back) before this
        self.dropped_messages = 0

    def take_subscribe_503(self) -> bool:
        """True (and one fewer left) when the next SUBSCRIBE must be answered 503."""
        if self.subscribe_503_remaining > 0:
            self.subscribe_503_remaining -= 1
            return True
        return False

    def drop_message(self) -> bool:
        """True when this framework message is to be lost."""
        if self.drop_fraction > 0 and self._rng.random() < self.drop_fraction:
            self.dropped_messages += 1
            return True
        return False

    def heartbeats_stalled(self) -> bool:
        """True while heartbeats are suppressed."""
        return time.monotonic() < self.stall_until

    def silenced(self) -> bool:
        """True while every scheduler event is held back."""
        return time.monotonic() < self.silence_until

    def reset(self) -> None:
        """Clear every fault."""
        self.subscribe_503_remaining = 0
        self.drop_fraction = 0.0
        self.stall_until = self.silence_until = 0.0
