"""The demos keep their state in scratch directories: run with an empty ``HOME``, they leave it empty."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway_process import ROOT
from tests.support.timeouts import scaled

pytestmark = pytest.mark.slow  # each test runs a whole demo


def run_with_home(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` from the repository root with ``HOME`` (and no XDG override) pointing at ``home``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("XDG_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=scaled(180), cwd=ROOT, env=env
    )


def everything_under(home: Path) -> list[str]:
    """Every file and directory below ``home``, hidden ones included."""
    return sorted(str(path.relative_to(home)) for path in home.rglob("*"))


def test_make_demo_leaves_home_empty(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = run_with_home(home, "-m", "gateway", "demo")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "devices/pi-1/add {'a': 1, 'b': 2} → 3" in out.stdout  # it did run the calls
    assert everything_under(home) == []


def test_make_demo_mesos_leaves_home_empty(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = run_with_home(home, "examples/mesos_demo.py")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "devices/pi-1/add {'a': 1, 'b': 2} → 3" in out.stdout
    assert everything_under(home) == []
