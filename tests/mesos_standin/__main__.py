"""``python -m tests.mesos_standin --port PORT --agents N``: run the Mesos stand-in until SIGTERM.

Prints one JSON line on stdout when ready: ``{"master": "host:port", "agents": [...], "work_dir": ...}``.
"""

from __future__ import annotations

import asyncio
import logging

from tests.mesos_standin.cluster import serve
from tests.mesos_standin.settings import parse_args


def main(argv: list[str] | None = None) -> None:
    """Parse flags, log to stderr, serve."""
    settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
