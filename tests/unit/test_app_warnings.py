"""gateway.app at start: Mesos-only options on a function that will not run on Mesos get one warning line."""

from __future__ import annotations

import logging

import pytest

from gateway.app import build_executors
from gateway.config import load_settings
from gateway.registry import Registry, Router

router = Router()


@router.function("devices/{device_id}/heavy", isolated=True, cpus=2.0)
def heavy() -> None:
    """Asks for a Mesos task of its own."""


@router.function("devices/{device_id}/plain")
def plain() -> None:
    """Sets no Mesos-only option."""


@router.function("devices/{device_id}/pinned", executor="mesos", isolated=True)
def pinned() -> None:
    """Runs on Mesos whatever the gateway's executor is."""


def warnings_at_start(executor: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    settings = load_settings(executor=executor)
    registry = Registry.from_specs(router.specs)
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        build_executors(settings, registry)
    return [record.getMessage() for record in caplog.records if record.name == "gateway.app"]


def test_a_function_setting_mesos_only_options_off_mesos_gets_one_line(caplog: pytest.LogCaptureFixture) -> None:
    assert warnings_at_start("inline", caplog) == [
        "function devices/{device_id}/heavy sets isolated, cpus, which only the mesos executor honours (it runs on "
        "inline)"
    ]


def test_no_line_when_the_gateway_runs_on_mesos(caplog: pytest.LogCaptureFixture) -> None:
    assert warnings_at_start("mesos", caplog) == []
