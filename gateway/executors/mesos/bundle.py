"""The bundle agents fetch: the gateway package, the function modules and their installed dependencies.

Agents start executors in a clean environment (no virtualenv, no PYTHONPATH),
so the bundle carries everything the executor and its workers import:

* ``roost/app/``: the ``gateway`` package and the package of every function
  module, copied from source, with the modules of the same project it imports
  from elsewhere (:mod:`.sources` finds them);
* ``roost/site/``: every file of the installed distributions the executor needs
  (pymesos, msgpack, pydantic), of ``bundle_distributions``, and of everything
  they require, copied from this environment's site-packages by their RECORD;
* ``roost/boot.py``: runs the executor with ``python -I -S`` (no inherited path,
  no system site-packages), adding ``app`` and ``site`` itself;
* ``roost/manifest.json``: the Python version it was built for.

Why copy installed files rather than ``pip download`` a wheelhouse: it works
offline, needs no index on the gateway or the agents, installs nothing at
executor start (an executor is warm in about a second), and ships exactly the
versions the gateway runs. The cost: agents need the same Python minor version
and platform (compiled extensions such as pydantic-core); ``boot.py`` checks the
version and says so. The archive is named by the hash of its contents, so a
changed bundle is a new URI and Mesos's fetcher cache never serves a stale one.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.metadata
import io
import json
import logging
import os
import sys
import tarfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import gateway
from gateway.errors import ConfigError
from gateway.executors.mesos import sources

log = logging.getLogger(__name__)

ROOT = "roost"  # the archive's top directory, and so the bundle's directory in the sandbox
CORE_DISTRIBUTIONS = ("pymesos", "msgpack", "pydantic", "pydantic-settings", "packaging")  # what executors import

BOOT = '''\
"""Start the Roost executor from this bundle (run as: python -I -S roost/boot.py)."""
import json
import os
import site
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    with open(os.path.join(HERE, "manifest.json")) as handle:
        wanted = tuple(json.load(handle)["python"])
    if tuple(sys.version_info[:2]) != wanted:
        sys.stderr.write(
            "roost executor: the bundle was built for Python %d.%d (its compiled dependencies need it), "
            "but %s is %s\\n" % (wanted[0], wanted[1], sys.executable, sys.version.split()[0])
        )
        return 2
    sys.path.insert(0, os.path.join(HERE, "app"))
    site.addsitedir(os.path.join(HERE, "site"))
    from gateway.executors.mesos.executor import main as run

    return run()


if __name__ == "__main__":  # worker processes import this file as __mp_main__: nothing may run then
    raise SystemExit(main())
'''


@dataclass(frozen=True)
class Bundle:
    """A built bundle archive."""

    path: Path
    digest: str
    distributions: tuple[str, ...]  # name==version of every distribution in it


def build(modules: Sequence[str], out_dir: Path, extra_distributions: Sequence[str] = ()) -> Bundle:
    """Build (or reuse, when its contents are unchanged) the bundle for ``modules`` in ``out_dir``."""
    dists = closure([*CORE_DISTRIBUTIONS, *extra_distributions])
    files = {
        f"app/{arcname}": path for arcname, path in sources.package_files(Path(gateway.__file__).parent, "gateway")
    }
    for reference in modules:
        files.update(sources.module_files(reference.partition(":")[0], dists))
    for dist in dists:
        files.update((f"site/{arcname}", source) for arcname, source in _distribution_files(dist))
    names = tuple(sorted(f"{d.metadata['Name']}=={d.version}" for d in dists))
    manifest = json.dumps({"python": list(sys.version_info[:2]), "distributions": names}, indent=1).encode()
    digest = _digest(files, manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"roost-bundle-{digest[:16]}.tar.gz"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.partial")
        # Level 1: bundles cross a LAN once per executor; building fast matters more than a few MB.
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for arcname, source in sorted(files.items()):
                tar.add(source, f"{ROOT}/{arcname}", recursive=False)
            _add_bytes(tar, f"{ROOT}/manifest.json", manifest)
            _add_bytes(tar, f"{ROOT}/boot.py", BOOT.encode())
        partial.replace(path)
        log.info("built the Mesos bundle %s (%d files, %.1f MB)", path, len(files), path.stat().st_size / 1e6)
    return Bundle(path, digest, names)


def closure(names: Iterable[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions named and everything they require (extras left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = canonicalize_name(name)
        if key in found or key == "roost":  # roost itself is copied from source as app/gateway
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(f"the Mesos bundle needs the distribution {name!r}, which is not installed") from None
        if dist.files is None:
            raise ConfigError(f"distribution {name!r} has no RECORD of its files, so it cannot be bundled")
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def _distribution_files(dist: importlib.metadata.Distribution) -> Iterable[tuple[str, Path]]:
    for entry in dist.files or []:
        parts = PurePosixPath(str(entry)).parts
        if not parts or parts[0] == ".." or PurePosixPath(str(entry)).is_absolute():
            continue  # scripts and data installed outside site-packages
        source = Path(str(dist.locate_file(entry)))
        if source.is_file():
            yield str(PurePosixPath(*parts)), source


def _digest(files: dict[str, Path], manifest: bytes) -> str:
    digest = hashlib.sha256(manifest + BOOT.encode())
    for arcname, source in sorted(files.items()):
        digest.update(arcname.encode() + b"\0" + hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class BundleServer:
    """Serves one bundle over HTTP from a daemon thread (agents fetch it through ``CommandInfo.uris``)."""

    def __init__(self, bundle: Bundle, host: str, port: int) -> None:
        self.bundle = bundle
        self._server = http.server.ThreadingHTTPServer((host, port), _handler(bundle.path))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="roost-bundle-http", daemon=True)

    @property
    def port(self) -> int:
        """The port actually listened on."""
        return int(self._server.server_address[1])

    def url(self, host: str) -> str:
        """The bundle's URL for agents that reach this machine as ``host``."""
        return f"http://{host}:{self.port}/{self.bundle.path.name}"

    def start(self) -> None:
        """Serve until :meth:`stop`."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(path: Path) -> type[http.server.BaseHTTPRequestHandler]:
    class BundleHandler(http.server.BaseHTTPRequestHandler):
        """Answers ``GET /<bundle name>`` and nothing else."""

        def do_GET(self) -> None:
            """Send the archive."""
            if self.path.split("?")[0] != f"/{path.name}":
                self.send_error(404)
                return
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(path, "rb") as archive:
                while chunk := archive.read(1 << 20):
                    self.wfile.write(chunk)

        def log_message(self, format: str, *args: object) -> None:
            """One debug line per request, not stderr."""
            log.debug("bundle server: %s", format % args)

    return BundleHandler
