"""Which source files of a function module's project go into the Mesos bundle (``roost/app/``).

The function module's package goes whole (its directory), with its parent
packages' ``__init__``; and so does every module of the same project (the same
top-level package) that it imports from outside that package, and those
modules' imports in turn: a function module that does ``from myapp.common
import units`` finds ``units`` on the agent as it does on the gateway's machine.
Imports are found by reading the sources' ``import`` statements (also those
inside functions), not by running anything; an import built at run time
(``importlib.import_module``) is not seen. Installed distributions are not
copied from here: :mod:`.bundle` takes them from site-packages by their RECORD.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from gateway.errors import ConfigError

_SKIP_PARTS = {"__pycache__"}


def module_files(name: str, dists: list[importlib.metadata.Distribution]) -> list[tuple[str, Path]]:
    """``(name under roost/, file)`` for function module ``name``: its package's directory, whole, its parent
    packages' ``__init__``, and the modules of its project it imports from elsewhere, with their parents'
    ``__init__``. None when it is in ``gateway`` or in a bundled distribution of ``dists`` (copied whole)."""
    files = _package_files_of(name, dists)
    top = name.partition(".")[0]
    for other in sorted(_project_imports(name, top)) if files else ():
        files.extend(_source_files(other))
    return files


def _package_files_of(name: str, dists: list[importlib.metadata.Distribution]) -> list[tuple[str, Path]]:
    top = name.partition(".")[0]
    if top == "gateway" or any(top in (d.read_text("top_level.txt") or "").split() for d in dists):
        return []
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"cannot find the function module {name!r} to bundle it")
    origin = Path(spec.origin)
    package = name if spec.submodule_search_locations else name.rpartition(".")[0]
    if not package:  # a top-level module
        return [(f"app/{origin.name}", origin)]
    directory = origin.parent
    files = list(package_files(directory, package.replace(".", "/")))
    parent, parts = directory.parent, package.split(".")[:-1]
    for depth in range(len(parts), 0, -1):
        init = parent / "__init__.py"
        if init.is_file():
            files.append(("/".join(parts[:depth]) + "/__init__.py", init))
        parent = parent.parent
    return [(f"app/{arcname}", source) for arcname, source in files]


def _project_imports(name: str, top: str) -> set[str]:
    """Modules of the top-level package ``top`` that module ``name`` imports, and theirs, in turn.

    Read from the sources (every ``import`` statement, also inside functions), not by running them: a
    function module that imports a helper from elsewhere in its project (``from myapp.common import
    units``) finds it on the agent too. Imports built at run time (``importlib``) are not seen.
    """
    found: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        origin = _source_of(current)
        if origin is None:
            continue
        package = current if origin.name == "__init__.py" else current.rpartition(".")[0]
        for node in ast.walk(ast.parse(origin.read_bytes(), str(origin))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for imported in names:
                if imported.partition(".")[0] == top and imported not in found and _source_of(imported) is not None:
                    found.add(imported)
                    todo.append(imported)
    return found


def _source_of(name: str) -> Path | None:
    """The ``.py`` file of module ``name`` (a package's ``__init__.py``), or ``None`` when there is none."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _source_files(name: str) -> list[tuple[str, Path]]:
    """Module ``name``'s source file and its parent packages' ``__init__``, under ``app/``."""
    origin = _source_of(name)
    if origin is None:
        return []
    parts = name.split(".")
    depth = len(parts) if origin.name == "__init__.py" else len(parts) - 1
    root = origin.parents[depth]
    files = [(f"app/{origin.relative_to(root).as_posix()}", origin)]
    for directory in origin.parents[:depth]:
        init = directory / "__init__.py"
        if init.is_file() and init != origin:
            files.append((f"app/{init.relative_to(root).as_posix()}", init))
    return files


def package_files(directory: Path, arcdir: str) -> Iterable[tuple[str, Path]]:
    """Every file below ``directory`` as ``arcdir/...``, without bytecode."""
    for source in sorted(directory.rglob("*")):
        relative = source.relative_to(directory)
        # Source trees' bytecode may come from another interpreter; the agent's Python writes its own.
        if source.is_file() and not _SKIP_PARTS & set(relative.parts) and source.suffix != ".pyc":
            yield f"{arcdir}/{relative.as_posix()}", source
