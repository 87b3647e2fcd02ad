"""The parts of the package and the arrows between them (ARCHITECTURE.md), read from the source.

Every ``import`` in ``src/blood_automl`` counts, at module level or inside a function: a
part may import only the parts below it, modules never import each other in a circle, and
only ``trainer`` and ``export`` import TensorFlow or Keras (``export`` only inside its
functions, so the CLI can load it without them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "blood_automl"

#: part -> the parts it may import. Base modules (errors, outputs, signals) sit below all.
BASE = {"errors", "outputs", "signals"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "outputs": {"errors"},
    "signals": set(),
    "spaces": BASE,
    "studies": BASE,
    "data": BASE,
    "trainer": BASE | {"spaces", "data"},
    "analysis": BASE | {"spaces", "studies"},
    "search": BASE | {"spaces", "studies", "data", "trainer", "analysis"},
    "export": BASE | {"spaces", "studies", "data", "trainer", "analysis"},
    "cli": BASE | {"spaces", "studies", "data", "trainer", "analysis", "search", "export"},
    "__main__": {"signals", "cli"},
}
HEAVY = ("tensorflow", "keras")
#: Parts that may import TensorFlow / Keras; the second set only inside functions.
HEAVY_PARTS = {"trainer"}
HEAVY_IN_FUNCTIONS = {"export"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def exists(module: str) -> bool:
    base = SRC.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def part_of(module: str) -> str:
    """``blood_automl.search.run`` -> ``search``; the package's own ``__init__`` -> ``package``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "package"


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(module imported, inside a function?) for every import in the file."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    source = ".".join([*base, child.module] if child.module else base)
                else:
                    source = child.module or ""
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    yield (sub if exists(sub) else source), in_function
            else:
                yield from walk(child, inner)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")), False)


def under_type_checking(path: Path) -> set[str]:
    """Modules imported only for type checking (``if TYPE_CHECKING:``): not run."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    found.add(inner.module)
                    found.update(f"{inner.module}.{a.name}" for a in inner.names)
                elif isinstance(inner, ast.Import):
                    found.update(a.name for a in inner.names)
    return found


def graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (type-checking imports left out)."""
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        this = module_name(path)
        skip = under_type_checking(path)
        edges[this] = {
            name
            for name, _ in imports(path)
            if name.startswith("blood_automl") and name not in skip and name != this
        }
    return edges


FILES = sorted(PACKAGE.rglob("*.py"))


def test_the_parts_are_the_ones_documented() -> None:
    found = {part_of(module_name(p)) for p in FILES} - {"package"}
    assert found == set(ALLOWED), "a new part: add it to ALLOWED and to ARCHITECTURE.md"


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p))
def test_a_part_imports_only_the_parts_below_it(path: Path) -> None:
    this = part_of(module_name(path))
    if this == "package":
        return  # the package's lazy names point at every part, loaded only when used
    skip = under_type_checking(path)
    wrong = sorted(
        name
        for name, _ in imports(path)
        if name.startswith("blood_automl.")
        and name not in skip
        and part_of(name) not in (this, "package")
        and part_of(name) not in ALLOWED[this]
    )
    assert not wrong, f"{module_name(path)} ({this}) may not import {wrong}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p))
def test_only_the_trainer_and_the_export_import_tensorflow(path: Path) -> None:
    this = part_of(module_name(path))
    skip = under_type_checking(path)
    for name, in_function in imports(path):
        if name.split(".")[0] not in HEAVY or name in skip:
            continue
        if this in HEAVY_PARTS:
            continue
        assert this in HEAVY_IN_FUNCTIONS and in_function, (
            f"{module_name(path)} imports {name}"
            + (" at module level" if this in HEAVY_IN_FUNCTIONS else "")
        )


def test_no_module_imports_itself_in_a_circle() -> None:
    edges = graph()
    for package in [m for m in edges if exists(m) and (SRC / m.replace(".", "/")).is_dir()]:
        # a part's own modules reach its __init__ only through the package; not a circle
        for module in edges:
            if module != package:
                edges[module].discard(package)
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for nxt in sorted(edges.get(module, ())):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_checks_see_a_wrong_import(tmp_path: Path) -> None:
    """The reader finds imports inside functions and resolves ``from part import module``."""
    src = tmp_path / "blood_automl" / "studies"
    src.mkdir(parents=True)
    path = src / "bad.py"
    path.write_text(
        "from blood_automl.search import run\n"
        "def f():\n    import tensorflow as tf\n    from . import sibling\n",
        encoding="utf-8",
    )
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        (tmp_path / "blood_automl" / "search").mkdir()
        (tmp_path / "blood_automl" / "search" / "run.py").write_text("", encoding="utf-8")
        found = list(imports(path))
    finally:
        SRC = saved
    assert ("blood_automl.search.run", False) in found
    assert ("tensorflow", True) in found
    assert ("blood_automl.studies.sibling", True) in found or (
        "blood_automl.studies",
        True,
    ) in found
