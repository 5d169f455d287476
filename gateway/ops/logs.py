"""Log lines: one line per event, as text or as JSON (``log_format``).

Text is ``time level logger: message``; a traceback is folded into the same
line (newlines become `` | ``) so journald, ``grep`` and log shippers see one
event per line. JSON is one object per line with ``time`` (ISO 8601 UTC),
``level``, ``logger``, ``message``, and ``exception`` when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Literal

LogFormat = Literal["text", "json"]


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", " | ")


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO gateway.app: message``, always on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The standard text, tracebacks included, with newlines folded."""
        return _one_line(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """``{"time", "level", "logger", "message"[, "exception"]}``."""
        event: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exception"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    """Log to stderr at ``level`` in ``fmt``, replacing any handler set before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
