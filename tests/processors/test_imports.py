"""The import graph of ``processors``: a leaf package with no circles, type-checking imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "processors"


def _imports(path: Path) -> set[str]:
    """Every ``processors.*`` module a file imports, wherever the import sits (TYPE_CHECKING, functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("processors."))
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "processors":
                out.update(f"processors.{a.name}" for a in node.names)
            elif node.module.startswith("processors."):
                out.add(node.module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {f"processors.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: _imports(path) & modules.keys() for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` (the modules along it), or ``[]``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


class TestImportGraph:
    def test_no_circles(self) -> None:
        """No module of processors imports itself through others, counting TYPE_CHECKING imports."""
        assert [] == _cycle(_graph())

    def test_fastshape_does_not_import_shapes(self) -> None:
        """The fast path takes the shared types from their own module, never from processors.shapes."""
        assert "processors.shapes" not in _imports(PACKAGE / "_fastshape.py")

    def test_shapes_reexports_shared_types(self) -> None:
        """processors.shapes still exports Shape, ShapeLimits and DEFAULT_LIMITS, the same objects."""
        from processors import _shape_types, shapes

        expected = (_shape_types.Shape, _shape_types.ShapeLimits, _shape_types.DEFAULT_LIMITS)
        assert expected == (shapes.Shape, shapes.ShapeLimits, shapes.DEFAULT_LIMITS)
