"""The architecture's record: the wings and the order between them (WINGS, the one table the
README and docs/architecture.md cite), checked on every import of the source.

A module may import its own wing and the wings on lower floors; two wings on one floor
(extractors, models) do not import each other; nothing imports the CLI; no circles.
Imports are read with `ast` (at module level or inside a function; relative ones resolved),
so a new upward import fails here before it ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (wing, floor, what it holds): the package's folders from the bottom up
WINGS = [
    ("core", 0, "errors, typed configs, the registry, weight files, sampling, annotation records, atomic writes"),
    ("extractors", 1, "VGG-19 and VGGish: tensors in, tensors out"),
    ("models", 1, "DAM and the baselines: tensors in, tensors out; each owns its config, loss and inference"),
    ("pipeline.media", 2, "the only PyAV reader, the decoder pool, generated media"),
    ("pipeline.cache", 3, "the HDF5 feature cache: keys, metadata, parts, store, merge, lock"),
    ("pipeline.data", 4, "annotations on disk, the AVE layout, loading, generated feature sets"),
    ("pipeline.extract", 5, "the extractors' wiring, the local engine, the Ray engine"),
    ("pipeline.train", 6, "the loop, the tasks, metrics, checkpoints"),
    ("pipeline.apps", 7, "predictor, localization outputs, queries, timelines, report, demo"),
    ("cli", 8, "parses options into configs and calls one function"),
]
FLOOR = {wing: floor for wing, floor, _ in WINGS}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["avel", *parts])


def sources() -> dict[str, Path]:
    files = [ROOT / "__init__.py", ROOT / "cli.py"]
    for folder in ("core", "pipeline", "extractors", "models"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return {module_name(p): p for p in files}


def resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of a `from ... import` in `module` (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path, *, module_level_only: bool = False, module: str | None = None) -> set[str]:
    """The avel modules `path` imports (a `from avel.x import y` counts as avel.x, and as
    avel.x.y when that is a module). TYPE_CHECKING blocks are not imports at run time."""
    tree = ast.parse(path.read_text(), filename=str(path))
    known = set(sources())
    module = module or module_name(path)
    found: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("avel"))
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, path, node)
            if target.startswith("avel"):
                if node.module:  # `from .. import x` imports x, not the package
                    found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            visit(child)

    visit(tree)
    return {m for m in found if m in known}


def wing(module: str) -> str:
    """The wing of an avel module ('package' for avel/__init__ and avel.pipeline itself)."""
    parts = module.split(".")[1:]
    for depth in (2, 1):
        name = ".".join(parts[:depth])
        if name in FLOOR:
            return name
    return "package"


def allowed(source: str, target: str) -> bool:
    a, b = wing(source), wing(target)
    if a == b or b == "package" and target != "avel":
        return True  # its own wing; a folder's __init__ holds only its docstring
    if a == "package":
        return False  # avel/__init__.py names its exports as strings, loaded on first use
    return b != "cli" and FLOOR[b] < FLOOR[a]


def test_every_module_has_a_wing():
    loose = [m for m in sources() if wing(m) == "package" and m not in ("avel", "avel.pipeline")]
    assert not loose, f"modules outside every wing (add them to a folder of WINGS): {loose}"


@pytest.mark.parametrize("module", sorted(sources()))
def test_imports_point_down(module):
    path = sources()[module]
    upward = sorted(m for m in imports(path) if m != module and not allowed(module, m))
    assert not upward, f"{path.relative_to(ROOT)} ({wing(module)}) imports {upward} ({[wing(m) for m in upward]})"


def test_imports_inside_the_package_are_relative():
    """A checkout is readable by tools before it is installed: no `avel.` import in the package."""
    absolute = []
    for path in sources().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("avel"):
                absolute.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name.startswith("avel") for a in node.names):
                absolute.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not absolute


def test_nothing_imports_the_cli():
    importers = [m for m, p in sources().items() if "avel.cli" in imports(p) and m != "avel.cli"]
    assert not importers


def test_no_import_cycles():
    """No circle at all, imports inside functions included."""
    graph = {m: imports(p) - {m} for m, p in sources().items()}
    done: set[str] = set()

    def walk(m: str, stack: list[str]) -> None:
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m) :] + [m]))
        if m in done:
            return
        for n in sorted(graph.get(m, ())):
            walk(n, stack + [m])
        done.add(m)

    for m in sorted(graph):
        walk(m, [])


def test_the_layering_test_catches_an_upward_import(tmp_path):
    """The checker itself: a core module importing a stage (relative or absolute), a model
    importing an extractor and the cache importing the data wing are all reported."""
    bad = tmp_path / "config.py"
    bad.write_text("from ..pipeline.train.loop import TrainConfig\n\ndef f():\n    import avel.models.dam\n")
    found = imports(bad, module="avel.core.config")
    assert {"avel.pipeline.train.loop", "avel.models.dam"} <= found
    assert not allowed("avel.core.config", "avel.pipeline.train.loop")
    assert not allowed("avel.models.dam", "avel.extractors.vgg19")
    assert not allowed("avel.pipeline.cache.store", "avel.pipeline.data.load")
    assert not allowed("avel.pipeline.apps.demo", "avel.cli")
    assert allowed("avel.pipeline.apps.demo", "avel.pipeline.train.loop")
    assert allowed("avel.pipeline.extract.features", "avel.extractors")


def test_the_docs_cite_the_table():
    """The README and the architecture page point at WINGS instead of repeating it."""
    for page in (ROOT / "README.md", ROOT / "docs" / "architecture.md"):
        assert "tests/test_layers.py" in page.read_text(), page
