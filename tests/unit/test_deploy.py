"""The files in deploy/: the systemd unit, the production settings and the Marathon app definition."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.cli.exits import Exit
from gateway.config import load_settings
from tests.support.timeouts import scaled

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def unit() -> configparser.ConfigParser:
    """deploy/roost.service parsed (keys keep their case; ``$MAINPID`` is not interpolated)."""
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "roost.service").read_text())
    return parser


def test_the_unit_runs_roost_as_its_own_user_restarts_it_and_logs_to_the_journal() -> None:
    service = unit()["Service"]
    assert (service["User"], service["Group"]) == ("roost", "roost")
    assert service["Restart"] == "on-failure"
    assert str(int(Exit.CONFIG)) in service["RestartPreventExitStatus"].split()  # a bad config does not fix itself
    assert service["StandardOutput"] == service["StandardError"] == "journal"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert service["StateDirectory"] == "roost"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/roost")
    ns = build_parser().parse_args(command[1:])
    assert ns.command == "run" and ns.config == Path("/etc/roost/roost.toml")
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart exists on this machine: point it at one that does.
    text = (DEPLOY / "roost.service").read_text()
    exec_start = unit()["Service"]["ExecStart"]
    copy = tmp_path / "roost.service"
    copy.write_text(text.replace(exec_start, "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr  # unknown keys are only warned about


def test_the_production_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROOST_METRICS__ENABLED", "ROOST_METRICS__PORT", "ROOST_SHARE_GROUP", "ROOST_SESSION_EXPIRY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(DEPLOY / "roost.toml")
    assert settings.metrics.enabled and settings.metrics.host == "127.0.0.1"
    assert settings.durable.path == Path("/var/lib/roost/queue.sqlite3")
    # It serves only what an operator lists (run refuses none), with fairness between devices on.
    assert settings.functions == ()
    assert settings.limits.device_rate > 0
    assert settings.device_concurrency() == 1  # half of the two workers


def test_the_marathon_app_probes_health_and_readiness_and_shares_the_load() -> None:
    app = json.loads((DEPLOY / "marathon.json").read_text())
    assert app["instances"] >= 2
    assert app["healthChecks"][0]["path"] == "/healthz"
    assert app["readinessChecks"][0]["path"] == "/readyz"
    assert app["readinessChecks"][0]["portName"] == app["portDefinitions"][0]["name"]
    assert app["env"]["ROOST_METRICS__ENABLED"] == "true"
    command = shlex.split(app["cmd"].split("exec ", 1)[1])
    ns = build_parser().parse_args(command[1:])
    assert ns.command == "run" and ns.share_group == "auto"  # named after the password: no device can guess it
    assert "$MESOS_TASK_ID" in ns.client_id  # each instance has its own session at the broker
    assert "ROOST_METRICS__PORT=$PORT0" in app["cmd"]


def _mosquitto_settings(text: str) -> dict[str, str]:
    """``key value`` lines of a mosquitto config (comments and listener blocks' repeats ignored)."""
    lines = (line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {parts[0]: parts[1].strip() if len(parts) > 1 else "" for parts in lines}


def test_the_shipped_broker_config_keeps_what_the_guarantees_need() -> None:
    shipped = _mosquitto_settings((DEPLOY / "mosquitto.conf").read_text())
    tested = _mosquitto_settings((DEPLOY.parent / "gateway" / "data" / "mosquitto.conf").read_text())
    for key in ("set_tcp_nodelay", "max_queued_messages", "max_queued_bytes", "max_inflight_messages", "persistence",
                "autosave_interval", "max_packet_size"):  # fmt: skip
        assert shipped[key] == tested[key], key
    assert shipped["allow_anonymous"] == "false" and "password_file" in shipped
    # Subscriptions are decided by the dynamic-security plugin alone: an acl_file would grant them all.
    assert shipped["plugin"].endswith("/mosquitto_dynamic_security.so") and "plugin_opt_config_file" in shipped
    assert "acl_file" not in shipped
