"""No import cycles inside the ``gateway`` package, function-level imports included.

An AST walk: every ``import``/``from … import`` anywhere in a module (in functions too) is an edge,
except those under ``if TYPE_CHECKING:`` (never run). ``from gateway.x import y`` is an edge to
``gateway.x.y`` when that is a module, else to ``gateway.x``. A package's ``__init__`` importing its own
modules is an edge like any other; the implicit import of a parent package is not one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def edges(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the package's modules it imports."""
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            graph[name].update(target for target in targets if target in known and target != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_walk_sees_function_level_imports_and_finds_a_cycle() -> None:
    # The checker itself: a cycle through a function-level import is one; a TYPE_CHECKING import is not.
    top = ast.parse("import gateway.b\n")
    nested = ast.parse("def f():\n    from gateway import a\n")
    typing_only = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway import a\n")
    assert [alias.name for node in _imports(top) for alias in node.names] == ["gateway.b"]
    assert [alias.name for node in _imports(nested) for alias in node.names] == ["a"]
    assert [alias.name for node in _imports(typing_only) for alias in node.names] == ["TYPE_CHECKING"]
    assert cycles({"gateway.a": {"gateway.b"}, "gateway.b": {"gateway.a"}, "gateway.c": set()}) == [
        ["gateway.a", "gateway.b"]
    ]


def test_the_gateway_package_has_no_import_cycle() -> None:
    graph = edges(modules())
    assert cycles(graph) == []
