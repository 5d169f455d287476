"""The mesos executor's pure parts: channel frames, pool task JSON, settings, the bundle."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError, RegistryError
from gateway.executors import framing
from gateway.executors.framing import ReplyKind
from gateway.executors.mesos import bundle, tasks, wire
from gateway.registry import Router
from tests.support.timeouts import scaled


def test_channel_frames_round_trip_through_the_frame_reader() -> None:
    pickled = wire.pickle_call("devices/{device_id}/add", {"a": 1, "b": 2})
    stream = b"".join(
        [
            wire.json_frame(wire.Kind.HELLO, {"executor_id": "e1", "token": "t"}),
            wire.call_frame(7, 1.5, None, pickled),
            wire.call_frame(8, 2.0, 0.25, pickled),
            wire.ack_frame(2),
            wire.result_frame(7, ReplyKind.ERROR, 12, framing.error_payload("timeout", "too slow")),
            wire.resume_frame([3, 2**40]),
            wire.control(wire.Kind.PING),
        ]
    )
    reader = framing.FrameReader(1 << 16)
    bodies = [body for i in range(0, len(stream), 5) for body in reader.feed(stream[i : i + 5])]  # split anywhere
    kinds = [body[0] for body in bodies]
    assert kinds == [1, 4, 4, 5, 6, 7, 8]  # HELLO, CALL, CALL, ACK, RESULT, RESUME, PING
    assert wire.parse_json(bodies[0]) == {"executor_id": "e1", "token": "t"}
    assert wire.parse_call(bodies[1]) == (7, 1.5, None, pickled)
    call_id, timeout, left, _ = wire.parse_call(bodies[2])
    assert (call_id, timeout) == (8, 2.0) and left is not None and math.isclose(left, 0.25)
    assert wire.parse_ack(bodies[3]) == 2
    _, result_id, kind, micros = wire.RESULT_HEADER.unpack_from(bodies[4])
    assert (result_id, kind, micros) == (7, ReplyKind.ERROR, 12)
    assert framing.parse_error(bodies[4][wire.RESULT_HEADER.size :]) == ("timeout", "too slow")
    assert wire.parse_resume(bodies[5]) == [3, 2**40]
    assert bodies[6] == bytes([wire.Kind.PING])


def test_pool_task_ids_name_the_gateway_instance() -> None:
    ident = tasks.task_id("0a1b2c3d", 12)
    assert ident == "roost-0a1b2c3d-12" and tasks.instance_of(ident) == "0a1b2c3d"
    assert tasks.instance_of("someone-elses-task") is None


def test_pool_task_runs_the_bundle_isolated_with_its_config_in_the_environment() -> None:
    offer = {
        "id": {"value": "o1"},
        "agent_id": {"value": "S0"},
        "resources": [tasks.scalar("cpus", 1.1), tasks.scalar("mem", 288.0)],
    }
    assert tasks.fits(offer, 1.0, 256.0) and not tasks.fits(offer, 1.1, 256.0)
    config = tasks.ExecutorConfig("gw:7000", "tok", ("functions.examples",), 2, 1024, 1.0, 10.0, 60.0)
    info = tasks.pool_task("roost-ab-1", offer, "F", "http://gw:8000/b.tar.gz", "python3.11", config, 1.0, 256.0)
    command = info["executor"]["command"]
    assert command["value"] == 'exec python3.11 -I -S "$MESOS_SANDBOX/roost/boot.py"'
    assert command["uris"] == [{"value": "http://gw:8000/b.tar.gz", "extract": True, "cache": False}]
    [variable] = command["environment"]["variables"]
    assert variable["name"] == "ROOST_EXECUTOR" and tasks.ExecutorConfig.from_json(variable["value"]) == config
    assert info["task_id"] == info["executor"]["executor_id"] == {"value": "roost-ab-1"}
    assert info["agent_id"] == {"value": "S0"} and info["executor"]["framework_id"] == {"value": "F"}
    framework = tasks.framework_info("roost", "gw", "*", 604800.0, "F-1")
    assert framework["id"] == {"value": "F-1"} and framework["checkpoint"] is True
    assert framework["capabilities"] == [{"type": "PARTITION_AWARE"}] and framework["failover_timeout"] == 604800.0
    assert "principal" not in framework
    # With authentication on, Mesos wants the authenticated principal in FrameworkInfo too.
    assert tasks.framework_info("roost", "gw", "*", 1.0, None, "roost-gw")["principal"] == "roost-gw"


def test_mesos_settings_come_from_flags_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "roost.toml"
    config.write_text('executor = "mesos"\n[mesos]\nmaster = "file:5050"\nexecutors = 3\nrole = "edge"\n')
    monkeypatch.setenv("ROOST_MESOS__FRAMEWORK_NAME", "from-env")
    settings = load_settings(config, mesos={"master": "flag:5050"})
    assert settings.executor == "mesos"
    mesos = settings.mesos
    assert (mesos.master, mesos.executors, mesos.role, mesos.framework_name) == ("flag:5050", 3, "edge", "from-env")
    assert load_settings(config).mesos.master == "file:5050"
    with pytest.raises(ConfigError, match="channel_timeout must be more than twice the heartbeat"):
        load_settings(mesos={"heartbeat": 5, "channel_timeout": 6})
    with pytest.raises(ConfigError, match=r"mesos\.channel_listen"):
        load_settings(mesos={"channel_listen": "nowhere"})
    with pytest.raises(ConfigError, match="max_executors must be at least executors"):
        load_settings(mesos={"executors": 3, "max_executors": 2})


def test_the_configuration_example_in_the_mesos_docs_loads(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "mesos.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "roost.toml"
    config.write_text(example)
    mesos = load_settings(config).mesos
    assert (mesos.executors, mesos.max_executors, mesos.fallback) == (2, 6, "local")


def test_only_isolated_functions_take_resources() -> None:
    router = Router()

    @router.function("devices/{device_id}/heavy", isolated=True, cpus=2.0, mem=512)
    def heavy() -> None:
        """Heavy."""

    (spec,) = router.specs
    assert (spec.options.isolated, spec.options.cpus, spec.options.mem) == (True, 2.0, 512)
    with pytest.raises(RegistryError, match="resources of an isolated function"):
        router.function("devices/{device_id}/light", cpus=1.0)(heavy)
    with pytest.raises(RegistryError, match="mem at least 32"):
        router.function("devices/{device_id}/tiny", isolated=True, mem=8)(heavy)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> bundle.Bundle:
    return bundle.build(["functions.examples"], tmp_path_factory.getbasetemp() / "mesos-bundles")


@pytest.mark.slow
def test_bundle_holds_the_app_its_dependencies_and_is_reused_while_unchanged(built: bundle.Bundle) -> None:
    with tarfile.open(built.path) as tar:
        names = set(tar.getnames())
    assert {"roost/boot.py", "roost/manifest.json", "roost/app/functions/examples.py"} <= names
    assert "roost/app/gateway/executors/mesos/executor.py" in names
    for package in ("pymesos", "msgpack", "pydantic", "pydantic_core", "http_parser", "addict"):
        assert f"roost/site/{package}/__init__.py" in names, package
    assert "roost/site/six.py" in names  # a single-module distribution
    assert not any("__pycache__" in name for name in names if name.startswith("roost/app/"))
    assert any(name.startswith("pymesos==0.3.15") for name in built.distributions)
    again = bundle.build(["functions.examples"], built.path.parent)
    assert again.path == built.path and again.digest == built.digest


@pytest.mark.slow
def test_bundle_carries_what_a_function_module_imports_from_elsewhere_in_its_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "src" / "edgeapp"
    for directory, source in {
        "": "",
        "functions": "from edgeapp.common import units\nfrom ..common.deep import helper\n",
        "common": "",
        "common/deep": "",
        "unused": "",
    }.items():
        (project / directory).mkdir(parents=True, exist_ok=True)
        (project / directory / "__init__.py").write_text(source)
    (project / "common" / "units.py").write_text("def celsius(f):\n    from . import tables\n    return f\n")
    (project / "common" / "tables.py").write_text("")
    (project / "common" / "deep" / "helper.py").write_text("import json\n")
    (project / "unused" / "other.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    with tarfile.open(bundle.build(["edgeapp.functions"], tmp_path / "bundles").path) as tar:
        names = {name.removeprefix("roost/app/") for name in tar.getnames() if name.startswith("roost/app/edgeapp")}
    assert names == {
        "edgeapp/__init__.py", "edgeapp/functions/__init__.py", "edgeapp/common/__init__.py",
        "edgeapp/common/units.py", "edgeapp/common/tables.py", "edgeapp/common/deep/__init__.py",
        "edgeapp/common/deep/helper.py",
    }  # fmt: skip


def test_bundle_refuses_a_python_of_another_version(built: bundle.Bundle, tmp_path: Path) -> None:
    with tarfile.open(built.path) as tar:
        tar.extractall(tmp_path, filter="data")
    manifest = tmp_path / "roost" / "manifest.json"
    manifest.write_text(json.dumps({"python": [2, 7]}))
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(tmp_path / "roost" / "boot.py")],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert done.returncode == 2
    assert "the bundle was built for Python 2.7 (its compiled dependencies need it)" in done.stderr


def test_bundle_names_a_missing_distribution(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs the distribution 'no-such-distribution-xyz', which is not installed"):
        bundle.build(["functions.examples"], tmp_path, ["no-such-distribution-xyz"])
