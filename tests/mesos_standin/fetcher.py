"""The Mesos fetcher: bring ``CommandInfo.uris`` into a sandbox before the executor starts.

Supports local paths, ``file://`` and ``http(s)://`` URIs with the ``executable``, ``extract``
(default true) and ``output_file`` fields, one URI after another. Archives (``.tar``, ``.tar.gz``,
``.tgz``, ``.tar.bz2``, ``.tbz2``, ``.tar.xz``, ``.txz``, ``.zip``, ``.gz``) are unpacked into the
sandbox and the archive itself stays next to its contents, as Mesos does without the cache.
``cache`` is accepted and ignored. Downloads run in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import stat
import tarfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from tests.mesos_standin.protocol import Json

DOWNLOAD_TIMEOUT = 30.0
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class FetchError(Exception):
    """A URI could not be fetched or extracted; the container launch fails."""


async def fetch_all(uris: object, sandbox: Path) -> None:
    """Fetch every URI in order; the first failure raises :class:`FetchError`."""
    if not uris:
        return
    if not isinstance(uris, list):
        raise FetchError("CommandInfo.uris must be a list")
    for uri in uris:
        if not isinstance(uri, dict) or not isinstance(uri.get("value"), str):
            raise FetchError(f"bad URI {uri!r}")
        await asyncio.to_thread(fetch_one, uri, sandbox)


def fetch_one(uri: Json, sandbox: Path) -> Path:
    """Fetch one ``CommandInfo.URI`` into the sandbox; returns where the file landed."""
    value = str(uri["value"])
    parts = urlsplit(value)
    name = uri.get("output_file") or PurePosixPath(unquote(parts.path)).name
    if not name:
        raise FetchError(f"cannot tell a file name for {value!r}")
    target = (sandbox / str(name)).resolve()
    if sandbox.resolve() not in target.parents:
        raise FetchError(f"output_file {name!r} leaves the sandbox")
    target.parent.mkdir(parents=True, exist_ok=True)
    _log(sandbox, f"Fetching URI '{value}' to '{target}'")
    try:
        if parts.scheme in ("http", "https"):
            with urllib.request.urlopen(value, timeout=DOWNLOAD_TIMEOUT) as response, open(target, "wb") as out:
                shutil.copyfileobj(response, out)
        elif parts.scheme in ("", "file"):
            shutil.copyfile(unquote(parts.path) if parts.scheme else value, target)
        else:
            raise FetchError(f"scheme {parts.scheme!r} is not supported by the stand-in fetcher")
    except OSError as error:
        raise FetchError(f"failed to fetch {value!r}: {error}") from error
    if uri.get("executable", False):
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    elif uri.get("extract", True):
        _extract(target, sandbox)
    return target


def _extract(archive: Path, sandbox: Path) -> None:
    """Unpack a recognised archive into the sandbox; other files are left as they are."""
    name = archive.name.lower()
    try:
        if name.endswith(_TAR_SUFFIXES):
            with tarfile.open(archive) as tar:
                tar.extractall(sandbox, filter="data")
        elif name.endswith(".zip"):
            _unzip(archive, sandbox)
        elif name.endswith(".gz"):
            with gzip.open(archive) as source, open(sandbox / archive.name[: -len(".gz")], "wb") as out:
                shutil.copyfileobj(source, out)
        else:
            return
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise FetchError(f"failed to extract {archive.name}: {error}") from error
    _log(sandbox, f"Extracted '{archive}' into '{sandbox}'")


def _unzip(archive: Path, sandbox: Path) -> None:
    """Extract a zip keeping Unix permission bits (as ``unzip``, which Mesos runs, does)."""
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            path = Path(bundle.extract(member, sandbox))
            mode = (member.external_attr >> 16) & 0o777
            if mode and not member.is_dir():
                path.chmod(mode)


def _log(sandbox: Path, line: str) -> None:
    """The fetcher's progress goes to the sandbox's stderr, like the real fetcher's log."""
    with open(sandbox / "stderr", "a") as err:
        err.write(line + "\n")
