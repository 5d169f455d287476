"""The agent's task status update manager: reliable, ordered, at-least-once updates per task.

Every update with a uuid joins its task's stream. Only the oldest unacknowledged update of each
task is forwarded to the master; it is resent after the retry interval (doubling up to 10
minutes) until the scheduler's acknowledgement comes back, then the next one goes out. A
duplicate uuid is ignored. Mesos persists streams when checkpointing; the stand-in keeps them in
memory only (agents never restart here).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.mesos_standin.protocol import TERMINAL_STATES, Json, value_of

log = logging.getLogger(__name__)

MAX_RETRY_INTERVAL = 600.0


@dataclass
class _Stream:
    pending: deque[Json] = field(default_factory=deque)
    seen: set[str] = field(default_factory=set)
    retry: asyncio.TimerHandle | None = None
    interval: float = 0.0


Forward = Callable[[str, Json], None]
"""Called with (framework id, status) to send one update to the master."""


class StatusUpdateManager:
    """Per-task update streams of one agent."""

    def __init__(self, forward: Forward, retry_interval: float, on_terminal_ack: Callable[[str, str], None]) -> None:
        self._forward = forward
        self._retry_interval = retry_interval
        self._on_terminal_ack = on_terminal_ack
        self._streams: dict[tuple[str, str], _Stream] = {}

    def update(self, framework_id: str, status: Json) -> None:
        """Accept a status update (it must carry a uuid); forwards it if its task has none in flight."""
        task_id = str(value_of(status.get("task_id")))
        stream = self._streams.setdefault((framework_id, task_id), _Stream())
        uuid = str(status["uuid"])
        if uuid in stream.seen:
            log.info("duplicate status update %s for task %s ignored", uuid, task_id)
            return
        stream.seen.add(uuid)
        stream.pending.append(status)
        if len(stream.pending) == 1:
            self._send_head(framework_id, task_id, stream, first=True)

    def acknowledge(self, framework_id: str, task_id: str, uuid: str) -> bool:
        """Apply a scheduler acknowledgement; False when it matches no update in flight."""
        stream = self._streams.get((framework_id, task_id))
        if stream is None or not stream.pending or stream.pending[0].get("uuid") != uuid:
            return False
        acked = stream.pending.popleft()
        if stream.retry is not None:
            stream.retry.cancel()
            stream.retry = None
        if stream.pending:
            self._send_head(framework_id, task_id, stream, first=True)
        elif acked.get("state") in TERMINAL_STATES:
            del self._streams[(framework_id, task_id)]
            self._on_terminal_ack(framework_id, task_id)
        return True

    def pending(self, framework_id: str | None = None) -> list[Json]:
        """Unacknowledged updates (of one framework, or all), oldest first per task."""
        return [s for (fid, _), stream in self._streams.items() if framework_id in (None, fid) for s in stream.pending]

    def remove_framework(self, framework_id: str) -> None:
        """Forget a removed framework's streams (nobody will acknowledge them)."""
        for key in [key for key in self._streams if key[0] == framework_id]:
            self._drop(key)

    def clear(self) -> None:
        """Forget everything (the agent died)."""
        for key in list(self._streams):
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        stream = self._streams.pop(key)
        if stream.retry is not None:
            stream.retry.cancel()

    def _send_head(self, framework_id: str, task_id: str, stream: _Stream, first: bool) -> None:
        """Forward the oldest pending update and arm its resend timer."""
        if first:
            stream.interval = self._retry_interval
        else:
            stream.interval = min(stream.interval * 2, MAX_RETRY_INTERVAL)
        self._forward(framework_id, stream.pending[0])
        loop = asyncio.get_running_loop()
        stream.retry = loop.call_later(stream.interval, self._resend, framework_id, task_id)

    def _resend(self, framework_id: str, task_id: str) -> None:
        stream = self._streams.get((framework_id, task_id))
        if stream is None or not stream.pending:
            return
        log.info("resending unacknowledged update %s for task %s", stream.pending[0].get("uuid"), task_id)
        self._send_head(framework_id, task_id, stream, first=False)
