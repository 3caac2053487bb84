"""The import structure: rooms by concern, arrows down the data flow only, no circles, leaves stay leaves.

Every import counts, lazy ones inside functions and ``TYPE_CHECKING`` blocks included: a circle that only
closes at run time is still a circle. The rooms and their order are docs/architecture.md's.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("processors", "store", "auditlog")

# A room may import rooms of a lower rank, and modules of its own room; nothing else of the project.
RANKS: dict[str, int] = {
    "processors": 0,
    "store": 0,
    "auditlog.face": 1,  # policy, events, actor, correlation, canaries, handle, pipeline, bodies
    "auditlog.integrations": 2,
    "auditlog.lake": 2,
    "auditlog.compose": 3,  # auditlog/__init__ and _configure: configure() wires stdlib logging in
    "auditlog.investigate": 3,
    "auditlog.evidence": 4,
    "auditlog.demo": 5,
    "auditlog.cli": 6,  # runs the demo and the self-test
    "auditlog.main": 7,  # python -m auditlog
}
_SUBPACKAGES = ("integrations", "lake", "investigate", "evidence", "cli", "demo")
_COMPOSE = {"auditlog", "auditlog._configure"}


def room(module: str) -> str:
    """The room a module belongs to."""
    top, _, rest = module.partition(".")
    if top != "auditlog":
        return top
    if module in _COMPOSE:
        return "auditlog.compose"
    if module == "auditlog.__main__":
        return "auditlog.main"
    sub = rest.split(".", 1)[0]
    return f"auditlog.{sub}" if sub in _SUBPACKAGES else "auditlog.face"


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for pkg in packages:
        # a compiled module is known by its stub (processors/_cshape.pyi)
        for path in sorted([*(root / pkg).rglob("*.py"), *(root / pkg).rglob("*.pyi")]):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The project modules ``name`` imports (the longest known prefix of each imported name)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                mod = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        for target in targets:
            parts = target.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in known:
                    if candidate != name:
                        yield candidate
                    break


def graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    mods = modules(root, packages)
    known = set(mods)
    return {name: set(imports(name, path, known)) for name, path in mods.items()}


def _parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts))}


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports that go against the rank order (or across rooms of the same rank)."""
    bad = []
    for src, dsts in sorted(edges.items()):
        for dst in sorted(dsts):
            if dst in _parents(src):
                continue  # importing a module runs its packages' __init__ anyway; they hold no logic here
            a, b = room(src), room(dst)
            if a != b and RANKS[b] >= RANKS[a]:
                bad.append(f"{src} -> {dst} ({a} may not import {b})")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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


class TestArchitecture:
    def test_no_circles(self) -> None:
        """No two modules import each other, directly or around a loop, lazy imports included."""
        assert [] == circles(graph(ROOT, PACKAGES))

    def test_arrows_point_down_the_data_flow(self) -> None:
        """Each room imports only rooms below it: leaves never import auditlog, the CLI nothing above."""
        assert [] == upward(graph(ROOT, PACKAGES))

    def test_every_module_has_a_room(self) -> None:
        """A new subpackage of auditlog is given a rank here (and a paragraph in docs/architecture.md)."""
        subpackages = {p.parent.name for p in (ROOT / "auditlog").glob("*/__init__.py")}
        assert set(_SUBPACKAGES) == subpackages

    def test_every_room_is_documented(self) -> None:
        """docs/architecture.md has a paragraph for each room."""
        text = (ROOT / "docs" / "architecture.md").read_text()
        rooms = ("processors/", "store/", *(f"auditlog/{s}/" for s in _SUBPACKAGES))
        missing = [r for r in rooms if r not in text]
        assert [] == missing


class TestTheCheckItself:
    """The checks above would fail on a planted violation (so they cannot pass vacuously)."""

    @pytest.fixture
    def tree(self, tmp_path: Path) -> Path:
        def write(rel: str, text: str) -> None:
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))

        write("store/__init__.py", "")
        write("store/journal.py", "from store import keys\n")
        write("store/keys.py", "def f():\n    from store.journal import x\n")  # a lazy circle
        write("processors/__init__.py", "")
        write("processors/shapes.py", "import auditlog.policy\n")  # a leaf importing auditlog
        write("auditlog/__init__.py", "")
        write("auditlog/policy.py", "")
        for sub in _SUBPACKAGES:
            write(f"auditlog/{sub}/__init__.py", "")
        write("auditlog/lake/compact.py", "from auditlog.investigate.sandbox import loader\n")  # upward
        write("auditlog/investigate/sandbox.py", "from ..lake import compact\n")
        return tmp_path

    def test_finds_a_lazy_circle(self, tree: Path) -> None:
        """A circle closed by an import inside a function is found."""
        found = circles(graph(tree, PACKAGES))
        assert ["store.journal", "store.keys"] in found
        assert ["auditlog.investigate.sandbox", "auditlog.lake.compact"] in found

    def test_finds_upward_imports(self, tree: Path) -> None:
        """A leaf importing auditlog and the lake importing investigations are both reported."""
        bad = upward(graph(tree, PACKAGES))
        assert any(b.startswith("processors.shapes -> auditlog.policy") for b in bad)
        assert any(b.startswith("auditlog.lake.compact -> auditlog.investigate.sandbox") for b in bad)
