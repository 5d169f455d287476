"""Unit tests of the stand-in's building blocks: RecordIO, resources, durations, filters, the fetcher."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.mesos_standin import recordio
from tests.mesos_standin.allocator import refuse_seconds
from tests.mesos_standin.fetcher import FetchError, fetch_one
from tests.mesos_standin.protocol import for_framework, format_duration, is_uuid, new_uuid, parse_duration
from tests.mesos_standin.resources import Resources


def test_recordio_length_counts_utf8_bytes_and_decoder_handles_any_split() -> None:
    events: list[dict[str, object]] = [{"type": "HEARTBEAT"}, {"type": "MESSAGE", "message": {"data": "é✓"}}]
    stream = b"".join(recordio.encode(e) for e in events)
    assert stream.startswith(b'20\n{"type":"HEARTBEAT"}')
    for cut in range(len(stream) + 1):
        decoder = recordio.Decoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == events
    assert recordio.chunk(b"abc") == b"3\r\nabc\r\n" and recordio.LAST_CHUNK == b"0\r\n\r\n"
    with pytest.raises(ValueError):
        recordio.Decoder().feed(b"\r\n12\n")


def test_resources_arithmetic_and_shapes() -> None:
    total = Resources.parse_flag("cpus:4;mem:7680;disk:40960;ports:[31000-32000]")
    task = Resources.from_json(
        [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.2}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}},
        ]
    )
    assert task.scalars["cpus"] == 0.3
    left = total - task
    assert left.scalars["cpus"] == 3.7 and left.ranges["ports"] == [(31002, 32000)]
    assert total.contains(task) and not left.contains(task) and left.contains(Resources.parse_flag("cpus:3.7"))
    assert (left + task).ranges == total.ranges
    assert total.to_state() == {"cpus": 4.0, "gpus": 0.0, "mem": 7680.0, "disk": 40960.0, "ports": "[31000-32000]"}
    assert {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31002, "end": 32000}]}, "role": "*"} in (
        left.to_json()
    )
    assert not Resources.parse_flag("cpus:0.001;mem:1").allocatable()
    for bad in ([{"name": "x", "type": "SET"}], [{"name": "cpus", "scalar": {"value": -1}}], "cpus"):
        with pytest.raises(ValueError):
            Resources.from_json(bad)


def test_durations_uuids_and_partition_awareness() -> None:
    assert format_duration(5) == "5secs" and format_duration(0.1) == "100ms" and format_duration(900) == "15mins"
    assert parse_duration("2secs") == 2 and parse_duration("1.5mins") == 90
    assert is_uuid(new_uuid()) and not is_uuid("c2hvcnQ=") and not is_uuid("not base64!")
    assert for_framework("TASK_UNREACHABLE", False) == "TASK_LOST"
    assert for_framework("TASK_UNREACHABLE", True) == "TASK_UNREACHABLE"
    assert for_framework("TASK_RUNNING", False) == "TASK_RUNNING"


def test_refuse_seconds_rules() -> None:
    assert refuse_seconds(None) == 5.0 and refuse_seconds({}) == 5.0 and refuse_seconds({"refuse_seconds": -1}) == 5.0
    assert refuse_seconds({"refuse_seconds": 0}) == 0.0
    assert refuse_seconds({"refuse_seconds": 1e12}) == 365 * 24 * 3600


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    path = tmp_path / "sandbox"
    path.mkdir()
    return path


def test_fetch_tar_gz_extracts_and_keeps_the_archive(tmp_path: Path, sandbox: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("pkg/run.sh")
        data = b"#!/bin/sh\necho hi\n"
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    fetch_one({"value": f"file://{archive}"}, sandbox)
    assert (sandbox / "bundle.tar.gz").exists() and (sandbox / "pkg/run.sh").read_bytes() == data
    assert os.access(sandbox / "pkg/run.sh", os.X_OK)
    assert "Fetching URI" in (sandbox / "stderr").read_text()


def test_fetch_zip_keeps_modes_and_extract_false_does_not_unpack(tmp_path: Path, sandbox: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        info = zipfile.ZipInfo("tool")
        info.external_attr = (stat.S_IFREG | 0o750) << 16
        bundle.writestr(info, "x")
    fetch_one({"value": str(archive), "extract": False, "output_file": "copy.zip"}, sandbox)
    assert (sandbox / "copy.zip").exists() and not (sandbox / "tool").exists()
    fetch_one({"value": str(archive)}, sandbox)
    assert stat.S_IMODE((sandbox / "tool").stat().st_mode) == 0o750


def test_fetch_executable_gz_and_output_file(tmp_path: Path, sandbox: Path) -> None:
    script = tmp_path / "script.tar.gz"  # executable wins over extract: copied, not unpacked
    script.write_bytes(b"not really a tarball")
    assert fetch_one({"value": str(script), "executable": True, "output_file": "bin/tool"}, sandbox) == (
        sandbox / "bin/tool"
    )
    assert os.access(sandbox / "bin/tool", os.X_OK)
    compressed = tmp_path / "notes.txt.gz"
    compressed.write_bytes(gzip.compress(b"notes"))
    fetch_one({"value": str(compressed)}, sandbox)
    assert (sandbox / "notes.txt").read_bytes() == b"notes"


def test_fetch_failures(tmp_path: Path, sandbox: Path) -> None:
    with pytest.raises(FetchError):
        fetch_one({"value": str(tmp_path / "missing")}, sandbox)
    with pytest.raises(FetchError, match="not supported"):
        fetch_one({"value": "hdfs://namenode/bundle.tar.gz"}, sandbox)
    with pytest.raises(FetchError, match="leaves the sandbox"):
        fetch_one({"value": str(tmp_path / "missing"), "output_file": "../escape"}, sandbox)
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(FetchError):
        fetch_one({"value": str(evil)}, sandbox)
    assert not (tmp_path / "outside").exists()
