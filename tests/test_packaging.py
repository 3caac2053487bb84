"""Packaging: the leaf packages stand alone, and every package's __all__ is its public surface."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("auditlog", "boto3", "duckdb", "presidio_analyzer", "spacy", "mcp")


class TestLeafPackages:
    @pytest.mark.parametrize("package", ["processors", "store"])
    def test_imports_without_composition_or_heavy_deps(self, package: str) -> None:
        """Importing a leaf package pulls in neither auditlog nor any heavy optional dependency."""
        code = (
            f"import sys, {package}\n"
            f"import {package}.{'shapes' if package == 'processors' else 'journal'}\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True, timeout=60
        )
        assert "" == proc.stdout.strip()

    def test_leaf_packages_do_not_import_each_other(self) -> None:
        """processors never imports store, store never imports processors."""
        code = (
            "import sys, processors\nassert 'store' not in sys.modules, 'processors imported store'\n"
            "del sys.modules['processors']\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
        code = "import sys, store, store.journal\nassert 'processors' not in sys.modules, 'store imports it'"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


class TestExportedMembers:
    @pytest.mark.parametrize("package", ["auditlog", "processors", "store"])
    def test_all_is_sorted_and_resolvable(self, package: str) -> None:
        """__all__ is sorted (constants, then classes, then functions, as ruff's RUF022) and resolvable."""
        mod = importlib.import_module(package)
        names = list(mod.__all__)
        assert sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)) == names
        missing = [n for n in names if not hasattr(mod, n)]
        assert [] == missing

    @pytest.mark.parametrize("package", ["auditlog", "processors", "store"])
    def test_public_members_are_exported(self, package: str) -> None:
        """Every public, non-module attribute of the package is in __all__."""
        import types

        mod = importlib.import_module(package)
        public = {
            n
            for n, v in vars(mod).items()
            if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
        }
        assert sorted(public) == sorted(set(mod.__all__))
