"""The framework id, kept in a small JSON file so a restarted gateway fails over to it (same framework)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class FrameworkState:
    """The framework id, kept in a small JSON file so a restarted gateway fails over to it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        """The saved framework id, if any."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable Mesos state file %s: %s", self.path, exc)
            return None
        value = data.get("framework_id") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    def save(self, framework_id: str) -> None:
        """Write atomically (a crash mid-write must not lose the id)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        partial.write_text(json.dumps({"framework_id": framework_id}) + "\n")
        partial.replace(self.path)

    def clear(self) -> None:
        """Forget the id (the master removed the framework)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
