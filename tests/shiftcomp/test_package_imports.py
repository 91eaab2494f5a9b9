"""The three packages import one way: shiftcomp -> passes -> schedules, with no cycle between modules.

The import graph is read from the source (every ``import``, function-local ones included), so a cycle
hidden inside a function fails here as well. Importing ``a.b.c`` from outside ``a`` also runs
``a/__init__`` and ``a/b/__init__``; those edges are part of the graph.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shiftcomp", "passes", "schedules")
#: which packages each package may import (one-way dependencies)
ALLOWED = {"shiftcomp": {"shiftcomp", "passes", "schedules"}, "passes": {"passes", "schedules"},
           "schedules": {"schedules"}}
#: what ``shiftcomp.load`` imports to rebuild derived kernel inputs: numpy and the standard library only, so a
#: runtime-only TVM (``TVM_USE_RUNTIME_LIB=1``) can load any artifact (package ``__init__`` files aside: they
#: import ``tvm`` itself, which works runtime-only)
NUMPY_ONLY = {"passes.derived_inputs", "passes.packing", "passes.sum_then_shift_plan", "passes.table_gemv_inputs",
              "passes.adder_weights", "schedules.specs", "schedules.segments", "schedules.sum_then_shift_layout",
              "schedules.table_gemv_layout", "schedules.adder_layout"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = node.module or ""
                if node.level:
                    src = ".".join(base[:len(base) - node.level + 1] + ([src] if src else []))
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if not t or t == mod:
                    continue
                graph[mod].add(t)
                own = set(_ancestors(mod)) | {mod}
                graph[mod].update(a for a in _ancestors(t) if a not in own)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_packages_depend_one_way() -> None:
    bad = sorted(f"{m} imports {t}" for m, ts in import_graph().items() for t in ts
                 if t.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("graph, want", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_cycle_finder_finds_cycles(graph, want) -> None:
    assert _cycles(graph) == want


def test_no_module_defines_a_top_level_function_or_class_twice() -> None:
    """A second ``def f`` silently replaces the first for every caller (a merge hazard: two branches each
    adding a private helper of the same name to one module)."""
    twice = []
    for mod, path in _modules().items():
        seen: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name in seen:
                    twice.append(f"{mod}.{node.name} (line {node.lineno})")
                seen.add(node.name)
    assert twice == [], f"defined twice in one module: {twice}"


def test_numpy_only_modules_import_numpy_and_each_other() -> None:
    graph, mods = import_graph(), _modules()
    bad = []
    for mod in sorted(NUMPY_ONLY):
        bad += [f"{mod} imports {t}" for t in graph[mod] if t not in PACKAGES and t not in NUMPY_ONLY]
        for node in ast.walk(ast.parse(mods[mod].read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{mod} imports {n}" for n in names if n.split(".")[0] not in
                    {"numpy", *PACKAGES, *sys.stdlib_module_names}]
    assert bad == [], bad
