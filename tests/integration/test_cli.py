"""The roost command line: functions table, check, and one clear line for bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway_process import EXAMPLES, ROOT
from tests.support.timeouts import scaled


def roost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        cwd=ROOT,
        env=full_env,
    )


@pytest.mark.slow
def test_functions_prints_templates_filters_schemas_and_executors() -> None:
    out = roost("functions", *EXAMPLES)
    assert out.returncode == 0, out.stderr
    for expected in (
        "devices/{device_id}/add",
        "devices/+/add",
        "a: int, b: int",
        "local",
        "alerts/{device_id}/temperature",
    ):
        assert expected in out.stdout
    inline = roost("functions", "--executor", "inline", *EXAMPLES)
    assert "inline" in inline.stdout


@pytest.mark.slow
def test_bad_setting_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    out = roost("run", "--workers", "0", *EXAMPLES)
    assert out.returncode == 78
    assert out.stderr.strip() == "roost: invalid setting 'workers': Input should be greater than or equal to 1"
    config = tmp_path / "roost.toml"
    config.write_text('executor = "gpu"\n')
    out = roost("run", "--config", str(config), *EXAMPLES)
    assert out.returncode == 78
    assert out.stderr.strip() == "roost: invalid setting 'executor': Input should be 'local', 'inline' or 'mesos'"
    out = roost("run", *EXAMPLES, env={"ROOST_BROKER": "nohost:abc"})
    assert out.stderr.strip() == "roost: invalid setting 'broker': broker port must be a number, got 'abc'"


def test_overlapping_templates_stop_the_start(tmp_path: Path) -> None:
    module = tmp_path / "clash_funcs.py"
    module.write_text(
        "from gateway.registry import Router\n"
        "router = Router()\n"
        "@router.function('devices/{device_id}/add')\n"
        "def other_add(a: int) -> int:\n"
        "    return a\n"
    )
    out = roost(
        "check",
        "--functions",
        "functions.examples",
        "--functions",
        "clash_funcs",
        env={"PYTHONPATH": f"{ROOT}:{tmp_path}"},
    )
    assert out.returncode == 78
    assert (
        "topic templates 'devices/{device_id}/add' (functions.examples.add) and 'devices/{device_id}/add'" in out.stderr
    )
    assert "can match the same topic" in out.stderr


def test_missing_function_module() -> None:
    out = roost("check", "--functions", "no.such.module")
    assert out.returncode == 78
    assert "cannot import function module 'no.such.module'" in out.stderr


@pytest.mark.parametrize("command", ["run", "check", "functions", "acl"])
def test_with_no_functions_configured_a_command_says_so_and_exits_78(command: str) -> None:
    # No functions setting serves nothing, and that is refused before the broker is tried (78 before 69).
    out = roost(command, "--broker", "127.0.0.1:1", env={"ROOST_CONNECT_TIMEOUT": "0.5"})
    assert out.returncode == 78
    assert out.stderr.strip() == (
        "roost: no functions to serve: list your function modules in the settings"
        ' (functions = ["myproject.functions"]), ROOST_FUNCTIONS or --functions; to try the examples:'
        " --functions functions.examples"
    )
    assert out.stdout == ""


def test_unreachable_broker_exits_69() -> None:
    command = ("run", "--broker", "127.0.0.1:1", "--executor", "inline", *EXAMPLES)
    out = roost(*command, env={"ROOST_CONNECT_TIMEOUT": "0.5"})
    assert out.returncode == 69
    assert "cannot reach the broker at 127.0.0.1:1" in out.stderr


def test_call_rejects_malformed_arguments() -> None:
    out = roost("call", "--broker", "127.0.0.1:1", "devices/d1/add", "a")
    assert out.returncode == 64
    assert "argument 'a' is not NAME=VALUE" in out.stderr


def test_call_with_a_bad_settings_file_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    out = roost("call", "--config", str(tmp_path / "missing.toml"), "devices/d1/add", "a=1")
    assert out.returncode == 78
    assert out.stderr.strip() == f"roost call: config file {str(tmp_path / 'missing.toml')!r} does not exist"


@pytest.mark.slow
def test_demo_runs_end_to_end() -> None:
    out = roost("demo")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "devices/pi-1/add {'a': 1, 'b': 2} → 3" in out.stdout
    assert "error not_found" in out.stdout
    assert "alerts/pi-1/temperature ← {'device_id': 'pi-1', 'celsius': 35.5" in out.stdout


def test_readme_settings_example_is_valid(tmp_path: Path) -> None:
    """The TOML in the README loads (with the TLS files it names made to exist)."""
    readme = (ROOT / "README.md").read_text()
    toml = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    for name in ("ca.pem", "gw.pem", "gw.key"):
        (tmp_path / name).write_text("x")
        toml = toml.replace(f"/etc/roost/{name}", str(tmp_path / name))
    config = tmp_path / "roost.toml"
    config.write_text(toml)
    from gateway.config import load_settings

    settings = load_settings(config)
    assert (settings.client_id, settings.workers, settings.limits.max_queue) == ("roost-gw1", 2, 1000)
