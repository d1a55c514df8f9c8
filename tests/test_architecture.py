"""The shape of the code: no import circles between the engine's modules, counting imports
inside functions (a circle hidden in a function is still a circle). The lead pipeline
(engine/flows) sits above the services it orchestrates; none of them imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def _imports() -> dict[str, set[str]]:
    """Module -> the engine modules it imports, anywhere in it."""
    modules = {".".join(path.relative_to(ENGINE.parent).with_suffix("").parts)
               .removesuffix(".__init__"): path
               for path in ENGINE.rglob("*.py") if "migrations" not in path.parts}
    graph = {}
    for name, path in modules.items():
        found = {node.module for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module in modules}
        graph[name] = found - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_engine_imports_another_that_imports_it_back():
    assert _cycles(_imports()) == []


def test_the_services_below_the_pipeline_never_import_it():
    graph = _imports()
    below = [name for name in graph if name.split(".")[1:2] and name.split(".")[1] in (
        "leads", "journeys", "scoring", "sales", "tracking", "pages", "crm", "programs")
        and not name.endswith(("cli", "importer"))]
    assert below and [name for name in below
                      if any(dep.startswith("engine.flows") for dep in graph[name])] == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
