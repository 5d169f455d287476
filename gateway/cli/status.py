"""``roost status``: ask a running gateway's endpoint whether it is alive and ready.

Exit codes: 0 ready, 1 alive but not ready, 69 nothing answers (not running,
or another address), 78 the endpoint is off in the settings and no ``--url``.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from gateway.cli.exits import Exit
from gateway.config import Settings


def endpoint_url(settings: Settings) -> str | None:
    """``http://host:port`` of the gateway's endpoint per the settings, ``None`` when it is off."""
    metrics = settings.metrics
    if not metrics.enabled:
        return None
    host = "127.0.0.1" if metrics.host in ("0.0.0.0", "") else metrics.host
    host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
    return f"http://{host}:{metrics.port}"


def probe(url: str, timeout: float) -> tuple[int, str]:
    """GET ``url``: status and body (an HTTP error status is an answer too); raises ``OSError`` when none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def status_command(settings: Settings, url: str | None, timeout: float) -> int:
    """Print liveness and readiness, one line each, and return the exit code."""
    base = (url or endpoint_url(settings) or "").rstrip("/")
    if not base:
        print("roost status: the operations endpoint is off (set metrics.enabled = true) and no --url", file=sys.stderr)
        return Exit.CONFIG
    try:
        live_code, _ = probe(f"{base}/healthz", timeout)
        ready_code, body = probe(f"{base}/readyz", timeout)
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        print(f"live:  no ({base} does not answer: {reason})")
        return Exit.UNAVAILABLE
    print(f"live:  {'yes' if live_code == 200 else f'no (HTTP {live_code})'}")
    if ready_code == 200:
        print("ready: yes")
        return Exit.OK
    reasons = "; ".join(line for line in body.splitlines() if line.strip()) or f"HTTP {ready_code}"
    print(f"ready: no ({reasons})")
    return Exit.ERROR
