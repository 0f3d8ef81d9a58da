"""The architecture stays as the README's Layout says: imports point one way.

    foundation (pipeline: errors, config, registry, weights, sampling)  <- imports nothing of avel above it
    extractors/, models/                                                <- the foundation (and themselves) only
    pipeline/ stages                                                    <- foundation, extractors, models, stages
    cli.py                                                              <- anything; nothing imports it

Read from the source with `ast` (every import, at module level or inside a function), so a
new upward import fails here before it ships."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = {f"avel.pipeline.{m}" for m in ("errors", "config", "registry", "weights", "sampling")}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["avel", *parts])


def sources() -> dict[str, Path]:
    files = [ROOT / "__init__.py", ROOT / "cli.py"]
    for folder in ("pipeline", "extractors", "models"):
        files += sorted((ROOT / folder).glob("*.py"))
    return {module_name(p): p for p in files}


def imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """The avel modules `path` imports (a `from avel.x import y` counts as avel.x, and as
    avel.x.y when that is a module). TYPE_CHECKING blocks are not imports at run time."""
    tree = ast.parse(path.read_text(), filename=str(path))
    known = set(sources())
    found: set[str] = set()

    def visit(node, top: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("avel"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("avel"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if module_level_only and inner and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            visit(child, top and not inner)

    visit(tree, True)
    return {m for m in found if m in known or m == "avel"}


def layer(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    if module == "avel.cli":
        return "cli"
    if module == "avel":
        return "package"
    return module.split(".")[1]  # pipeline | extractors | models


ALLOWED = {
    "foundation": {"foundation"},
    "extractors": {"foundation", "extractors"},
    "models": {"foundation", "models"},
    "pipeline": {"foundation", "extractors", "models", "pipeline"},
    "cli": {"foundation", "extractors", "models", "pipeline"},
    "package": set(),  # avel/__init__.py names its exports as strings, loaded on first use
}


@pytest.mark.parametrize("module", sorted(sources()))
def test_imports_point_down(module):
    path = sources()[module]
    upward = sorted(m for m in imports(path) if layer(m) not in ALLOWED[layer(module)] and m != module)
    assert not upward, f"{path.relative_to(ROOT)} ({layer(module)}) imports {upward}; allowed: {sorted(ALLOWED[layer(module)])}"


def test_nothing_imports_the_cli():
    importers = [m for m, p in sources().items() if "avel.cli" in imports(p) and m != "avel.cli"]
    assert not importers


def test_no_import_cycles_at_module_level():
    graph = {m: imports(p, module_level_only=True) - {m} for m, p in sources().items()}
    done: set[str] = set()

    def walk(m: str, stack: list[str]) -> None:
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        for n in sorted(graph.get(m, ())):
            walk(n, stack + [m])
        done.add(m)

    for m in sorted(graph):
        walk(m, [])


def test_the_layering_test_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a foundation module that imports a stage is reported."""
    bad = tmp_path / "config.py"
    bad.write_text("from avel.pipeline.train import TrainConfig\n\ndef f():\n    import avel.models.dam\n")
    found = imports(bad)
    assert {"avel.pipeline.train", "avel.models.dam"} <= found
    assert any(layer(m) not in ALLOWED["foundation"] for m in found)
