"""The house stays clean: imports point down the layers, no circles, few deferred imports.

The layer table is the one of ``../shared/DESIGN.md`` made precise for this package: a module may
import a module of its own layer or of a lower one, never of a higher one, and the import graph of
``src/safereuse`` (imports inside functions included: deferring an import does not remove the
dependency) has no circle. Own-module imports inside functions are allowed only for an optional
heavy dependency, with a reason, and at most :data:`MAX_DEFERRED` of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "safereuse"

# Higher number = higher layer. The key is the first component below ``safereuse``.
LAYERS: dict[str, float] = {
    # basics every layer may use
    "errors": 0,
    "device": 0,
    "utils": 0,
    "registry": 0.5,
    "params": 0.5,
    # models and data, their artifacts
    "models": 1,
    "data": 1,
    "artifacts": 1.5,
    # pure functions on tensors, the one fit()
    "metrics": 2,
    "train": 2.5,
    "config": 2.6,
    # what methods share, then defects, training objectives, methods, NNSlicer's studies
    "slicing": 3,
    "defects": 4,
    "objectives": 4.5,
    "methods": 5,
    "applications": 6,
    "importing": 6.5,
    # load -> call -> save
    "api": 7,
    # grids, ledger, reports
    "runner": 8,
    "report": 8,
    # thin command line
    "cli": 9,
    "cli_slice": 9,
}
MAX_DEFERRED = 20


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _targets(mod: str, is_pkg: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    files = {_module_name(p): p for p in (SRC / PKG).rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    deferred: list[tuple[str, str, int]] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inner: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            own = [t for t in _targets(mod, path.name == "__init__.py", node) if t in files and t != mod]
            edges[mod].update(own)
            if own and id(node) in inner:
                deferred.append((mod, own[-1], node.lineno))
    return edges, deferred


def _layer(mod: str) -> float | None:
    parts = mod.split(".")
    return float("inf") if len(parts) == 1 else LAYERS.get(parts[1])


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    edges, _ = _graph()
    missing = sorted({m.split(".")[1] for m in edges if m != PKG and _layer(m) is None})
    assert not missing, f"add these top-level modules to LAYERS: {missing}"


def test_no_import_circles():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_no_upward_imports():
    edges, _ = _graph()
    up = [
        f"{a} -> {b}"
        for a, targets in sorted(edges.items())
        for b in sorted(targets)
        if b != PKG and (la := _layer(a)) is not None and (lb := _layer(b)) is not None and lb > la
    ]
    assert up == []


def test_few_deferred_imports():
    _, deferred = _graph()
    assert len(deferred) <= MAX_DEFERRED, "\n".join(f"{m}:{ln} -> {t}" for m, t, ln in deferred)


def test_the_checker_sees_circles_and_upward_edges():
    """The checks can fail: a hand-made graph with a circle and an upward edge is caught."""
    edges = {"safereuse.models.a": {"safereuse.cli"}, "safereuse.cli": {"safereuse.models.a"}}
    assert _cycles(edges) == [["safereuse.cli", "safereuse.models.a"]]
    assert _layer("safereuse.cli") > _layer("safereuse.models.a")


@pytest.mark.parametrize("mod", ["safereuse.runner.spec", "safereuse.report.data"])
def test_runner_and_report_do_not_name_applications(mod):
    """The runner and the report read the experiment registry; they never import a kind by name."""
    edges, _ = _graph()
    assert not [t for t in edges.get(mod, ()) if t.startswith("safereuse.applications")]
