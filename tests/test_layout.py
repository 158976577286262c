"""The layout holds: data flows one way (``serving`` never imports ``training``,
``models`` imports neither), no package has import cycles, and no module reaches into
another module's private names (a module's ``_name`` is its own).

Imports inside functions count (a lazy import only hides a cycle); imports under
``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "training", "serving", "cli")
# What each package may import (module prefixes). The command line wires everything;
# training's command modules print through the CLI's console, and the demo builds a
# service around the models it trained.
ALLOWED = {
    "models": ("models",),
    "training": ("models", "training", "serving", "cli.console"),
    "serving": ("models", "serving"),
    "cli": ("models", "training", "serving", "cli"),
}
KNOWN_CYCLES: set[frozenset[str]] = set()
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(sub) for sub in ast.walk(node))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only
    ]


def _graph() -> tuple[dict[str, set[str]], set[tuple[str, str, str]]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private: set[tuple[str, str, str]] = set()
    for name, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
                continue
            if node.module is None or node.level or node.module not in modules:
                continue
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in modules:
                    graph[name].add(target)
                    continue
                graph[name].add(node.module)
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    private.add((name, node.module, alias.name))
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def test_data_flows_one_way() -> None:
    graph, _ = _graph()
    wrong = sorted(
        (name, target)
        for name, targets in graph.items()
        for target in targets
        if not any(
            target == prefix or target.startswith(prefix + ".")
            for prefix in ALLOWED[name.split(".")[0]]
        )
    )
    assert not wrong, f"imports against the layout: {wrong}"


def test_no_import_cycles() -> None:
    graph, _ = _graph()
    cycles = [sorted(c) for c in _cycles(graph) if c not in KNOWN_CYCLES]
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_imported_across_modules() -> None:
    _, private = _graph()
    assert private - KNOWN_PRIVATE == set()


def test_the_checks_see_a_cycle_and_a_private_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]
    assert {"models", "training", "serving", "cli"} <= {n.split(".")[0] for n in _graph()[0]}
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "b.py").write_text("_hidden = 1\n", encoding="utf-8")
    (package / "a.py").write_text("def f():\n    from pkg.b import _hidden\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("pkg",))
    assert _graph()[1] == {("pkg.a", "pkg.b", "_hidden")}
